"""The model's config: dataclasses with defaults in code, saved as `config.json` in an init dir.

`ModelConfig()` is the reference small model (hidden 256, 4 layers, 8 query heads sharing 2
key/value heads, SwiGLU width 768; 3.03 M parameters), sized to train on a laptop CPU.
A config without a `value_head` section loads as policy-only. Unknown keys, wrong types and
invalid values are a `UserError` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from lab2048.config import check_table, construct
from lab2048.engine.conventions import ev_winner
from lab2048.errors import UserError
from lab2048.io import read_json
from lab2048.value_target import DEFAULT_EPSILON
from lab2048.value_transform import Support

VOCAB = 18  # tokens are exponents 0..17 (0 = empty cell)
POSITIONS = ("learned", "row_col")
POLICY_HEADS = ("action_policy", "binned_ev")
POOLINGS = ("mean", "attention")
OBJECTIVES = ("mse", "cross_entropy")


@dataclass
class ValueHeadConfig:
    enabled: bool = False
    pooling: str = "mean"  # mean over cells, or attention with a learned query
    pre_pool_mlp: bool = True  # a residual SwiGLU block on the cells before pooling
    objective: str = "cross_entropy"  # mse: one h-space scalar; cross_entropy: two-hot atoms
    support: Support = field(default_factory=Support)  # atoms of cross_entropy, in h-space
    epsilon: float = DEFAULT_EPSILON  # of the transform h
    reward_scale: float = 1.0  # targets are h(reward_scale * return); points divide it out
    prior: float = 0.0  # the value (in points) a freshly initialised head predicts

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"value_head.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"value_head.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not self.epsilon > 0:
            raise ValueError(f"value_head.epsilon must be positive, got {self.epsilon}")
        if not self.reward_scale > 0:
            raise ValueError(f"value_head.reward_scale must be positive, got {self.reward_scale}")


@dataclass
class ModelConfig:
    hidden: int = 256
    layers: int = 4
    heads: int = 8
    kv_heads: int = 2  # grouped-query attention: heads / kv_heads query heads share one
    mlp: int = 768  # SwiGLU inner width
    dropout: float = 0.0
    norm_eps: float = 1e-6
    vocab: int = VOCAB
    position: str = "learned"  # learned: one vector per cell; row_col: row vector + column vector
    policy_head: str = "action_policy"  # action_policy: 4 logits; binned_ev: 4 heads x classes
    ev_bins: int = 16  # quantile bins of binned_ev (classes = ILLEGAL, FAILURE, bins, WINNER)
    value_head: ValueHeadConfig = field(default_factory=ValueHeadConfig)

    def __post_init__(self) -> None:
        for name in ("hidden", "layers", "heads", "kv_heads", "mlp", "ev_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"hidden ({self.hidden}) must divide by heads ({self.heads}) and "
                             f"heads by kv_heads ({self.kv_heads})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.vocab < VOCAB:
            raise ValueError(f"vocab must be at least {VOCAB} (exponents 0..17), got {self.vocab}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.policy_head not in POLICY_HEADS:
            raise ValueError(
                f"policy_head must be one of {POLICY_HEADS}, got {self.policy_head!r}")

    @property
    def ev_classes(self) -> int:
        """Width of each binned_ev head: ILLEGAL, FAILURE, the quantile bins, WINNER."""
        return ev_winner(self.ev_bins) + 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict, source: str | Path = "config") -> ModelConfig:
        """Type-checked construction; errors are one-line UserErrors naming `source`."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object")
        try:
            return construct(cls, check_table(cls, data, source))
        except ValueError as e:
            raise UserError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        return cls.from_dict(read_json(path), path)
