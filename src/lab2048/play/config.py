"""The `lab2048 play` config (stdlib only: the CLI builds its flags before importing numba)."""

from __future__ import annotations

from dataclasses import dataclass, field

AGENTS = ("random", "greedy", "corner")


@dataclass
class PlayConfig:
    agent: str = field(default="greedy", metadata={"help": f"one of {', '.join(AGENTS)}"})
    games: int = field(default=16, metadata={"help": "number of games"})
    seed: int = field(default=0, metadata={"help": "game i plays seed + i"})
    max_moves: int = field(default=1_000_000, metadata={"help": "moves per game at most"})
    out: str = field(default="", metadata={
        "help": "directory for games.csv, summary.json and scores.png ('' prints only)"})

    def __post_init__(self) -> None:
        if self.agent not in AGENTS:
            raise ValueError(f"agent must be one of {', '.join(AGENTS)}, got {self.agent!r}")
        if self.games < 1:
            raise ValueError(f"games must be at least 1, got {self.games}")
        if not (self.seed >= 0 and self.seed + self.games <= 1 << 64):
            raise ValueError(f"seeds must lie in 0..2^64-1, got seed {self.seed}")
        if self.max_moves < 1:
            raise ValueError(f"max_moves must be at least 1, got {self.max_moves}")
