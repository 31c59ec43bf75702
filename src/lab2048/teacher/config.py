"""The teacher's settings (stdlib only: the CLI builds its flags before importing numba).

The search depth of a board is counted in plies of (move, spawn): depth 1 scores each move by
the expected static value of the board after the move and its random spawn. With `adaptive`,
a board with many distinct tiles (a hard board, late in a game) is searched deeper:

    plies = min(max_depth, max(depth, distinct_tiles − depth_offset))

where distinct_tiles counts the different non-empty exponents on the board.

`evaluation="corner"` switches to the corner evaluation and its pruned search (`corner.py`):
there a depth D means D + 1 layers of moves with D layers of spawns between them (the same
depth rule picks D). `table_rank` > 0 adds the tuple11 formation table of that rank and
`table10_rank` > 0 the tuple10 one (`tables.py`, built by `lab2048 teacher build-tables`),
read from `tables_dir` (empty: the user cache directory). `PRESETS` names the measured
settings; `TeacherConfig.preset(name)` builds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_PLIES = 15  # the transposition table stores a depth in 4 bits
EVALUATIONS = ("lines", "corner")
TABLE_RANKS = {"tuple11": (3, 7), "tuple10": (5, 10)}  # each formation's smallest and largest
# table rank: tuple11 rank 7 holds 1.45 G entries, tuple10 rank 10 2.9 G (tables.py, teacher.md)
TABLE_FIELDS = {"table_rank": "tuple11", "table10_rank": "tuple10"}  # field: its formation
PRESETS = {
    "default": {},
    "strong": {"evaluation": "corner", "depth": 3, "adaptive": True, "max_depth": 4,
               "depth_offset": 6, "prob_cutoff": 1 / 128, "tt_bits": 22, "table_rank": 7,
               "table10_rank": 9},
}


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
    evaluation: str = field(default="lines", metadata={
        "help": "static evaluation: lines (symmetric) or corner (the strong preset's)"})
    table_rank: int = field(default=0, metadata={
        "help": "formation table rank (0: none; see lab2048 teacher build-tables)"})
    table10_rank: int = field(default=0, metadata={
        "help": "second formation (tuple10, six locked tiles) table rank (0: none)"})
    tables_dir: str = field(default="", metadata={
        "help": "directory of the formation tables (empty: the user cache directory)"})

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
        if self.evaluation not in EVALUATIONS:
            raise ValueError(f"evaluation must be one of {', '.join(EVALUATIONS)}, "
                             f"got {self.evaluation!r}")
        for name, formation in TABLE_FIELDS.items():
            low, top = TABLE_RANKS[formation]
            rank = getattr(self, name)
            if rank and not low <= rank <= top:
                raise ValueError(f"{name} must be 0 or in {low}..{top}, got {rank}")

    @classmethod
    def preset(cls, name: str, **changes) -> TeacherConfig:
        """The named setting of PRESETS, with any field changed by keyword."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], **changes})

    def plies(self, distinct_tiles: int) -> int:
        """The search depth of a board with this many distinct tiles (the rule above)."""
        if not self.adaptive:
            return self.depth
        return min(self.max_depth, max(self.depth, distinct_tiles - self.depth_offset))


@dataclass
class BuildTablesConfig:
    """Compute the formation tables the strong teacher looks moves up in (exhaustive
    expectimax; docs/teacher.md gives time, memory and disk). Shows progress; a killed build
    resumes when run again; an existing complete file is checked and kept."""

    out: str = field(default="", metadata={
        "help": "table directory (default: $XDG_CACHE_HOME/lab2048/teacher-tables)",
        "metavar": "DIR"})
    rank: int = field(default=PRESETS["strong"]["table_rank"], metadata={
        "help": "tuple11 formation (five locked tiles): largest rank R (0: none); the file "
                f"holds ranks {TABLE_RANKS['tuple11'][0]}..R; rank r builds a 2^r tile beside "
                "the locked corner",
        "choices": [0, *range(TABLE_RANKS["tuple11"][0], TABLE_RANKS["tuple11"][1] + 1)]})
    rank10: int = field(default=PRESETS["strong"]["table10_rank"], metadata={
        "help": "tuple10 formation (six locked tiles): largest rank R (0: none); the file "
                f"holds ranks {TABLE_RANKS['tuple10'][0]}..R; rank r builds a 2^(r-1) chain "
                "under the locked corner",
        "choices": [0, *range(TABLE_RANKS["tuple10"][0], TABLE_RANKS["tuple10"][1] + 1)]})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})
