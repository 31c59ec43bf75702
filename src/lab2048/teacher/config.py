"""The teacher's settings (stdlib only: the CLI builds its flags before importing numba).

The search depth of a board is counted in plies of (move, spawn): depth 1 scores each move by
the expected static value of the board after the move and its random spawn. With `adaptive`,
a board with many distinct tiles (a hard board, late in a game) is searched deeper:

    plies = min(max_depth, max(depth, distinct_tiles − depth_offset))

where distinct_tiles counts the different non-empty exponents on the board.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PLIES = 15  # the transposition table stores a depth in 4 bits


@dataclass
class TeacherConfig:
    depth: int = field(default=2, metadata={
        "help": "base search depth in (move, spawn) plies; offered: 1, 2, 3"})
    adaptive: bool = field(default=True, metadata={
        "help": "search boards with many distinct tiles deeper, up to max_depth"})
    max_depth: int = field(default=3, metadata={
        "help": "cap on the adaptive depth (plies); at least depth"})
    depth_offset: int = field(default=6, metadata={
        "help": "adaptive depth = distinct tiles - depth_offset, within [depth, max_depth]"})
    prob_cutoff: float = field(default=1e-4, metadata={
        "help": "chance branches less likely than this are scored statically"})
    tt_bits: int = field(default=20, metadata={
        "help": "transposition table of 2^tt_bits entries of 16 bytes"})

    def __post_init__(self) -> None:
        if not 1 <= self.depth <= MAX_PLIES:
            raise ValueError(f"depth must be in 1..{MAX_PLIES}, got {self.depth}")
        if not self.depth <= self.max_depth <= MAX_PLIES:
            raise ValueError(f"max_depth must be in depth..{MAX_PLIES} "
                             f"({self.depth}..{MAX_PLIES}), got {self.max_depth}")
        if not 0.0 <= self.prob_cutoff < 1.0:
            raise ValueError(f"prob_cutoff must be in [0, 1), got {self.prob_cutoff}")
        if not 10 <= self.tt_bits <= 28:
            raise ValueError(f"tt_bits must be in 10..28, got {self.tt_bits}")

    def plies(self, distinct_tiles: int) -> int:
        """The search depth of a board with this many distinct tiles (the rule above)."""
        if not self.adaptive:
            return self.depth
        return min(self.max_depth, max(self.depth, distinct_tiles - self.depth_offset))
