"""The `lab2048 train` config (stdlib only: the CLI parses it before importing torch).

A TOML file with six tables; every key has a default in code, `--set section.key=value`
overrides one key after the file (values parse as TOML literals, anything else is a string):

    [data]       dataset, sidecar, where (SQL over runs), validation split by run, augmentation,
                 placement of the training columns (device memory or pinned host memory)
    [model]      the model's architecture: lab2048.model.ModelConfig, its [model.value_head]
                 and [model.value_head.support] tables (checked by ModelConfig.from_dict)
    [objective]  policy/value loss weights, value target column, γ and target kind (checked
                 against the sidecar), board or afterstate values, binned_ev's FAILURE value
    [optim]      AdamW, schedule (wsd or cosine), warmup, clipping
    [train]      mode, init, steps, batch size, evaluation/checkpoint cadence, seed, out, device
    [selfplay]   train.mode = "td": agent, rounds, games a round, replay buffer, λ
                 (train/selfplay.py; train.steps are each round's steps)

Unknown keys, wrong types, invalid values and non-finite numbers (inf, nan) anywhere are
one-line UserErrors naming the file and key.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab2048.config import (
    DEVICE_HELP,
    check_device,
    check_fields,
    check_table,
    construct,
    load_values,
)
from lab2048.errors import UserError
from lab2048.play.config import parse_agent
from lab2048.value_target import DEFAULT_GAMMA, KINDS, STATES

MODES = ("scratch", "joint", "value_only", "td")
SCHEDULES = ("wsd", "cosine")
VALUE_TARGETS = ("return_scaled", "return_raw")
PLACEMENTS = ("auto", "device", "host")
POLICY_LABELS = ("move", "teacher")


@dataclass
class DataConfig:
    dataset: str = ""  # packed dataset directory; "" = the small one embedded in the package
    sidecar: str = ""  # directory of values.json and values-NNNNN.npy; "" = the dataset's own
    where: str = ""  # SQL condition over metadata.db's runs table choosing the runs to use
    val_where: str = ""  # SQL choosing the validation runs; "" = a random val_fraction of runs
    val_fraction: float = 0.1  # of the selected runs, held out (at least one run)
    split_seed: int = 0  # seeds the choice of validation runs
    val_rows: int = 16384  # validation steps evaluated (evenly spaced over the held-out runs)
    max_tile: int = 0  # only steps whose largest tile is at most this (both sides); 0 = all
    augment: bool = True  # a random one of the 8 board symmetries per training sample
    placement: str = "auto"  # training columns in device memory, or pinned host memory with
    # the next batch copied while a step trains; auto: the device when they fit in half of it

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"data.placement must be one of {PLACEMENTS}, got "
                             f"{self.placement!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_rows < 1:
            raise ValueError(f"data.val_rows must be at least 1, got {self.val_rows}")
        if self.max_tile < 0 or self.max_tile & (self.max_tile - 1) or self.max_tile == 1:
            raise ValueError(f"data.max_tile must be 0 (all steps) or a tile (a power of two "
                             f"from 2), got {self.max_tile}")


@dataclass
class ObjectiveConfig:
    policy_weight: float = 1.0
    value_weight: float = 1.0
    # sidecar column: return_scaled (h-space) or return_raw
    value_target: str = field(default="return_scaled", metadata={"choices": VALUE_TARGETS})
    # the discount the sidecar must have been built with
    gamma: float = field(default=DEFAULT_GAMMA, metadata={"above": 0, "max": 1})
    # the return kind the sidecar must hold (values.json kind)
    target_kind: str = field(default="monte_carlo", metadata={"choices": KINDS})
    # board: V(s) = E[G_t]; afterstate: V(after move, before spawn)
    value_state: str = field(default="board", metadata={"choices": STATES})
    # afterstate heads: weight of the ranking loss, the cross-entropy of softmax(Q / T) over the
    # legal moves against the recorded move, Q(s, a) = r(s, a) + gamma V(afterstate of a)
    rank_weight: float = 0.0
    rank_temperature: float = field(default=100.0, metadata={"above": 0})  # T, in points
    failure_value: float = -800.0  # binned_ev: a legal move valued at most this is FAILURE
    # the policy's target move: the recorded (played) move, or the teacher's, the best of the
    # row's branch_evs (student games of `lab2048 generate --agent`; the recorded move where
    # it is as good, so on the teacher's own games both are the same)
    policy_label: str = field(default="move", metadata={"choices": POLICY_LABELS})

    def __post_init__(self) -> None:
        check_fields(self, "objective.")
        if self.policy_weight < 0 or self.value_weight < 0 or self.rank_weight < 0:
            raise ValueError("objective weights must be non-negative")
        if self.rank_weight > 0 and self.value_state != "afterstate":
            raise ValueError("objective.rank_weight needs objective.value_state = 'afterstate' "
                             "(a board head would need every spawn of every move)")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # the last learning rate, as a fraction of lr
    weight_decay: float = 0.1  # on matrices and embeddings only
    beta1: float = 0.9
    beta2: float = 0.95
    schedule: str = "wsd"  # wsd: warmup, constant, linear decay; cosine: warmup, cosine decay
    warmup_steps: int = 100
    decay_fraction: float = 0.2  # wsd: the final share of steps spent decaying
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("optim.lr must be positive and optim.min_lr_ratio in [0, 1]")
        if self.warmup_steps < 0 or not 0 <= self.decay_fraction <= 1 or self.grad_clip < 0:
            raise ValueError("optim.warmup_steps, decay_fraction and grad_clip must be >= 0 "
                             "(decay_fraction at most 1)")


@dataclass
class RunConfig:
    mode: str = "scratch"  # scratch: co-train both heads; joint: fine-tune an init; value_only
    init: str = ""  # model init directory to start from (joint, value_only)
    freeze_trunk: bool = False  # value_only: the encoder gets no gradient (and no dropout)
    steps: int = 1000  # optimizer steps (the schedule's horizon)
    max_seconds: float = 0.0  # stop (validate, checkpoint) after this much training, checked
    # every 10 steps; 0 = none
    batch_size: int = 256
    eval_every: int = 200  # steps between validations (and at the end)
    checkpoint_every: int = 200  # steps between checkpoints (and at the end)
    seed: int = 0  # model init, data order, augmentation, dropout
    out: str = "runs/train"  # run directory: metrics.jsonl, curves.png, checkpoint.pt, init/
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})
    threads: int = 0  # torch CPU threads; 0 = torch's default (one per core)
    compile: bool = False  # torch.compile the model's forward (every mode)
    progress: bool = True  # a progress bar on terminals

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"train.mode must be one of {MODES}, got {self.mode!r}")
        if self.mode != "scratch" and not self.init:
            raise ValueError(f"train.mode = {self.mode!r} needs train.init (a model init dir)")
        if self.freeze_trunk and self.mode != "value_only":
            raise ValueError("train.freeze_trunk is for train.mode = 'value_only'")
        check_device(self.device)
        if self.threads < 0:
            raise ValueError(f"train.threads must be >= 0, got {self.threads}")
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class SelfPlayConfig:
    """train.mode = "td" (train/selfplay.py): rounds of games, TD(λ) targets, training."""

    agent: str = "value:depth=1"  # who plays each round's games: an agent spec of the model
    rounds: int = 4
    games: int = 32  # games a round
    seed: int = 1_000_000  # round r plays seeds seed + r * games ..
    max_moves: int = 0  # moves per game at most (0: no limit)
    buffer: int = 4  # rounds of games the replay buffer holds
    lam: float = 0.8  # λ of the TD(λ) returns

    def __post_init__(self) -> None:
        self.agent = parse_agent(self.agent).name
        if min(self.rounds, self.games, self.buffer) < 1:
            raise ValueError("selfplay.rounds, games and buffer must be at least 1")
        if self.seed < 0 or self.max_moves < 0:
            raise ValueError("selfplay.seed and max_moves must be >= 0")
        if not 0 <= self.lam <= 1:
            raise ValueError(f"selfplay.lam must be in [0, 1], got {self.lam}")


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)
    selfplay: SelfPlayConfig = field(default_factory=SelfPlayConfig)
    model: dict = field(default_factory=dict)  # ModelConfig's fields, checked by the model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_train_config(path: Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the TOML file, then `--set` overrides (lab2048.config's mechanism);
    checked, one-line errors."""
    values = load_values(TrainConfig, path, overrides)
    source = f"{path} with --set" if path and overrides else str(path or "--set")
    return from_dict(values, source)


def _non_finite(data: Any, prefix: str = "") -> str | None:
    """The dotted key of the first inf or nan number in a nested dict, or None."""
    if isinstance(data, dict):
        for k, v in data.items():
            found = _non_finite(v, f"{prefix}{k}.")
            if found:
                return found
    elif isinstance(data, float) and not math.isfinite(data):
        return f"{prefix[:-1]} = {data}"
    return None


def from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    data = copy.deepcopy(data)
    bad = _non_finite(data)
    if bad:
        raise UserError(f"{source}: {bad} is not a finite number")
    model = data.pop("model", {})
    if not isinstance(model, dict):
        raise UserError(f"{source}: model must be a table [model]")
    try:
        cfg = construct(TrainConfig, check_table(TrainConfig, data, source))
    except ValueError as e:
        raise UserError(f"{source}: {e}") from None
    cfg.model = model
    model_config(cfg, source)  # checks the [model] table now, not after loading data
    return cfg


def model_config(cfg: TrainConfig, source: str = "config"):
    """The lab2048.model.ModelConfig of the [model] table (imports the model package)."""
    from lab2048.model.config import ModelConfig

    return ModelConfig.from_dict(cfg.model, f"{source} [model]")
