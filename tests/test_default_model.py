"""The model shipped in the package (`--init default`), `lab2048 publish` that puts it there,
and the training option its config uses (`data.max_tile`). Not its strength: that is measured
by `lab2048 evaluate` (README), never asserted here."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lab2048.cli import main
from lab2048.config import default_init, load_config
from lab2048.data.dataset import Dataset, default_dataset
from lab2048.data.sidecar import SidecarConfig, build_sidecar
from lab2048.engine.batch import to_exponents
from lab2048.errors import UserError
from lab2048.model import Model, ModelConfig, ValueHeadConfig, load_init, save_init
from lab2048.play.config import PlayConfig
from lab2048.publish import CARD, PublishConfig, publish
from lab2048.train.config import DataConfig, from_dict, load_train_config
from lab2048.train.loader import open_source
from lab2048.value_target import ValueTarget, read_value_target

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
ROOT = Path(__file__).resolve().parents[1]


# -- the shipped init ---------------------------------------------------------------------------


def test_shipped_init_loads_with_its_value_target_and_card():
    path = default_init()
    model = load_init(path)
    assert model.cfg.value_head.enabled
    target = read_value_target(path)
    assert target is not None and 0 < target.gamma <= 1
    card = json.loads((path / CARD).read_text())
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["bytes"] == (path / "model.safetensors").stat().st_size < 8 << 20
    assert card["value_target"] == target.to_dict()
    # trained by the committed recipe (its last stage, self-play from the first), and it names
    # no path of the machine that trained it
    recorded = json.loads((path / "training-config.json").read_text())
    assert not any(str(v).startswith("/") for section in ("data", "train")
                   for v in recorded[section].values())
    recorded = from_dict(recorded).to_dict()  # keys added since, at their defaults
    recipe = load_train_config(ROOT / "configs" / "train" / "default-model-td.toml",
                               []).to_dict()
    for section in ("data", "objective", "optim", "train", "selfplay"):
        assert recorded[section] == recipe[section], section
    assert {k: v for k, v in recorded["model"].items() if k != "value_head"} == {
        k: v for k, v in recipe["model"].items() if k != "value_head"}


def test_shipped_model_plays_a_seeded_game_deterministically(tmp_path):
    games = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["play", "--init", "default", "--games", "2", "--seed", "7",
                     "--max-moves", "150", "--out", str(out)]) == 0
        games.append((out / "games.csv").read_text())
        summary = json.loads((out / "summary.json").read_text())
        assert summary["config"]["init"] == str(default_init())
    assert games[0] == games[1]
    assert len(games[0].strip().splitlines()) == 3  # a header and a row per game


# -- the name `default` -------------------------------------------------------------------------


def test_init_options_named_default_mean_the_shipped_model(tmp_path):
    assert PlayConfig(init="runs/x").init == "runs/x"
    assert load_config(PlayConfig, None, ["init=default"]).init == str(default_init())
    assert load_config(PlayConfig, None, ["init=./default"]).init == "./default"
    cfg = load_train_config(None, ["train.mode=joint", "train.init=default"])
    assert cfg.train.init == str(default_init())


# -- lab2048 publish ----------------------------------------------------------------------------


TINY = dict(hidden=32, layers=1, heads=4, kv_heads=2, mlp=64)


def _run(root, seed=0, value_target=True):
    """A training run's layout: init/ (with value-target.json), metrics.jsonl."""
    torch.manual_seed(seed)
    model = Model(ModelConfig(**TINY, value_head=ValueHeadConfig(enabled=True)))
    init = save_init(model, root / "init", extra_json={"training-config.json": {"seed": seed}})
    if value_target:
        ValueTarget(gamma=0.99).save(init)
    (root / "metrics.jsonl").write_text(
        json.dumps({"kind": "val", "step": 4, "policy_agreement": 0.5}) + "\n"
        + json.dumps({"kind": "val", "step": 8, "policy_agreement": 0.6}) + "\n{torn")
    return root


def _summary(root):
    root.mkdir()
    (root / "summary.json").write_text(json.dumps({"kind": "evaluation", "seed": 3, "games": 4,
        "agents": {a: {"games": 4, "score": {"mean": m, "ci95": [m - 1, m + 1]}}
                   for a, m in (("policy", 9.0), ("greedy", 3.0))}}))
    return root


def test_publish_copies_the_init_and_writes_its_card(tmp_path):
    run = _run(tmp_path / "run")
    out = publish(PublishConfig(run_dir=str(run), evaluation=str(_summary(tmp_path / "ev")),
                                out=str(tmp_path / "model")))
    model = load_init(out)
    assert read_value_target(out).gamma == 0.99
    card = json.loads((out / CARD).read_text())
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["validation"]["step"] == 8  # the last validation; the torn line is skipped
    assert card["evaluation"] == {"seed": 3, "games": 4, "agents": {
        "policy": {"games": 4, "mean": 9.0, "ci95": [8.0, 10.0]},
        "greedy": {"games": 4, "mean": 3.0, "ci95": [2.0, 4.0]}}}
    assert (out / "evaluation.json").is_file() and not (out / "agents.png").exists()


def test_publish_refuses_without_overwrite_and_keeps_the_old_model(tmp_path, capsys):
    out = tmp_path / "model"
    publish(PublishConfig(run_dir=str(_run(tmp_path / "r1", seed=1)), out=str(out)))
    before = (out / "model.safetensors").read_bytes()
    second = _run(tmp_path / "r2", seed=2)
    assert main(["publish", str(second), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    (second / "init" / "model.safetensors").write_bytes(b"torn")  # a broken run: refused
    assert main(["publish", str(second), "--out", str(out), "--overwrite"]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    third = _run(tmp_path / "r3", seed=3)
    assert main(["publish", str(third), "--out", str(out), "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() != before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_publish_refuses_a_run_without_value_target_or_a_foreign_directory(tmp_path):
    with pytest.raises(UserError, match=r"value-target\.json"):
        publish(PublishConfig(run_dir=str(_run(tmp_path / "r", value_target=False)),
                              out=str(tmp_path / "m")))
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not a published model"):
        publish(PublishConfig(run_dir=str(_run(tmp_path / "r2")), out=str(other)), overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"


# -- data.max_tile ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    out = tmp_path_factory.mktemp("values")
    build_sidecar(default_dataset(), SidecarConfig(), output=out, workers=1)
    return out


def test_max_tile_keeps_exactly_the_steps_up_to_that_tile(sidecar):
    steps = np.concatenate([np.asarray(s) for s in Dataset(default_dataset()).shards])
    top = 1 << to_exponents(steps["board"], steps["tile_65536_mask"]).max(axis=1).astype(np.int64)
    every = open_source(DataConfig(sidecar=str(sidecar), val_fraction=0.25))
    limit = int(np.median(top))
    some = open_source(DataConfig(sidecar=str(sidecar), val_fraction=0.25, max_tile=limit))
    np.testing.assert_array_equal(some.train_rows, every.train_rows[top[every.train_rows]
                                                                    <= limit])
    assert np.all(top[some.val_rows] <= limit) and len(some.val_rows) > 0
    assert np.array_equal(some.val_runs, every.val_runs)  # the split by run is unchanged


@pytest.mark.parametrize("bad", [1, 3, -2, 100])
def test_max_tile_must_be_a_tile(bad):
    with pytest.raises(ValueError, match="max_tile"):
        DataConfig(max_tile=bad)
