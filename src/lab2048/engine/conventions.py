"""The conventions every part of lab2048 shares (DESIGN.md), in one place and free of numba.

- Moves in UDLR order: Up=0, Down=1, Left=2, Right=3; legal-move bitmask Up=1, Down=2, Left=4,
  Right=8 (bit i is move i).
- Board: u64 of 16 four-bit exponents, row-major, cell 0 (top-left) in bits 63..60. A tile of
  2^16 keeps nibble 15 and sets bit i of the u16 `tile_65536_mask` for its cell i. Exponent 0 is
  an empty cell, k is the tile 2^k; the largest representable exponent is 16.
- Spawn: after a move that changes the board, a uniformly chosen empty cell gets a 2 (p = 0.9)
  or a 4 (p = 0.1), drawn from the game's seed (see `kernels.spawn`).

This module is imported by the command line before anything heavy, so it imports only the
standard library.
"""

from __future__ import annotations

from enum import IntEnum


class Move(IntEnum):
    UP = 0
    DOWN = 1
    LEFT = 2
    RIGHT = 3

    @property
    def bit(self) -> int:
        """This move's bit in a legal-move mask."""
        return 1 << int(self)

    @classmethod
    def parse(cls, name: str) -> Move:
        """'up', 'Down', 'L', ... to a Move."""
        key = name.strip().upper()
        for move in cls:
            if key in (move.name, move.name[0]):
                return move
        raise ValueError(f"not a move: {name!r} (expected up, down, left or right)")


class EndReason(IntEnum):
    """Why a game stopped. ONGOING while it has not."""

    ONGOING = 0
    NO_MOVES = 1  # no move changes the board: the normal end of 2048
    TILE_LIMIT = 2  # the chosen move would merge two 2^16 tiles into 2^17, which no format holds
    MAX_MOVES = 3  # the caller's move budget ran out

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


MOVES = tuple(Move)
ALL_MOVES_MASK = 0b1111
MAX_EXPONENT = 16  # 2^16 = 65536: nibble 15 plus a tile_65536_mask bit
SPAWN_FOUR_PROBABILITY = 0.1


def moves_in_mask(mask: int) -> list[Move]:
    """The moves whose bits are set in a legal-move mask, in UDLR order."""
    return [m for m in MOVES if mask & m.bit]


def tile_value(exponent: int) -> int:
    """The tile an exponent stands for: 0 for an empty cell, else 2^exponent."""
    return 0 if exponent == 0 else 1 << exponent
