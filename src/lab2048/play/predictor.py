"""A model to play with, in process or through the inference server, and its value's meaning.

    with open_predictor(init="runs/init") as model:          # or server="127.0.0.1:50051"
        probs = model.policy(exponents, legal)               # float32 [N, 4], illegal 0
        values = model.values(exponents)                     # float64 [N], points
        gamma, afterstate = value_definition(model, gamma=None)

Choices
- `LocalPredictor` wraps `Model.predict` in chunks of at most `max_batch` boards (eval mode,
  no gradients, bf16 autocast on CUDA); `RemotePredictor` an `InferenceClient` (one channel
  for the whole run), whose server batches concurrent calls. On CPU the model is
  deterministic, so the same seeds give the same games in process and through a server.
- Every board sent to the model is counted (`boards_evaluated`): the cost measure of search.
- A value is read with its definition (lab2048.value_target): γ and whether the head values
  afterstates come from the init's value-target.json, or from the server's Describe
  (`value_target_json`). A --gamma flag that contradicts them is refused; an init that records
  none uses the flag, or DEFAULT_GAMMA with a note on stderr.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator

import numpy as np

from lab2048.errors import UserError
from lab2048.value_target import DEFAULT_GAMMA, ValueTarget, read_value_target


class LocalPredictor:
    """A model in this process."""

    def __init__(self, model, max_batch: int = 1024, source: str = "model"):
        self.model = model.eval()
        self.max_batch = max_batch
        self.has_value = model.value is not None
        self.source = source
        self.target: ValueTarget | None = None
        self.boards_evaluated = 0

    def _predict(self, exponents, legal, value: bool):
        self.boards_evaluated += len(exponents)
        probs, values = [], []
        for lo in range(0, len(exponents), self.max_batch):
            sl = slice(lo, lo + self.max_batch)
            p = self.model.predict(exponents[sl], legal[sl], with_value=value)
            probs.append(p.move_probs.cpu().numpy())
            if value:
                values.append(p.value.float().cpu().numpy())
        return np.concatenate(probs), (np.concatenate(values).astype(np.float64) if value
                                       else None)

    def policy(self, exponents: np.ndarray, legal: np.ndarray) -> np.ndarray:
        return self._predict(exponents, legal, False)[0]

    def values(self, exponents: np.ndarray) -> np.ndarray:
        self.require_value()
        return self._predict(exponents, np.zeros(len(exponents), np.uint8), True)[1]

    def policy_and_values(self, exponents: np.ndarray, legal: np.ndarray):
        self.require_value()
        return self._predict(exponents, legal, True)

    def require_value(self) -> None:
        if not self.has_value:
            raise UserError(f"{self.source}: the model has no value head")

    def close(self) -> None:
        pass


class RemotePredictor(LocalPredictor):
    """The model behind an inference server."""

    def __init__(self, address: str):
        from lab2048.serve.client import InferenceClient, value_target_of

        self.client = InferenceClient(address)
        self.source = address
        self.description = self.client.describe()
        self.has_value = self.description.has_value_head
        self.boards_evaluated = 0
        self.target = value_target_of(self.description, address)

    def _predict(self, exponents, legal, value: bool):
        self.boards_evaluated += len(exponents)
        if not len(exponents):
            return np.zeros((0, 4), np.float32), (np.zeros(0) if value else None)
        out = self.client.infer(exponents, "both" if value else "policy")
        return out.move_probs, (out.value.astype(np.float64) if value else None)

    def values(self, exponents: np.ndarray) -> np.ndarray:
        self.require_value()
        self.boards_evaluated += len(exponents)
        if not len(exponents):
            return np.zeros(0)
        return self.client.infer(exponents, "value").value.astype(np.float64)

    def close(self) -> None:
        self.client.close()


@contextlib.contextmanager
def open_predictor(init: str = "", server: str = "", device: str = "cpu",
                   threads: int = 1) -> Iterator[LocalPredictor]:
    """A predictor for --init DIR (in process, on `threads` torch CPU threads; 0 leaves
    torch's default) or --server ADDR (remote; an --init given too must hold the served
    model's config, and its value-target.json, if any, is the value's definition)."""
    if server:
        pred = RemotePredictor(server)
        if init:
            from lab2048.model.config import ModelConfig

            local = ModelConfig.from_json(f"{init}/config.json")
            served = ModelConfig.from_dict(json.loads(pred.description.config_json), server)
            if local != served:
                pred.close()
                raise UserError(f"{server}: serves a model whose config differs from {init}")
            pred.target = read_value_target(init) or pred.target
    else:
        import torch

        from lab2048.model import load_init

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available")
        if threads > 0:
            torch.set_num_threads(threads)
        pred = LocalPredictor(load_init(init, device=device), source=init)
        pred.target = read_value_target(init)
    try:
        yield pred
    finally:
        pred.close()


def value_definition(pred: LocalPredictor, gamma: float | None,
                     note: bool = True) -> tuple[float, bool]:
    """(γ, afterstate) of the predictor's value head: its recorded target's, a --gamma that
    differs being a one-line UserError; without a record, the flag or DEFAULT_GAMMA (noted on
    stderr when `note`)."""
    if pred.target is not None:
        return pred.target.check_gamma(gamma, pred.source), pred.target.afterstate
    if gamma is None:
        if not note:
            return DEFAULT_GAMMA, False
        print(f"lab2048: note: {pred.source} records no value target; using gamma "
              f"{DEFAULT_GAMMA} (pass --gamma to choose)", file=sys.stderr)
        return DEFAULT_GAMMA, False
    return gamma, False
