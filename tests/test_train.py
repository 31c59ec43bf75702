"""Training: symmetries against the engine, the run split and sidecar join, targets and losses,
the three modes (value_only moves only the value head), resume == uninterrupted, the CLI and
its one-line errors. Tiny models on the embedded dataset."""

import json

import numpy as np
import pytest
import torch

from lab2048.cli import main
from lab2048.data.dataset import Dataset, default_dataset
from lab2048.data.sidecar import SidecarConfig, build_sidecar, open_sidecar
from lab2048.engine.batch import apply_moves, from_exponents, legal_masks, to_exponents
from lab2048.errors import UserError
from lab2048.model import Model, ModelConfig, load_init, save_init
from lab2048.train.config import DataConfig, from_dict, load_train_config
from lab2048.train.loader import Batch, Loader, augment, ev_classes, fit_edges
from lab2048.train.objectives import value_loss, value_target
from lab2048.train.trainer import lr_factor, train
from lab2048.value_transform import h, two_hot

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
TINY = {"hidden": 32, "layers": 1, "heads": 2, "kv_heads": 1, "mlp": 64,
        "value_head": {"enabled": True, "support": {"min": 0.0, "max": 300.0, "n": 151}}}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory):
    out = tmp_path_factory.mktemp("values")
    build_sidecar(default_dataset(), SidecarConfig(), output=out, workers=1)
    return out


def _cfg(sidecar, out, **train):
    return from_dict({"data": {"sidecar": str(sidecar), "val_rows": 256},
                      "model": TINY,
                      "optim": {"warmup_steps": 2, "lr": 3e-3},
                      "train": {"steps": 6, "batch_size": 32, "eval_every": 3,
                                "checkpoint_every": 3, "out": str(out), "progress": False,
                                **train}})


# -- symmetries ---------------------------------------------------------------------------------


def test_mirror_swaps_left_and_right_in_labels_values_and_legal_bits():
    tokens = np.arange(16, dtype=np.uint8)[None]
    b = Batch(tokens=tokens, legal=np.array([4 | 1], np.uint8),  # Up and Left legal
              move=np.array([LEFT]), branch_evs=np.array([[1.0, 0.0, 3.0, 0.0]], np.float32),
              return_raw=np.zeros(1, np.float32), return_scaled=np.zeros(1, np.float32))
    m = augment(b, np.array([1]))  # g = 1: mirror left-right
    assert m.tokens[0].tolist() == [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12]
    assert m.move.tolist() == [RIGHT]
    assert m.branch_evs[0].tolist() == [1.0, 0.0, 0.0, 3.0]
    assert int(m.legal[0]) == 8 | 1  # Up and Right
    assert augment(b, np.array([0])).move.tolist() == [LEFT]  # identity
    t = augment(b, np.array([4]))  # transpose: Up <-> Left, Down <-> Right
    assert t.move.tolist() == [UP] and t.branch_evs[0].tolist() == [3.0, 0.0, 1.0, 0.0]


def test_all_symmetries_agree_with_the_engine():
    rows = Dataset(default_dataset()).shards[0][::97]
    boards, masks = np.asarray(rows["board"]), np.asarray(rows["tile_65536_mask"])
    tokens = to_exponents(boards, masks)
    moves = rows["move_dir"].astype(np.int64)
    after, after_masks, rewards = apply_moves(boards, moves, masks)
    base = Batch(tokens, legal_masks(boards, masks), moves,
                 np.ascontiguousarray(rows["branch_evs"], np.float32),
                 np.zeros(len(rows), np.float32), np.zeros(len(rows), np.float32))
    for g in range(8):
        sym = np.full(len(rows), g)
        a = augment(base, sym)
        b2, m2 = from_exponents(a.tokens)
        assert (legal_masks(b2, m2) == a.legal).all(), g
        nb, nm, r = apply_moves(b2, a.move, m2)
        moved = augment(Batch(to_exponents(after, after_masks), base.legal, base.move,
                              base.branch_evs, base.return_raw, base.return_scaled), sym)
        assert (to_exponents(nb, nm) == moved.tokens).all(), g
        assert (r == rewards).all(), g
        # the teacher's move keeps its value under every symmetry
        assert np.array_equal(a.branch_evs[np.arange(len(sym)), a.move],
                              base.branch_evs[np.arange(len(sym)), base.move])


# -- data ---------------------------------------------------------------------------------------


