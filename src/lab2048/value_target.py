"""What a value head predicts: the definition of its target, carried by every init directory.

A value is only meaningful with its definition: the discount γ, the reward scale and ε of the
transform h the head was trained in, which states it is a value of, and how the target was
made. `lab2048 train` writes it as `value-target.json` into each init directory it publishes;
everything that interprets a value (serve's Describe, play, value-smoke, evaluate, annotate)
reads it from there and refuses a conflicting flag rather than silently use another γ.

    target = ValueTarget(gamma=0.997, kind="monte_carlo")
    target.save(init_dir); read_value_target(init_dir)    # None for an init without one

Choices
- `state`: "board" heads value the board before a move, V(s) = E[G_t]; "afterstate" heads
  value the board after a move and before its spawn, V(s') = E[G_{t+1}], so a 1-ply decision
  is r + γ V(afterstate) with no spawn enumeration.
- `kind`: "monte_carlo" (the episode's discounted return), "n_step" (n rewards, then γⁿ times
  a model's value), "lambda" (TD(λ) returns bootstrapped on a model's values), "td" (self-play
  temporal differences). `n` and `lam` say which, `bootstrap` names the bootstrapping model by
  its weights' fingerprint, `sidecar` the sidecar's fingerprint.
- A command's `--gamma` option is `gamma_field(...)`: None when not given (not 0 or any other
  sentinel), meaning the γ of the model's value-target.json (else what the command says),
  and a given γ must agree with a recorded one (`check_gamma`).
- Standard library only: the command line reads it before importing torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from lab2048.errors import UserError

FILE = "value-target.json"
DEFAULT_GAMMA = 0.997  # the discount of returns unless a command or config says otherwise
DEFAULT_EPSILON = 0.001  # ε of h(x) = sign(x)(√(|x|+1) − 1) + εx (MuZero)
KINDS = ("monte_carlo", "n_step", "lambda", "td")
STATES = ("board", "afterstate")


@dataclass(frozen=True)
class ValueTarget:
    gamma: float = DEFAULT_GAMMA
    reward_scale: float = 1.0
    epsilon: float = DEFAULT_EPSILON
    kind: str = "monte_carlo"
    state: str = "board"
    n: int = 0  # n_step: the number of rewards before the bootstrap
    lam: float = 0.0  # lambda: TD(λ)'s λ
    bootstrap: str = ""  # fingerprint of the bootstrapping model's weights ("" for none)
    sidecar: str = ""  # fingerprint of the sidecar the head was trained on ("" if unknown)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gamma) and 0 <= self.gamma <= 1):
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not (math.isfinite(self.reward_scale) and self.reward_scale > 0):
            raise ValueError(f"reward_scale must be positive, got {self.reward_scale}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be positive, got {self.epsilon}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {self.state!r}")
        if self.kind == "n_step" and self.n < 1:
            raise ValueError(f"an n_step target needs n >= 1, got {self.n}")
        if self.kind == "lambda" and not 0 <= self.lam <= 1:
            raise ValueError(f"a lambda target needs lam in [0, 1], got {self.lam}")

    @property
    def afterstate(self) -> bool:
        return self.state == "afterstate"

    def describe(self) -> str:
        """One line for people: what the head's value is."""
        what = {"monte_carlo": "Monte Carlo return", "n_step": f"{self.n}-step return",
                "lambda": f"TD(λ = {self.lam}) return", "td": "self-play TD return"}[self.kind]
        of = "of the afterstate (after the move, before the spawn)" if self.afterstate else \
            "of the board before the move"
        return (f"{what} {of}, G = Σ γ^k r, γ = {self.gamma}, reward scale "
                f"{self.reward_scale}, ε = {self.epsilon}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, init_dir: str | Path) -> None:
        """Write value-target.json into a directory being built (the caller publishes it)."""
        (Path(init_dir) / FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def check_gamma(self, gamma: float | None, source: str | Path) -> float:
        """The γ to use: this target's; a flag that says another γ is a one-line UserError."""
        if gamma is not None and gamma != self.gamma:
            raise UserError(f"{source}: the value head was trained for gamma {self.gamma}, "
                            f"not {gamma} (drop --gamma or pass {self.gamma})")
        return self.gamma


def gamma_field(unset: str) -> dataclasses.Field:
    """A config's `gamma: float | None` option: None until given, then a γ in (0, 1]
    (lab2048.config.check_fields); `unset` says in the help what None means."""
    return dataclasses.field(default=None, metadata={
        "help": f"discount γ in (0, 1] (unset: {unset}); a γ other than the one the value "
                "head records is refused", "above": 0, "max": 1})


def read_value_target(init_dir: str | Path) -> ValueTarget | None:
    """The init's value-target.json, or None when it has none (a policy-only model, or an
    init written before lab2048 recorded it); a malformed file is a one-line UserError."""
    path = Path(init_dir) / FILE
    if not path.exists():
        return None
    from lab2048.io import read_json

    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    names = {f.name for f in dataclasses.fields(ValueTarget)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}")
    try:
        return ValueTarget(**data)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: {e}") from None
