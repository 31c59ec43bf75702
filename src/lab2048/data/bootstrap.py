"""A model's values of every board of a dataset, for the bootstrapped sidecar targets.

`lab2048 value-sidecar --bootstrap INIT (--n-step N | --lambda L)` needs V(board) for every
step row: the init's value head in points (`Model.predict`), in batches, shard by shard.

Choices
- Resumable per shard: each shard's values are saved (temporary file + rename) in
  `.values-bootstrap-<weights>/` inside the sidecar's output directory as soon as they are
  computed, named after the shard, its row count and its modification time; a rerun of the same
  command keeps them, and the directory is removed once the sidecar is published.
- The bootstrapping model is named by the SHA-256 of its model.safetensors, which values.json
  records as "bootstrap". Its value-target.json, when present, must say the sidecar's γ and a
  board (not afterstate) head: V(s_{t+n}) is the value of a board before a move.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from lab2048.data.dataset import Dataset
from lab2048.data.fingerprint import weights_fingerprint
from lab2048.errors import UserError
from lab2048.io import progress_bar
from lab2048.value_target import read_value_target

BATCH = 4096


def bootstrap_gamma(init: Path, gamma: float | None) -> float | None:
    """The γ of the bootstrapping model's value-target.json (a conflicting `gamma` is a
    one-line UserError), or `gamma` when it has none. Afterstate heads are refused."""
    if not Path(init).is_dir():
        raise UserError(f"{init}: no such model init directory")
    target = read_value_target(init)
    if target is None:
        return gamma
    if target.afterstate:
        raise UserError(f"{init}: an afterstate value head cannot bootstrap board values "
                        "(V(s_t+n) is the value of a board before a move)")
    return target.check_gamma(gamma, Path(init) / "value-target.json")


def _cache_dir(output: Path, weights: str) -> Path:
    return output / f".values-bootstrap-{weights.removeprefix('sha256:')[:16]}"


def bootstrap_values(ds: Dataset, init: Path, gamma: float, output: Path, progress: bool):
    """(weights fingerprint, values_of(start, stop) -> float32 V of global rows [start, stop))
    with the init's values of every board in `ds`, computed (or resumed) now."""
    import torch

    from lab2048.engine.batch import legal_masks, to_exponents
    from lab2048.model import load_init

    bootstrap_gamma(init, gamma)
    model = load_init(init)
    if not model.cfg.value_head.enabled:
        raise UserError(f"{init}: the model has no value head to bootstrap on")
    weights = weights_fingerprint(init)
    cache = _cache_dir(output, weights)
    cache.mkdir(parents=True, exist_ok=True)
    shards = []
    with progress_bar(progress, total=ds.num_rows, unit="row", unit_scale=True,
                      desc="bootstrap values") as bar, torch.inference_mode():
        for path, steps in zip(ds.shard_paths, ds.shards, strict=True):
            done = cache / f"{path.stem}-{len(steps)}-{path.stat().st_mtime_ns}.npy"
            if done.exists():
                try:
                    values = np.load(done, allow_pickle=False)
                    if values.dtype == np.float32 and values.shape == (len(steps),):
                        shards.append(values)
                        bar.update(len(steps))
                        continue
                except (OSError, ValueError, EOFError):
                    pass  # damaged by a kill or a full disk: computed again
            values = np.empty(len(steps), np.float32)
            for a in range(0, len(steps), BATCH):
                rows = steps[a:a + BATCH]
                boards, masks = rows["board"], rows["tile_65536_mask"]
                pred = model.predict(to_exponents(boards, masks), legal_masks(boards, masks))
                values[a:a + len(rows)] = pred.value.float().numpy()
                bar.update(len(rows))
            tmp = done.with_name(f".{done.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as f:
                    np.save(f, values)
                os.replace(tmp, done)
            finally:
                tmp.unlink(missing_ok=True)
            shards.append(values)
    bounds = np.concatenate(([0], np.cumsum([len(v) for v in shards])))

    def values_of(start: int, stop: int) -> np.ndarray:
        parts = []
        for s, values in enumerate(shards):
            lo, hi = bounds[s], bounds[s + 1]
            if lo < stop and hi > start:
                parts.append(values[max(start, lo) - lo:min(stop, hi) - lo])
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    return weights, values_of


def forget_values(output: Path, weights: str) -> None:
    """Remove the resumable values once the sidecar that needed them is published."""
    shutil.rmtree(_cache_dir(output, weights), ignore_errors=True)