def test_split_by_run_and_sidecar_join(sidecar):
    loader = Loader(DataConfig(sidecar=str(sidecar), val_fraction=0.25), 64, seed=0)
    assert len(np.intersect1d(loader.train_runs, loader.val_runs)) == 0
    assert len(loader.val_runs) == 6 and len(loader.train_runs) == 18
    steps = np.concatenate([np.asarray(s) for s in loader.ds.shards])
    values = np.concatenate(open_sidecar(default_dataset(), sidecar)[1])
    assert set(np.unique(steps["run_id"][loader.train_rows])) == set(loader.train_runs)
    assert not np.isin(steps["run_id"][loader.val_rows], loader.train_runs).any()
    rows = loader.batch_rows(5)
    batch = loader.gather(rows)
    assert np.array_equal(batch.return_raw, values["return_raw"][rows])
    assert np.array_equal(batch.move, steps["move_dir"][rows])
    # the order is a pure function of (seed, step): a fresh loader gives the same batches
    again = Loader(DataConfig(sidecar=str(sidecar), val_fraction=0.25), 64, seed=0)
    assert np.array_equal(again.train_batch(7).tokens, loader.train_batch(7).tokens)
    epoch = np.concatenate([loader.batch_rows(s) for s in range(loader.batches_per_epoch)])
    assert len(np.unique(epoch)) == len(epoch)  # an epoch visits each row at most once
    sql = Loader(DataConfig(sidecar=str(sidecar), where="id <= 10", val_where="id > 8"), 32, 0)
    assert sql.train_runs.max() <= 8 and set(sql.val_runs) <= {9, 10}


def test_bad_sidecar_is_refused(sidecar, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        Loader(DataConfig(sidecar=str(tmp_path)), 32, 0)
    with pytest.raises(UserError, match="embedded dataset has no sidecar"):
        Loader(DataConfig(), 32, 0)
    meta = json.loads((sidecar / "values.json").read_text())
    meta["shards"][0]["rows"] += 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "values.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="stale sidecar"):
        Loader(DataConfig(sidecar=str(bad)), 32, 0)


def test_ev_classes_and_edges():
    evs = np.array([[5.0, 3.0, 0.0, -900.0], [2.0, 2.0, 1.0, 0.5]], np.float32)
    legal = np.array([1 | 2 | 8, 15], np.uint8)
    edges = np.array([0.0, 1.0, 2.5, 10.0])
    cls = ev_classes(evs, legal, edges, failure_value=-800.0)
    winner = 2 + 3
    assert cls.tolist() == [[winner, 2 + 1, 0, 1], [winner, winner, 2 + 1, 2 + 1]]
    fitted = fit_edges(np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32),
                       np.full(500, 15, np.uint8), 4, -800.0)
    assert len(fitted) == 5 and fitted[0] == 0 and (np.diff(fitted) > 0).all()


def test_value_targets_are_transformed_once():
    cfg = ModelConfig.from_dict(TINY).value_head
    raw = torch.tensor([0.0, 10.0, 5000.0])
    scaled = h(raw * cfg.reward_scale)
    assert torch.equal(value_target(cfg, "return_scaled", raw, scaled), scaled)
    assert torch.allclose(value_target(cfg, "return_raw", raw, scaled), scaled)
    logits = torch.randn(3, cfg.support.n, dtype=torch.bfloat16)
    loss = value_loss(logits, cfg, scaled)
    expected = -(two_hot(scaled, cfg.support) * logits.float().log_softmax(-1)).sum(-1).mean()
    assert loss.dtype == torch.float32 and torch.allclose(loss, expected)


def test_schedules():
    cfg = from_dict({"optim": {"warmup_steps": 10, "decay_fraction": 0.2,
                               "min_lr_ratio": 0.1}}).optim
    f = [lr_factor(s, cfg, 100) for s in range(100)]
    assert f[0] == 0.1 and f[9] == 1.0 and f[50] == 1.0 and f[79] == 1.0
    assert f[99] == pytest.approx(0.1) and f[90] < 1.0
    cfg.schedule = "cosine"
    f = [lr_factor(s, cfg, 100) for s in range(100)]
    assert f[10] == pytest.approx(1.0) and f[55] < 0.6 and f[99] > 0.1 - 1e-9


# -- training -----------------------------------------------------------------------------------


def test_resume_matches_an_uninterrupted_run(sidecar, tmp_path):
    full = _cfg(sidecar, tmp_path / "full")
    train(full)
    cut = _cfg(sidecar, tmp_path / "cut")
    train(cut, stop_after=5)  # "killed" two steps after the checkpoint at step 3
    with pytest.raises(UserError, match="already exists"):
        train(cut)
    metrics = train(cut, resume=True)
    a = load_init(tmp_path / "full" / "init").state_dict()
    b = load_init(tmp_path / "cut" / "init").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    rb = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    drop = ("samples_per_s",)
    strip = [[{k: v for k, v in json.loads(r).items() if k not in drop} for r in x]
             for x in (ra, rb)]
    assert strip[0] == strip[1]
    assert metrics["value_r2"] == json.loads(ra[-1])["value_r2"]
    for name in ("config.json", "model.safetensors", "training-config.json"):
        assert (tmp_path / "full" / "init" / name).is_file()
    assert (tmp_path / "full" / "curves.png").stat().st_size > 1000
    with pytest.raises(UserError, match="another config"):
        train(_cfg(sidecar, tmp_path / "cut", steps=8), resume=True)


