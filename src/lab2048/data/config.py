"""The configs of the data commands (generate, pack, value-sidecar, check, replay); stdlib
only: the CLI builds its flags before importing numba."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab2048.config import check_device, check_fields
from lab2048.play.config import parse_agent
from lab2048.scale import RAY_HELP
from lab2048.teacher.config import TeacherConfig
from lab2048.value_target import DEFAULT_EPSILON, DEFAULT_GAMMA, gamma_field

LABELS = ("teacher",)  # who labels an agent's states (the generate teacher's settings)


@dataclass
class GenerateConfig:
    out: str = field(default="", metadata={"help": "dataset directory to write (required)"})
    games: int = field(default=16, metadata={"help": "number of games", "min": 1})
    seed: int = field(default=0, metadata={"help": "game i plays seed + i (run id i + 1)"})
    workers: int = field(default=0, metadata={"help": "worker processes (0: all cores)",
                                              "min": 0})
    shard_rows: int = field(default=1 << 20, metadata={"help": "rows per steps shard", "min": 1})
    max_moves: int = field(default=0, metadata={"help": "moves per game at most (0: no limit)",
                                                "min": 0})
    ray: str = field(default="", metadata={"help": RAY_HELP, "metavar": "ADDRESS"})
    agent: str = field(default="", metadata={
        "help": "who plays: '' the teacher; else an agent spec (policy, value:depth=1, "
                "hybrid:top=2, greedy, ...) whose every visited state the teacher labels",
        "metavar": "SPEC"})
    init: str = field(default="", metadata={
        "help": "the model a policy/value/hybrid --agent plays ('default': the shipped one)",
        "metavar": "DIR"})
    label: str = field(default="teacher", metadata={
        "help": "who gives an --agent's states their per-move values and move",
        "choices": LABELS})
    include: str = field(default="", metadata={
        "help": "a dataset whose runs are copied first (an --agent's runs follow, source "
                "'agent:SPEC': training chooses the mix by SQL over runs)", "metavar": "DIR"})
    include_where: str = field(default="", metadata={
        "help": "SQL over --include's runs table choosing the runs copied ('': all)",
        "metavar": "SQL"})
    device: str = field(default="cpu", metadata={"help": "torch device of an --agent's model"})
    threads: int = field(default=1, metadata={
        "help": "torch CPU threads of an --agent's model (0: torch's default)", "min": 0})
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("--out DIR is required")
        check_fields(self)
        if self.agent:
            spec = parse_agent(self.agent)
            if spec.kind == "teacher":
                raise ValueError("the teacher plays when --agent is not given")
            if spec.uses_model and not self.init:
                raise ValueError(f"agent {spec.name} needs --init DIR")
            self.agent = spec.name
        elif self.init or self.include:
            raise ValueError("--init and --include go with --agent SPEC")
        if self.include_where and not self.include:
            raise ValueError("--include-where goes with --include DIR")
        check_device(self.device)
        if not (self.seed >= 0 and self.seed + self.games <= 1 << 63):
            raise ValueError(f"seeds must lie in 0..2^63-1, got seed {self.seed}")


PACK_FORMATS = ("macroxue-jsonl", "macroxue-text")


@dataclass
class PackConfig:
    """Import Macroxue logs (NAME.jsonl.gz + NAME.meta.json) or macroxue/2048-ai `-v` text
    output (.txt, .txt.gz) into a packed dataset. Malformed or inconsistent games are reported
    and skipped; the exit status is 1 if any was."""

    input: str = field(default="", metadata={
        "help": "directory of Macroxue logs (required)", "metavar": "LOGDIR"})
    out: str = field(default="", metadata={"help": "dataset directory to write (required)",
                                           "metavar": "DIR"})
    format: str = field(default=PACK_FORMATS[0], metadata={
        "help": "input format", "choices": PACK_FORMATS})
    workers: int = field(default=0, metadata={"help": "worker processes (0: all cores)",
                                              "min": 0})
    shard_rows: int = field(default=1 << 20, metadata={"help": "rows per steps shard", "min": 1})
    ray: str = field(default="", metadata={"help": RAY_HELP, "metavar": "ADDRESS"})

    def __post_init__(self) -> None:
        if not (self.input and self.out):
            raise ValueError("--input LOGDIR and --out DIR are required")
        check_fields(self)


@dataclass
class ValueSidecarConfig:
    """Compute per-step rewards and value targets (raw, and h-transformed of the scaled
    rewards) aligned 1:1 with a packed dataset's shards: values-NNNNN.npy and values.json.
    Monte Carlo returns, or n-step / TD(lambda) returns bootstrapped on a model's values
    (--bootstrap)."""

    dataset: str = field(default="", metadata={
        "help": "packed dataset ('': the small one embedded in the package)", "metavar": "DIR"})
    gamma: float | None = gamma_field(
        f"the --bootstrap model's value-target.json, else {DEFAULT_GAMMA}")
    reward_scale: float = field(default=1.0, metadata={
        "help": "reward_scaled = reward x this"})
    epsilon: float = field(default=DEFAULT_EPSILON, metadata={
        "help": "eps of the h transform of return_scaled"})
    workers: int = field(default=0, metadata={"help": "threads (0: all cores)", "min": 0})
    output: str = field(default="", metadata={
        "help": "where values-NNNNN.npy and values.json go ('': the dataset)", "metavar": "DIR"})
    bootstrap: str = field(default="", metadata={
        "help": "model init whose value head bootstraps the target (with --n-step or --lambda)",
        "metavar": "INIT"})
    n_step: int | None = field(default=None, metadata={
        "help": "n-step returns: N rewards, then gamma^N V(board N steps on)", "metavar": "N",
        "min": 1})
    lam: float | None = field(default=None, metadata={
        "help": "TD(lambda) returns bootstrapped on the model's values", "flag": "--lambda",
        "metavar": "L", "min": 0, "max": 1})

    def __post_init__(self) -> None:
        check_fields(self)
        if not (self.dataset or self.output):
            raise ValueError("the embedded dataset is read-only: pass --output DIR for its "
                             "sidecar")
        if (self.bootstrap or self.n_step is not None or self.lam is not None) and (
                not self.bootstrap or (self.n_step is None) == (self.lam is None)):
            raise ValueError("a bootstrapped target needs --bootstrap INIT and one of --n-step N "
                             "or --lambda L")


@dataclass
class CheckConfig:
    """Check a packed dataset (dtype, run contiguity, step order, runs table, legality of
    every move, boards following from move + one spawn, ev_legal against the board) and print
    a summary. Problems are listed per run; exits 1 if there are any. Without DATASET, checks
    the small dataset embedded in the package."""

    dataset: str = field(default="", metadata={
        "help": "packed dataset (default: the one embedded in the package)",
        "positional": True, "metavar": "DATASET"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})


@dataclass
class ReplayConfig:
    """Replay macroxue/2048-ai `-v` game logs (.txt or .txt.gz) through the engine: every
    move, reward and the final position must agree. Exits 1 if any game disagrees."""

    files: list[str] = field(default_factory=list, metadata={
        "help": "macroxue/2048-ai -v logs (.txt or .txt.gz)", "positional": True,
        "metavar": "FILE"})

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError("give at least one FILE")
