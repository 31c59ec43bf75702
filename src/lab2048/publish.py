"""`lab2048 publish`: a finished training run's init, with what says where it came from, copied
into a model directory; by default the one shipped in the package (`--init default`).

    lab2048 publish runs/default-model/train --evaluation runs/default-model/evaluate
    lab2048 play --init default

The published directory is a model init (config.json, model.safetensors, value-target.json,
training-config.json) with the run's curves.png, the evaluation's summary and picture when one
is given (evaluation.json, agents.png), and model-card.json: parameters, size, the data
(the sidecar's fingerprint and γ from value-target.json), the last validation metrics of
metrics.jsonl and the evaluation's means.

Choices
- Only a run whose init has value-target.json is published: every command that interprets
  the shipped value head reads its γ from there.
- The init is loaded (lab2048.model.load_init) before anything is written, so a torn or
  diverged run is refused with one line and the published model is left as it was.
- Written to a temporary beside the target and renamed into place (lab2048.io.publish_dir):
  the target is always the old model or the new one. An existing target is replaced only with
  --overwrite, and only when it is a published model (it holds model-card.json).
- Standard library only at import (the CLI builds its parser from PublishConfig); torch is
  imported when a model is checked.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lab2048.config import default_init
from lab2048.errors import UserError
from lab2048.io import claim_dir, disk_errors, publish_dir, read_json, temp_dir_beside
from lab2048.value_target import read_value_target

CARD = "model-card.json"
INIT_FILES = ("config.json", "model.safetensors", "value-target.json", "training-config.json")
RUN_FILES = ("curves.png", "selfplay.png")  # copied from the run directory when present
METRICS = ("metrics.jsonl", "selfplay.jsonl")  # a run's validation records (train, td mode)
EVALUATION_FILES = {"summary.json": "evaluation.json", "agents.png": "agents.png"}


@dataclass
class PublishConfig:
    """Copy a finished training run's init (with value-target.json), its curves, an optional
    evaluation and a model card into a model directory: by default the package's own, the
    model `--init default` names."""

    run_dir: str = field(default="", metadata={
        "help": "training run directory (train.out: init/, metrics.jsonl and curves.png, or "
                "selfplay.jsonl and selfplay.png of train.mode = 'td')",
        "positional": True, "metavar": "RUN"})
    evaluation: str = field(default="", metadata={
        "help": "`lab2048 evaluate` output of this model to include (summary.json, agents.png)"})
    out: str = field(default="", metadata={
        "help": "model directory to write ('': the package's, src/lab2048/model/default)"})

    def __post_init__(self) -> None:
        if not self.run_dir:
            raise ValueError("publish needs the training run directory RUN")


def last_validation(metrics: Path) -> dict:
    """The last {"kind": "val"} record of a run's metrics.jsonl ({} when it has none)."""
    last = {}
    try:
        with open(metrics) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by an interrupted run
                if record.get("kind") == "val":
                    last = record
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UserError(f"{metrics}: cannot read ({e.strerror})") from None
    return last


def evaluation_means(summary: dict) -> dict:
    """The seeds and each agent's {games, mean, ci95} score of an evaluate summary.json (the
    figures the README quotes)."""
    agents = {name: {"games": s["games"], "mean": s["score"]["mean"], "ci95": s["score"]["ci95"]}
              for name, s in summary.get("agents", {}).items()}
    return {"seed": summary.get("seed"), "games": summary.get("games"), "agents": agents}


def publish(cfg: PublishConfig, overwrite: bool = False) -> Path:
    """Check the run's init, then write the model directory atomically; returns its path."""
    run = Path(cfg.run_dir)
    init = run / "init"
    out = Path(cfg.out) if cfg.out else default_init()
    for name in INIT_FILES:
        if not (init / name).is_file():
            raise UserError(f"{init / name}: no such file (publish a finished run of `lab2048 "
                            "train` whose model has a value head)")
    target = read_value_target(init)
    evaluation = Path(cfg.evaluation) if cfg.evaluation else None
    summary = read_json(evaluation / "summary.json") if evaluation else None
    claim_dir(out, overwrite, marker=CARD, kind="published model", inputs=(run,))

    from lab2048.model import load_init  # torch: only once the inputs are known good

    model = load_init(init)
    card = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "bytes": (init / "model.safetensors").stat().st_size,
        "model": json.loads((init / "config.json").read_text()),
        "value_target": target.to_dict() if target else None,
        "validation": next((v for v in (last_validation(run / m) for m in METRICS) if v), {}),
        "evaluation": evaluation_means(summary) if summary else None,
    }
    tmp = temp_dir_beside(out)
    try:
        with disk_errors(out):
            for name in INIT_FILES:
                shutil.copyfile(init / name, tmp / name)
            for name in RUN_FILES:
                if (run / name).is_file():
                    shutil.copyfile(run / name, tmp / name)
            for name, as_name in EVALUATION_FILES.items() if evaluation else ():
                if (evaluation / name).is_file():
                    shutil.copyfile(evaluation / name, tmp / as_name)
            (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
            publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
