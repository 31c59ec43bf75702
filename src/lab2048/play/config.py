"""The configs of `lab2048 play`, `lab2048 evaluate` and `lab2048 value-smoke`, and the agent
specs (stdlib only: the CLI builds its flags before importing numba or torch).

An agent spec is `KIND[:OPTION=VALUE[:OPTION=VALUE]]`, a list of them comma-separated:

    policy             the model's policy: the masked argmax
    value:depth=D      the move with the largest Q of the value search, D plies (play/search.py)
    hybrid:top=K       the value search's choice among the policy's K most likely moves
    hybrid:p=X         ... among the moves the policy gives at least X (its argmax always)
                       (hybrid also takes depth=D)
    teacher:depth=D    the expectimax teacher (lab2048.teacher; also max_depth=M)
    random, greedy, corner   the compiled baselines (play/agents.py)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lab2048.config import DEVICE_HELP, check_device, check_fields
from lab2048.engine.conventions import NO_MOVE_LIMIT
from lab2048.scale import RAY_GPUS_HELP, RAY_HELP
from lab2048.teacher.config import TeacherConfig
from lab2048.value_target import DEFAULT_GAMMA, gamma_field

BASELINES = ("random", "greedy", "corner")  # the compiled baselines (agents.py)
MODEL_AGENT = "model"  # lab2048 play's name for the policy (--init or --server)
OPTIONS = {"policy": {}, "value": {"depth": int}, "hybrid": {"top": int, "p": float, "depth": int},
           "teacher": {"depth": int, "max_depth": int}, **{b: {} for b in BASELINES}}
MAX_SEARCH_DEPTH = 3  # value search plies: each one multiplies the leaves by about 30


@dataclass(frozen=True)
class AgentSpec:
    kind: str
    depth: int = 0  # value, hybrid: search plies; teacher: base depth
    top: int = 0  # hybrid: the policy's top-k moves
    p: float = 0.0  # hybrid: the moves with policy probability >= p
    max_depth: int = 0  # teacher: cap of the adaptive depth

    @property
    def name(self) -> str:
        """The canonical spec (every option that matters, defaults made explicit)."""
        if self.kind == "value":
            return f"value:depth={self.depth}"
        if self.kind == "hybrid":
            choice = f"top={self.top}" if self.top else f"p={self.p:g}"
            return f"hybrid:{choice}" + (f":depth={self.depth}" if self.depth != 1 else "")
        if self.kind == "teacher":
            default = max(self.depth, TeacherConfig().max_depth)
            return f"teacher:depth={self.depth}" + (
                f":max_depth={self.max_depth}" if self.max_depth != default else "")
        return self.kind

    @property
    def uses_model(self) -> bool:
        return self.kind in ("policy", "value", "hybrid")

    @property
    def uses_value(self) -> bool:
        return self.kind in ("value", "hybrid")

    def teacher_config(self) -> TeacherConfig:
        return TeacherConfig(depth=self.depth, max_depth=self.max_depth)


def parse_agent(text: str) -> AgentSpec:
    """One spec (module docstring) -> AgentSpec; a ValueError names the spec and the problem."""
    kind, *parts = text.strip().split(":")
    if kind not in OPTIONS:
        raise ValueError(f"agent {text!r}: unknown agent {kind!r} (known: {', '.join(OPTIONS)})")
    known = OPTIONS[kind]
    values: dict[str, int | float] = {}
    for part in parts:
        key, eq, raw = part.partition("=")
        key = key.strip()
        if key not in known:
            hint = f"known: {', '.join(known)}" if known else f"{kind} takes no options"
            raise ValueError(f"agent {text!r}: unknown option {key!r} ({hint})")
        if not eq or key in values:
            raise ValueError(f"agent {text!r}: option {key!r} needs one value ({key}=...)")
        try:
            values[key] = known[key](raw.strip())
        except ValueError:
            raise ValueError(f"agent {text!r}: {key} must be "
                             f"{'an integer' if known[key] is int else 'a number'}, "
                             f"got {raw!r}") from None
    if kind in ("value", "hybrid"):
        depth = values.setdefault("depth", 1)
        if not 1 <= depth <= MAX_SEARCH_DEPTH:
            raise ValueError(f"agent {text!r}: depth must be in 1..{MAX_SEARCH_DEPTH}, "
                             f"got {depth}")
    if kind == "hybrid":
        if ("top" in values) == ("p" in values):
            raise ValueError(f"agent {text!r}: hybrid needs one of top=K or p=X")
        if "top" in values and not 1 <= values["top"] <= 4:
            raise ValueError(f"agent {text!r}: top must be in 1..4, got {values['top']}")
        if "p" in values and not 0 < values["p"] <= 1:
            raise ValueError(f"agent {text!r}: p must be in (0, 1], got {values['p']}")
    if kind == "teacher":
        depth = values.setdefault("depth", TeacherConfig().depth)
        values.setdefault("max_depth", max(depth, TeacherConfig().max_depth))
        try:
            TeacherConfig(depth=depth, max_depth=values["max_depth"])
        except ValueError as e:
            raise ValueError(f"agent {text!r}: {e}") from None
    return AgentSpec(kind, **values)


def parse_agents(text: str) -> list[AgentSpec]:
    """A comma-separated list of specs; each agent at most once."""
    specs = [parse_agent(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise ValueError("no agents given (e.g. --agents policy,value:depth=1,greedy)")
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"agent {name!r} is listed twice")
    return specs


def _check(cfg) -> None:
    """The checks every play config shares: ranges, seeds and device."""
    check_fields(cfg)
    if not (cfg.seed >= 0 and cfg.seed + cfg.games <= 1 << 64):
        raise ValueError(f"seeds must lie in 0..2^64-1, got seed {cfg.seed}")
    check_device(cfg.device)


_THREADS_HELP = ("torch CPU threads of an in-process model (0: torch's default); one thread "
                 "avoids stalls on shared cores")
_GAMMA_UNSET = (f"the one the init records (value-target.json, or the server's Describe), "
                f"else {DEFAULT_GAMMA}")
_MAX_MOVES = {"help": "moves per game at most (0: no limit)", "min": 0}


@dataclass
class PlayConfig:
    agent: str = field(default="", metadata={
        "help": f"one of {', '.join((*BASELINES, MODEL_AGENT))} ('': model with --init or "
        "--server, else greedy)"})
    games: int = field(default=16, metadata={"help": "number of games", "min": 1})
    seed: int = field(default=0, metadata={"help": "game i plays seed + i"})
    max_moves: int = field(default=NO_MOVE_LIMIT, metadata=_MAX_MOVES)
    out: str = field(default="", metadata={
        "help": "directory for games.csv, summary.json and scores.png ('' prints only)"})
    init: str = field(default="", metadata={"help": "model init directory (agent model)"})
    server: str = field(default="", metadata={
        "help": "inference server HOST:PORT or unix:PATH (agent model, played remotely)"})
    device: str = field(default="cpu", metadata={"help": DEVICE_HELP})
    threads: int = field(default=1, metadata={"help": _THREADS_HELP, "min": 0})

    def __post_init__(self) -> None:
        if not self.agent:
            self.agent = MODEL_AGENT if self.init or self.server else "greedy"
        if self.agent not in (*BASELINES, MODEL_AGENT):
            raise ValueError(f"agent must be one of {', '.join((*BASELINES, MODEL_AGENT))}, "
                             f"got {self.agent!r}")
        if self.agent == MODEL_AGENT and not (self.init or self.server):
            raise ValueError("agent model needs --init DIR or --server ADDR")
        if self.agent != MODEL_AGENT and (self.init or self.server):
            raise ValueError(f"--init and --server play the model, not agent {self.agent}")
        _check(self)

    @property
    def spec(self) -> AgentSpec:
        return parse_agent("policy" if self.agent == MODEL_AGENT else self.agent)


@dataclass
class EvaluateConfig:
    agents: str = field(default="policy,value:depth=1,hybrid:top=2,greedy", metadata={
        "help": "comma-separated agent specs: policy, value:depth=D, hybrid:top=K, "
        "hybrid:p=X, teacher[:depth=D], random, greedy, corner"})
    init: str = field(default="", metadata={"help": "model init directory"})
    server: str = field(default="", metadata={
        "help": "play the model through this inference server (HOST:PORT or unix:PATH)"})
    games: int = field(default=32, metadata={"help": "games per agent", "min": 1})
    seed: int = field(default=0, metadata={"help": "game i plays seed + i, for every agent"})
    max_moves: int = field(default=NO_MOVE_LIMIT, metadata=_MAX_MOVES)
    gamma: float | None = gamma_field(_GAMMA_UNSET)
    device: str = field(default="cpu", metadata={"help": DEVICE_HELP})
    threads: int = field(default=1, metadata={"help": _THREADS_HELP, "min": 0})
    out: str = field(default="runs/evaluate", metadata={
        "help": "directory for games.csv, summary.json and agents.png (offline: ranking.json)"})
    resume: bool = field(default=False, metadata={
        "help": "continue the interrupted evaluation staged beside --out"})
    dataset: str = field(default="", metadata={
        "help": "offline: score the agents' moves on this packed dataset's positions instead "
        "of playing"})
    sidecar: str = field(default="", metadata={
        "help": "offline: the value sidecar (default: the dataset's own, if it has one)"})
    rows: int = field(default=1000, metadata={"help": "offline: evenly spaced positions",
                                              "min": 1})
    where: str = field(default="", metadata={
        "help": "offline: SQL over the runs table choosing the runs (e.g. held-out ones)"})
    ray: str = field(default="", metadata={"help": RAY_HELP, "metavar": "ADDRESS"})
    ray_gpus: float = field(default=0.0, metadata={"help": RAY_GPUS_HELP, "min": 0})

    def __post_init__(self) -> None:
        self.specs = parse_agents(self.agents)
        if self.ray and (self.server or self.dataset):
            raise ValueError("--ray plays games with the model sent to the cluster: give "
                             "--init DIR, not --server, and no --dataset")
        if any(s.uses_model for s in self.specs) and not (self.init or self.server):
            raise ValueError("agents policy, value and hybrid need --init DIR or --server ADDR")
        if self.dataset and not (self.init or self.server):
            raise ValueError("--dataset scores a model: pass --init DIR or --server ADDR")
        if self.sidecar and not self.dataset:
            raise ValueError("--sidecar goes with --dataset")
        _check(self)

    def settings(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class ValueSmokeConfig:
    init: str = field(default="", metadata={"help": "model init directory (with a value head)"})
    server: str = field(default="", metadata={
        "help": "play through this inference server instead of in process"})
    games: int = field(default=8, metadata={"help": "rollouts", "min": 1})
    seed: int = field(default=0, metadata={"help": "rollout i plays seed + i"})
    agent: str = field(default="policy", metadata={
        "help": "who plays the rollouts: a model agent spec (policy, value:depth=1, "
                "hybrid:top=2); a value head predicts the returns of the player it was "
                "trained on", "metavar": "SPEC"})
    gamma: float | None = gamma_field(_GAMMA_UNSET)
    moves: int = field(default=400, metadata={"help": "moves per rollout at most", "min": 1})
    device: str = field(default="cpu", metadata={"help": DEVICE_HELP})
    threads: int = field(default=1, metadata={"help": _THREADS_HELP, "min": 0})
    out: str = field(default="runs/value-smoke", metadata={
        "help": "directory for value-smoke.json, steps.csv and value-smoke.png"})

    def __post_init__(self) -> None:
        if not (self.init or self.server):
            raise ValueError("value-smoke needs --init DIR (or --server ADDR)")
        spec = parse_agent(self.agent)
        if not spec.uses_model:
            raise ValueError(f"value-smoke plays a model agent (policy, value, hybrid), not "
                             f"{spec.name}")
        self.agent = spec.name
        _check(self)
