"""Model init directories: `config.json` + `model.safetensors` (+ `tokenizer.json` for binned_ev,
+ whatever JSON files the caller adds, such as `training-config.json`). A path is all loading
needs.

Saving writes a temporary sibling directory and renames it into place; an existing directory
is replaced only with overwrite=True. Loading into a different config keeps every trunk and
policy weight and requires those parts of the config to match; the value head is loaded when
its config matches too (the prior aside), and otherwise starts fresh (or is dropped when the
new config has none). Loading a policy-only init into a config with a value head is how
training mode (a) starts. Missing or corrupt files are a one-line UserError naming the file;
so are weights holding NaN or infinity (a diverged run's output is refused, not played).
A device that is not auto, cpu, cuda or cuda:N, or CUDA where there is none, is a one-line
UserError naming --device (`torch_device`, the one device rule of every command).

Published files get the usual mode (0666 less the umask), model.safetensors included.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lab2048.config import check_device
from lab2048.errors import UserError
from lab2048.io import publish_dir, temp_dir_beside
from lab2048.model.config import ModelConfig
from lab2048.model.model import Model
from lab2048.model.tokenizer import EvBins

CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"


def save_init(model: Model, path: str | Path, *, overwrite: bool = False,
              extra_json: dict[str, object] | None = None) -> Path:
    """Write `model` (and `model.bins`, required for binned_ev) as an init directory."""
    path = Path(path)
    cfg = model.cfg
    if cfg.policy_head == "binned_ev" and model.bins is None:
        raise ValueError("a binned_ev model needs its bins (model.bins) to be saved")
    if path.exists() and not overwrite:
        raise UserError(f"{path}: exists (pass overwrite to replace it)")
    tmp = temp_dir_beside(path)
    try:
        (tmp / CONFIG).write_text(cfg.to_json())
        state = {k: v.detach().to("cpu", copy=True).contiguous()
                 for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        if model.bins is not None:
            (tmp / TOKENIZER).write_text(model.bins.to_json())
        for name, obj in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=2) + "\n")
        publish_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def torch_device(device: str | torch.device) -> torch.device:
    """The torch device a --device value names (auto: cuda when available, else cpu); a
    one-line UserError for anything else, or for CUDA on a machine without it."""
    if isinstance(device, torch.device):
        return device
    try:
        check_device(device)
    except ValueError as e:
        raise UserError(f"--device: {e}") from None
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available")
    return torch.device(device)


def _same_value_head(a: ModelConfig, b: ModelConfig) -> bool:
    return a.value_head.enabled and b.value_head.enabled and dataclasses.replace(
        a.value_head, prior=0.0) == dataclasses.replace(b.value_head, prior=0.0)


def load_init(path: str | Path, config: ModelConfig | None = None,
              device: str | torch.device = "cpu") -> Model:
    """The model saved at `path`, in eval mode, optionally rebuilt with another value head."""
    path = Path(path)
    device = torch_device(device)
    if not path.is_dir():
        raise UserError(f"{path}: no such model init directory")
    saved = ModelConfig.from_json(path / CONFIG)
    cfg = config or saved
    trunk = dataclasses.replace(cfg, value_head=saved.value_head)
    if trunk != saved:
        diff = [f.name for f in dataclasses.fields(cfg)
                if getattr(trunk, f.name) != getattr(saved, f.name)]
        raise UserError(f"{path / CONFIG}: the init's {', '.join(diff)} differ from the "
                        f"requested config")
    bins = EvBins.from_json(path / TOKENIZER) if cfg.policy_head == "binned_ev" else None
    if bins is not None and bins.bins != cfg.ev_bins:
        raise UserError(f"{path / TOKENIZER}: {bins.bins} bins, config.json says {cfg.ev_bins}")
    weights = path / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{weights}: no such file")
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise UserError(f"{weights}: not a readable safetensors file ({e})") from None
    model = Model(cfg, bins).to(device)
    keep_value = _same_value_head(cfg, saved)
    state = {k: v for k, v in state.items() if keep_value or not k.startswith("value.")}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if keep_value or not k.startswith("value.")}
    bad = sorted(set(expected) ^ set(state)) or sorted(
        k for k in expected if tuple(state[k].shape) != expected[k])
    if bad:
        raise UserError(f"{weights}: does not match config.json ({len(bad)} tensors differ, "
                        f"first {bad[0]!r})")
    broken = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise UserError(f"{weights}: {len(broken)} tensors hold NaN or infinity (first "
                        f"{broken[0]!r}): the weights of a diverged run")
    model.load_state_dict(state, strict=False)
    return model.eval()