def test_value_only_with_frozen_trunk_changes_only_the_value_head(sidecar, tmp_path):
    torch.manual_seed(1)
    policy = {k: v for k, v in TINY.items() if k != "value_head"}
    save_init(Model(ModelConfig.from_dict(policy)), tmp_path / "policy")
    cfg = _cfg(sidecar, tmp_path / "run", mode="value_only", freeze_trunk=True,
               init=str(tmp_path / "policy"))
    train(cfg)
    before = load_init(tmp_path / "policy").state_dict()
    after = load_init(tmp_path / "run" / "init").state_dict()
    for k, v in after.items():
        if k.startswith("value."):
            continue
        assert torch.equal(before[k], v), k
    fresh = load_init(tmp_path / "policy", config=ModelConfig.from_dict(TINY)).state_dict()
    changed = [k for k in after if k.startswith("value.") and not torch.equal(after[k], fresh[k])]
    assert any(k.startswith("value.pre_mlp") for k in changed)
    assert any(k.startswith("value.out") for k in changed)


def test_joint_from_init_and_binned_ev_from_scratch(sidecar, tmp_path):
    cfg = _cfg(sidecar, tmp_path / "a", steps=3)
    train(cfg)
    joint = _cfg(sidecar, tmp_path / "b", steps=3, mode="joint", init=str(tmp_path / "a/init"))
    out = train(joint)
    assert 0 <= out["policy_agreement"] <= 1 and np.isfinite(out["value_mae"])
    binned = from_dict({**json.loads(json.dumps(cfg.to_dict())),
                        "model": {**TINY, "policy_head": "binned_ev", "ev_bins": 4,
                                  "value_head": {"enabled": True, "objective": "mse",
                                                 "pooling": "attention"}},
                        "train": {**cfg.to_dict()["train"], "out": str(tmp_path / "c")}})
    out = train(binned)
    assert (tmp_path / "c" / "init" / "tokenizer.json").is_file()
    assert load_init(tmp_path / "c" / "init").bins.bins == 4


def test_cli_train_and_one_line_errors(sidecar, tmp_path, capsys):
    toml = tmp_path / "t.toml"
    toml.write_text(f'[data]\nsidecar = "{sidecar}"\nval_rows = 128\n[model]\nhidden = 32\n'
                    'layers = 1\nheads = 2\nkv_heads = 1\nmlp = 64\n[train]\nsteps = 2\n'
                    'batch_size = 16\nprogress = false\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(toml), "--set", f"train.out={out}"]) == 0
    assert (out / "init" / "model.safetensors").is_file()
    assert "policy_agreement" in capsys.readouterr().out
    for args, message in [
        (["--set", "train.stepz=3"], "unknown key train.'stepz'"),
        (["--set", "train.steps=three"], "train.steps must be int"),
        (["--set", "model.hidden=33"], "must divide by heads"),
        (["--set", "train.mode='joint'"], "needs train.init"),
        (["--set", "data.dataset='/nonexistent'"], "/nonexistent: no such dataset"),
        (["--set", "oops=1"], "expected section.key=value"),
        (["--set", f"train.out={out}"], "already exists"),
    ]:
        code = main(["train", "--config", str(toml), "--set", f"train.out={tmp_path / 'x'}",
                     *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)


def test_shipped_configs_parse():
    from pathlib import Path

    for name in ("demo", "scratch", "cpu", "joint", "value_only"):
        cfg = load_train_config(Path(__file__).parents[1] / "configs/train" / f"{name}.toml")
        assert cfg.train.mode in ("scratch", "joint", "value_only")


def test_sigkill_then_resume_matches_an_uninterrupted_run(sidecar, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    toml = tmp_path / "t.toml"
    toml.write_text(f'[data]\nsidecar = "{sidecar}"\nval_rows = 32\n[model]\nhidden = 32\n'
                    'layers = 1\nheads = 2\nkv_heads = 1\nmlp = 64\n[train]\nsteps = 12\n'
                    'batch_size = 16\neval_every = 6\ncheckpoint_every = 3\nprogress = false\n')
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "lab2048", "train", "--config", str(toml),
                             "--set", f"train.out={killed}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["train", "--config", str(toml), "--set", f"train.out={killed}", "--resume"]) == 0
    whole = tmp_path / "whole"
    assert main(["train", "--config", str(toml), "--set", f"train.out={whole}"]) == 0
    a = load_init(whole / "init").state_dict()
    b = load_init(killed / "init").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
