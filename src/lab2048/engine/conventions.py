"""The conventions every part of lab2048 shares (docs/design.md), in one place and free of numba.

- Moves in UDLR order: Up=0, Down=1, Left=2, Right=3, named `MOVE_NAMES`; legal-move bitmask
  Up=1, Down=2, Left=4, Right=8 (`MOVE_BITS`: bit i is move i). `engine.batch.legal_bools` and
  `legal_bits` turn masks into boolean arrays and back.
- Board: u64 of 16 four-bit exponents, row-major, cell 0 (top-left) in bits 63..60. A tile of
  2^16 keeps nibble 15 and sets bit i of the u16 `tile_65536_mask` for its cell i. Exponent 0 is
  an empty cell, k is the tile 2^k; the largest representable exponent is `MAX_EXPONENT` (16).
- Spawn: after a move that changes the board, a uniformly chosen empty cell gets a 2 or, with
  probability `SPAWN_FOUR_PROBABILITY`, a 4, drawn from the game's seed (see `kernels.spawn`).
- Game end: `end_reason` is the one rule every game loop applies after each move. A move
  budget `max_moves` of 0 means no limit (`NO_MOVE_LIMIT`).
- binned_ev policy classes of a move, per move head: `EV_ILLEGAL` (0), `EV_FAILURE` (1), the
  quantile bins `EV_FIRST_BIN` + i, and WINNER last (`ev_winner(bins)`); `ev_class_names`.

This module is imported by the command line before anything heavy, so it imports only the
standard library; `kernels` compiles `end_reason` for numba loops.
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

    @property
    def label(self) -> str:
        """'up', 'down', 'left' or 'right'."""
        return self.name.lower()

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
MOVE_NAMES = tuple(m.label for m in Move)  # ("up", "down", "left", "right")
MOVE_BITS = tuple(m.bit for m in Move)  # (1, 2, 4, 8): the legal-bit table
# EndReason as plain ints, for numba loops and integer arrays
END_ONGOING, END_NO_MOVES, END_TILE_LIMIT, END_MAX_MOVES = (int(r) for r in EndReason)
NO_MOVE_LIMIT = 0  # max_moves = 0: play until the game ends
MAX_EXPONENT = 16  # 2^16 = 65536: nibble 15 plus a tile_65536_mask bit
SPAWN_FOUR_PROBABILITY = 0.1

EV_ILLEGAL = 0  # binned_ev class of an illegal move
EV_FAILURE = 1  # a legal move valued at most the objective's failure_value
EV_FIRST_BIN = 2  # class of quantile bin 0 of the move's disadvantage; WINNER follows the bins


def moves_in_mask(mask: int) -> list[Move]:
    """The moves whose bits are set in a legal-move mask, in UDLR order."""
    return [m for m in MOVES if mask & m.bit]


def tile_value(exponent: int) -> int:
    """The tile an exponent stands for: 0 for an empty cell, else 2^exponent."""
    return 0 if exponent == 0 else 1 << exponent


def end_reason(step_end: int, moves: int, max_moves: int) -> int:
    """A game's EndReason (as an int) after a move, `moves` moves into the game:

        step_end                 if the move ended the game (NO_MOVES, TILE_LIMIT: kernels.step)
        MAX_MOVES                else if max_moves > 0 and moves >= max_moves
        ONGOING                  otherwise

    A max_moves of 0 (NO_MOVE_LIMIT) never ends a game. Plain integer code: numba compiles it
    unchanged (`kernels.end_reason`)."""
    if step_end != END_ONGOING:
        return step_end
    if max_moves > NO_MOVE_LIMIT and moves >= max_moves:
        return END_MAX_MOVES
    return END_ONGOING


def ev_winner(bins: int) -> int:
    """The binned_ev class WINNER (a legal move as good as the best) with this many bins."""
    return EV_FIRST_BIN + bins


def ev_class_names(bins: int) -> list[str]:
    """Every binned_ev class in order: ILLEGAL, FAILURE, BIN_0 .. BIN_{bins-1}, WINNER."""
    return ["ILLEGAL", "FAILURE", *(f"BIN_{i}" for i in range(bins)), "WINNER"]
