"""The `lab2048 generate` config (stdlib only: the CLI builds its flags before importing numba)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab2048.scale import RAY_HELP
from lab2048.teacher.config import TeacherConfig


@dataclass
class GenerateConfig:
    out: str = field(default="", metadata={"help": "dataset directory to write (required)"})
    games: int = field(default=16, metadata={"help": "number of games"})
    seed: int = field(default=0, metadata={"help": "game i plays seed + i (run id i + 1)"})
    workers: int = field(default=0, metadata={"help": "worker processes (0: all cores)"})
    ray: str = field(default="", metadata={"help": RAY_HELP})
    shard_rows: int = field(default=1 << 20, metadata={"help": "rows per steps shard"})
    max_moves: int = field(default=0, metadata={"help": "moves per game at most (0: no limit)"})
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("--out DIR is required")
        if self.games < 1:
            raise ValueError(f"games must be at least 1, got {self.games}")
        if not (self.seed >= 0 and self.seed + self.games <= 1 << 63):
            raise ValueError(f"seeds must lie in 0..2^63-1, got seed {self.seed}")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 (all cores) or more, got {self.workers}")
        if self.shard_rows < 1:
            raise ValueError(f"shard_rows must be at least 1, got {self.shard_rows}")
        if self.max_moves < 0:
            raise ValueError(f"max_moves must be 0 (no limit) or more, got {self.max_moves}")
