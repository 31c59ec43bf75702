"""The `lab2048 play` and `lab2048 value-smoke` configs (stdlib only: the CLI builds its flags
before importing numba or torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

AGENTS = ("random", "greedy", "corner")  # the compiled baselines (agents.py)
MODEL_AGENT = "model"  # the model's policy, in process (--init) or through a server (--server)
DEVICES = ("cpu", "cuda")


def _check_device(device: str) -> None:
    if device.split(":")[0] not in DEVICES:
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")


@dataclass
class PlayConfig:
    agent: str = field(default="", metadata={
        "help": f"one of {', '.join((*AGENTS, MODEL_AGENT))} ('': model with --init or "
        "--server, else greedy)"})
    games: int = field(default=16, metadata={"help": "number of games"})
    seed: int = field(default=0, metadata={"help": "game i plays seed + i"})
    max_moves: int = field(default=1_000_000, metadata={"help": "moves per game at most"})
    out: str = field(default="", metadata={
        "help": "directory for games.csv, summary.json and scores.png ('' prints only)"})
    init: str = field(default="", metadata={"help": "model init directory (agent model)"})
    server: str = field(default="", metadata={
        "help": "inference server HOST:PORT or unix:PATH (agent model, played remotely)"})
    device: str = field(default="cpu", metadata={"help": "torch device of an in-process model"})
    threads: int = field(default=1, metadata={
        "help": "torch CPU threads of an in-process model (0: torch's default); one thread "
                "avoids stalls on shared cores"})

    def __post_init__(self) -> None:
        if not self.agent:
            self.agent = MODEL_AGENT if self.init or self.server else "greedy"
        if self.agent not in (*AGENTS, MODEL_AGENT):
            raise ValueError(f"agent must be one of {', '.join((*AGENTS, MODEL_AGENT))}, "
                             f"got {self.agent!r}")
        if self.agent == MODEL_AGENT and not (self.init or self.server):
            raise ValueError("agent model needs --init DIR or --server ADDR")
        if self.agent != MODEL_AGENT and (self.init or self.server):
            raise ValueError(f"--init and --server play the model, not agent {self.agent}")
        if self.games < 1:
            raise ValueError(f"games must be at least 1, got {self.games}")
        if not (self.seed >= 0 and self.seed + self.games <= 1 << 64):
            raise ValueError(f"seeds must lie in 0..2^64-1, got seed {self.seed}")
        if self.max_moves < 1:
            raise ValueError(f"max_moves must be at least 1, got {self.max_moves}")
        _check_device(self.device)


@dataclass
class ValueSmokeConfig:
    init: str = field(default="", metadata={"help": "model init directory (with a value head)"})
    server: str = field(default="", metadata={
        "help": "play through this inference server instead of in process"})
    games: int = field(default=8, metadata={"help": "rollouts"})
    seed: int = field(default=0, metadata={"help": "rollout i plays seed + i"})
    gamma: float = field(default=0.997, metadata={"help": "discount of the realised return"})
    moves: int = field(default=400, metadata={"help": "moves per rollout at most"})
    device: str = field(default="cpu", metadata={"help": "torch device of an in-process model"})
    threads: int = field(default=1, metadata={
        "help": "torch CPU threads of an in-process model (0: torch's default); one thread "
                "avoids stalls on shared cores"})
    out: str = field(default="runs/value-smoke", metadata={
        "help": "directory for value-smoke.json, steps.csv and value-smoke.png"})

    def __post_init__(self) -> None:
        if not (self.init or self.server):
            raise ValueError("value-smoke needs --init DIR (or --server ADDR)")
        if self.games < 1:
            raise ValueError(f"games must be at least 1, got {self.games}")
        if not (self.seed >= 0 and self.seed + self.games <= 1 << 64):
            raise ValueError(f"seeds must lie in 0..2^64-1, got seed {self.seed}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.moves < 1:
            raise ValueError(f"moves must be at least 1, got {self.moves}")
        _check_device(self.device)
