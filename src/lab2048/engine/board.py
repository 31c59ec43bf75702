"""The readable face of the engine: an immutable `Board` value and a seeded `Game`.

Both call the same numba kernels as the batch API (one call per move), so they are for users,
tests and tools, not for hot loops. A Board is the pair (bits, mask): the u64 of DESIGN.md and
its tile_65536_mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lab2048.engine import kernels as K
from lab2048.engine.conventions import (
    MAX_EXPONENT,
    NO_MOVE_LIMIT,
    EndReason,
    Move,
    end_reason,
    moves_in_mask,
    tile_value,
)

U64_MAX = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class MoveResult:
    board: Board
    reward: int  # sum of the tiles created by merges; -1 where two 2^16 tiles would merge
    changed: bool


@dataclass(frozen=True, slots=True)
class Board:
    """A 2048 position. `bits` is the DESIGN.md u64, `mask` its tile_65536_mask."""

    bits: int = 0
    mask: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.bits <= U64_MAX:
            raise ValueError(f"board bits must fit in 64 bits, got {self.bits}")
        if not 0 <= self.mask <= 0xFFFF:
            raise ValueError(f"tile_65536_mask must fit in 16 bits, got {self.mask}")
        if self.mask and not K.mask_is_valid(np.uint64(self.bits), self.mask):
            raise ValueError(
                f"tile_65536_mask {self.mask:#06x} marks a cell whose nibble is not 15")

    # --- construction and views ---------------------------------------------------------------

    @classmethod
    def from_exponents(cls, exponents: Sequence[int]) -> Board:
        """From 16 exponents (0 empty, k for 2^k, up to 16), cell 0 (top-left) first."""
        cells = [int(e) for e in exponents]
        if len(cells) != 16 or not all(0 <= e <= MAX_EXPONENT for e in cells):
            raise ValueError(f"need 16 exponents in 0..{MAX_EXPONENT}, got {exponents!r}")
        bits, mask = K.encode(np.array(cells, np.int64))
        return cls(int(bits), int(mask))

    @classmethod
    def from_tiles(cls, rows: Iterable[Iterable[int]]) -> Board:
        """From a 4x4 grid of tile values (0 for empty), top row first."""
        values = [int(v) for row in rows for v in row]
        exps = []
        for v in values:
            if v != 0 and (v < 2 or v & (v - 1)):
                raise ValueError(f"not a tile value: {v}")
            exps.append(v.bit_length() - 1 if v else 0)
        return cls.from_exponents(exps)

    @classmethod
    def new(cls, seed: int) -> Board:
        """The opening board of the game with this seed (its spawns 0 and 1)."""
        return cls(int(K.new_board(np.uint64(seed))))

    @property
    def exponents(self) -> tuple[int, ...]:
        return tuple(int(e) for e in K.decode(np.uint64(self.bits), self.mask))

    @property
    def tiles(self) -> list[list[int]]:
        """4x4 grid of tile values, top row first."""
        e = self.exponents
        return [[tile_value(e[4 * r + c]) for c in range(4)] for r in range(4)]

    @property
    def highest_tile(self) -> int:
        return tile_value(int(K.highest_exponent(np.uint64(self.bits), self.mask)))

    @property
    def empty_cells(self) -> list[int]:
        return [i for i, e in enumerate(self.exponents) if e == 0]

    @property
    def tile_sum(self) -> int:
        return sum(map(tile_value, self.exponents))

    # --- rules ----------------------------------------------------------------------------------

    def move(self, move: Move | int) -> MoveResult:
        b = np.uint64(self.bits)
        bits, mask, reward = K.move(b, self.mask, int(move), *K.tables())
        changed = bool(K.is_legal(b, self.mask, np.uint64(bits), mask, reward))
        return MoveResult(Board(int(bits), int(mask)), int(reward), changed)

    @property
    def legal_mask(self) -> int:
        return int(K.legal_mask(np.uint64(self.bits), self.mask, *K.tables()))

    def legal_moves(self) -> list[Move]:
        return moves_in_mask(self.legal_mask)

    @property
    def is_game_over(self) -> bool:
        return self.legal_mask == 0

    def spawn(self, seed: int, k: int) -> Board:
        """This board after the k-th spawn of the game with this seed."""
        return Board(int(K.spawn(np.uint64(self.bits), np.uint64(seed), k)), self.mask)

    def with_tile(self, cell: int, exponent: int) -> Board:
        """This board with one cell set (for tests and tools)."""
        cells = list(self.exponents)
        cells[cell] = exponent
        return Board.from_exponents(cells)

    def __str__(self) -> str:
        width = max(5, *(len(str(v)) for row in self.tiles for v in row))
        rule = "+" + "+".join("-" * (width + 2) for _ in range(4)) + "+"
        lines = [rule]
        for row in self.tiles:
            lines.append("| " + " | ".join(f"{v or '.':>{width}}" for v in row) + " |")
            lines.append(rule)
        return "\n".join(lines)

    def __repr__(self) -> str:
        extra = f", mask={self.mask:#06x}" if self.mask else ""
        return f"Board({self.bits:#018x}{extra})"


@dataclass
class Game:
    """A seeded game: the score is the exact sum of merge rewards, never the implied score.

    It ends by the engine's one rule (`conventions.end_reason`): no legal move, a move that
    would make 2^17, or `max_moves` moves played (0: no limit)."""

    seed: int
    max_moves: int = NO_MOVE_LIMIT
    board: Board = field(init=False)
    score: int = 0
    moves: list[Move] = field(default_factory=list)
    spawns: int = 2
    end_reason: EndReason = EndReason.ONGOING

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= U64_MAX:
            raise ValueError(f"seed must fit in 64 bits, got {self.seed}")
        if self.max_moves < 0:
            raise ValueError(f"max_moves must be 0 (no limit) or more, got {self.max_moves}")
        self.board = Board.new(self.seed)

    @property
    def over(self) -> bool:
        return self.end_reason != EndReason.ONGOING

    def play(self, move: Move | int) -> int:
        """Play a legal move (and its spawn); return its reward. Illegal moves raise ValueError."""
        if self.over:
            raise ValueError(f"the game is over ({self.end_reason.label})")
        move = Move(move)
        if not self.board.legal_mask & move.bit:
            raise ValueError(f"{move.name} is not legal on\n{self.board}")
        bits, mask, reward, self.spawns, _, end = K.step(
            np.uint64(self.board.bits), self.board.mask, int(move), np.uint64(self.seed),
            self.spawns, *K.tables(),
        )
        if end == EndReason.TILE_LIMIT:  # the move is not applied
            self.end_reason = EndReason.TILE_LIMIT
            return 0
        self.board = Board(int(bits), int(mask))
        self.score += int(reward)
        self.moves.append(move)
        self.end_reason = EndReason(end_reason(int(end), len(self.moves), self.max_moves))
        return int(reward)
