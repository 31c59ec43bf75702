"""Training: symmetries against the engine, the run split and sidecar join, targets and losses,
the three modes (value_only moves only the value head), resume == uninterrupted, the CLI and
its one-line errors. Tiny models on the embedded dataset."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from lab2048.cli import main
from lab2048.data.dataset import Dataset, default_dataset
from lab2048.data.fingerprint import json_sha256
from lab2048.data.sidecar import SidecarConfig, build_sidecar, open_sidecar
from lab2048.engine.batch import (
    apply_moves,
    from_exponents,
    legal_masks,
    move_all,
    to_exponents,
)
from lab2048.errors import UserError
from lab2048.model import Model, ModelConfig, load_init, save_init
from lab2048.model.heads import legal_moves
from lab2048.train.config import DataConfig, from_dict, load_train_config
from lab2048.train.loader import (
    Batches,
    Spec,
    decode,
    ev_classes,
    exponent_legal_masks,
    fit_edges,
    make_batch,
    open_source,
    read_columns,
    symmetry,
    symmetry_moves,
    symmetry_per_move,
)
from lab2048.train.objectives import (
    one_ply_q,
    q_agreement,
    rank_loss,
    value_loss,
    value_target,
)
from lab2048.train.trainer import lr_factor, train
from lab2048.value_target import read_value_target
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
                                "threads": 1, **train}})


# -- symmetries, decoding, legality --------------------------------------------------------------


def test_mirror_swaps_left_and_right_in_labels_values_and_legal_bits():
    tokens = torch.arange(16)[None]
    move, evs = torch.tensor([LEFT]), torch.tensor([[1.0, 0.0, 3.0, 0.0]])
    legal = legal_moves(torch.tensor([4 | 1]))  # Up and Left legal
    g = torch.tensor([1])  # mirror left-right
    assert symmetry(tokens, g)[0].tolist() == [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14,
                                               13, 12]
    assert symmetry_moves(move, g).tolist() == [RIGHT]
    assert symmetry_per_move(evs, g)[0].tolist() == [1.0, 0.0, 0.0, 3.0]
    assert symmetry_per_move(legal, g)[0].tolist() == [True, False, False, True]  # Up, Right
    assert symmetry_moves(move, torch.tensor([0])).tolist() == [LEFT]  # identity
    t = torch.tensor([4])  # transpose: Up <-> Left, Down <-> Right
    assert symmetry_moves(move, t).tolist() == [UP]
    assert symmetry_per_move(evs, t)[0].tolist() == [3.0, 0.0, 1.0, 0.0]


def _columns(rows):
    boards = np.ascontiguousarray(rows["board"])
    masks = np.ascontiguousarray(rows["tile_65536_mask"])
    return {"board": torch.from_numpy(boards.view(np.int64)),
            "mask": torch.from_numpy(masks.view(np.int16)),
            "move": torch.from_numpy(np.ascontiguousarray(rows["move_dir"])),
            "branch_evs": torch.from_numpy(np.ascontiguousarray(rows["branch_evs"], np.float32)),
            "target": torch.zeros(len(rows)), "points": torch.zeros(len(rows))}


def test_decoding_and_legality_agree_with_the_engine():
    rows = np.concatenate([np.asarray(s) for s in Dataset(default_dataset()).shards])
    b = make_batch(_columns(rows), None)
    boards, masks = np.asarray(rows["board"]), np.asarray(rows["tile_65536_mask"])
    assert np.array_equal(b.tokens.numpy(), to_exponents(boards, masks))
    assert np.array_equal(b.legal.numpy(), legal_masks(boards, masks))
    # random boards with 2^16 tiles (mask bits) and every exponent, many equal neighbours
    rng = np.random.default_rng(0)
    e = rng.integers(0, 17, (50_000, 16)).astype(np.uint8)
    e[rng.random(e.shape) < 0.4] = 0
    e[:1000] = rng.choice([15, 16], (1000, 16))
    bb, mm = from_exponents(e)
    t = decode(torch.from_numpy(bb.view(np.int64)), torch.from_numpy(mm.view(np.int16)))
    assert np.array_equal(t.numpy(), e)
    assert np.array_equal(exponent_legal_masks(t).numpy(), legal_masks(bb, mm))


def test_all_symmetries_agree_with_the_engine():
    rows = Dataset(default_dataset()).shards[0][::97]
    boards, masks = np.asarray(rows["board"]), np.asarray(rows["tile_65536_mask"])
    moves = rows["move_dir"].astype(np.int64)
    after, after_masks, rewards = apply_moves(boards, moves, masks)
    base = make_batch(_columns(rows), None)
    after_cols = {**_columns(rows), "board": torch.from_numpy(after.view(np.int64)),
                  "mask": torch.from_numpy(after_masks.view(np.int16))}
    for g in range(8):
        sym = torch.full((len(rows),), g)
        a = make_batch(_columns(rows), sym)
        b2, m2 = from_exponents(a.tokens.numpy().astype(np.uint8))
        assert (legal_masks(b2, m2) == a.legal.numpy()).all(), g
        legal_mapped = symmetry_per_move(legal_moves(base.legal), sym)
        assert torch.equal(legal_moves(a.legal), legal_mapped), g
        nb, nm, r = apply_moves(b2, a.move.numpy(), m2)
        moved = make_batch(after_cols, sym)
        assert (to_exponents(nb, nm) == moved.tokens.numpy()).all(), g
        assert (r == rewards).all(), g
        # the teacher's move keeps its value under every symmetry
        i = torch.arange(len(sym))
        assert torch.equal(a.branch_evs[i, a.move], base.branch_evs[i, base.move])


# -- data ---------------------------------------------------------------------------------------


def test_split_by_run_and_sidecar_join(sidecar):
    src = open_source(DataConfig(sidecar=str(sidecar), val_fraction=0.25))
    assert len(np.intersect1d(src.train_runs, src.val_runs)) == 0
    assert len(src.val_runs) == 6 and len(src.train_runs) == 18
    steps = np.concatenate([np.asarray(s) for s in src.ds.shards])
    values = np.concatenate(open_sidecar(default_dataset(), sidecar)[1])
    assert set(np.unique(steps["run_id"][src.train_rows])) == set(src.train_runs)
    assert not np.isin(steps["run_id"][src.val_rows], src.train_runs).any()
    cols = read_columns(src, src.train_rows, Spec())
    batches = Batches(cols, 64, seed=0, device=torch.device("cpu"))
    idx, _ = batches.rows(5)
    rows = src.train_rows[idx.numpy()]
    unaugmented = make_batch({k: v[idx] for k, v in cols.items()}, None)
    assert np.array_equal(unaugmented.points.numpy(), values["return_raw"][rows])
    assert np.array_equal(unaugmented.target.numpy(), values["return_scaled"][rows])
    assert np.array_equal(unaugmented.move.numpy(), steps["move_dir"][rows])
    # the order is a pure function of (seed, step): fresh batches, the same; host placement
    # (pinned buffers, copies one step ahead) gives the same batches as device placement
    again = Batches(cols, 64, seed=0, device=torch.device("cpu"), placement="host")
    for step in (7, 8, 3, 3):
        a, b = again.get(step), batches.get(step)
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.move, b.move)
        assert torch.equal(a.legal, b.legal) and torch.equal(a.target, b.target)
    epoch = torch.cat([batches.rows(s)[0] for s in range(batches.batches_per_epoch)])
    assert len(torch.unique(epoch)) == len(epoch)  # an epoch visits each row at most once
    # rank r of W: the r-th slice of the same global batch
    halves = [Batches(cols, 64, 0, torch.device("cpu"), rank=r, world=2).get(9) for r in (0, 1)]
    whole = batches.get(9)
    assert torch.equal(torch.cat([h.tokens for h in halves]), whole.tokens)
    assert torch.equal(torch.cat([h.move for h in halves]), whole.move)
    sql = open_source(DataConfig(sidecar=str(sidecar), where="id <= 10", val_where="id > 8"))
    assert sql.train_runs.max() <= 8 and set(sql.val_runs) <= {9, 10}


def test_afterstate_columns(sidecar):
    src = open_source(DataConfig(sidecar=str(sidecar)))
    rows = src.train_rows[:3000]
    gamma = src.meta["gamma"]
    spec = Spec(value_target="return_scaled", afterstate=True, gamma=gamma)
    cols = read_columns(src, rows, spec)
    steps = np.concatenate([np.asarray(s) for s in src.ds.shards])[rows]
    values = np.concatenate(src.values)[rows]
    after, after_masks, rewards = apply_moves(steps["board"], steps["move_dir"].astype(np.int64),
                                              steps["tile_65536_mask"])
    b = make_batch(cols, None)
    assert np.array_equal(b.after.numpy(), to_exponents(after, after_masks))
    assert np.array_equal(b.tokens.numpy(), to_exponents(steps["board"], steps["tile_65536_mask"]))
    # G_{t+1} = (G_t - r_t) / gamma: the next row's return where the run goes on
    g_next = (values["return_raw"].astype(np.float64) - rewards) / gamma
    assert np.allclose(b.points.numpy(), g_next, rtol=1e-6)
    same_run = steps["run_id"][1:] == steps["run_id"][:-1]
    assert np.allclose(b.points.numpy()[:-1][same_run], values["return_raw"][1:][same_run],
                       rtol=1e-4, atol=0.5)
    assert np.allclose(b.target.numpy(), h(g_next), rtol=1e-6)


def test_bad_sidecar_is_refused(sidecar, tmp_path):
    with pytest.raises(UserError, match="no such file"):
        open_source(DataConfig(sidecar=str(tmp_path)))
    with pytest.raises(UserError, match="embedded dataset has no sidecar"):
        open_source(DataConfig())
    meta = json.loads((sidecar / "values.json").read_text())
    meta["shards"][0]["rows"] += 1
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "values.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="edited after it was written"):
        open_source(DataConfig(sidecar=str(bad)))
    meta.pop("checksum")
    (bad / "values.json").write_text(json.dumps({**meta, "checksum": json_sha256(meta)}))
    with pytest.raises(UserError, match="stale sidecar"):
        open_source(DataConfig(sidecar=str(bad)))


def test_ev_classes_and_edges():
    evs = torch.tensor([[5.0, 3.0, 0.0, -900.0], [2.0, 2.0, 1.0, 0.5]])
    legal = torch.tensor([1 | 2 | 8, 15])
    edges = torch.tensor([0.0, 1.0, 2.5, 10.0], dtype=torch.float64)
    cls = ev_classes(evs, legal, edges, failure_value=-800.0)
    winner = 2 + 3
    assert cls.tolist() == [[winner, 2 + 1, 0, 1], [winner, winner, 2 + 1, 2 + 1]]
    fitted = fit_edges(torch.from_numpy(np.random.default_rng(0).normal(size=(500, 4))).float(),
                       torch.full((500,), 15), 4, -800.0)
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
    with (tmp_path / "cut" / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "train", "step": 4, "lo')  # torn by the kill: dropped on resume
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
    for name in ("config.json", "model.safetensors", "training-config.json",
                 "value-target.json"):
        assert (tmp_path / "full" / "init" / name).is_file()
    meta = json.loads((sidecar / "values.json").read_text())
    target = read_value_target(tmp_path / "full" / "init")
    assert (target.gamma, target.reward_scale, target.epsilon) == (
        meta["gamma"], meta["reward_scale"], meta["epsilon"])
    assert (target.kind, target.state, target.sidecar) == ("monte_carlo", "board",
                                                           meta["checksum"])
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
        (["--set", "train.stepz=3"], "unknown key 'train.stepz'"),
        (["--set", "train.steps=three"], "train.steps must be int"),
        (["--set", "model.hidden=33"], "must divide by heads"),
        (["--set", "train.mode='joint'"], "needs train.init"),
        (["--set", "data.dataset='/nonexistent'"], "/nonexistent: no such dataset"),
        (["--set", "oops=1"], "unknown key 'oops'"),
        (["--set", "train.device='tpu'"], "device must be auto, cpu, cuda or cuda:N"),
        (["--set", "optim.lr=inf"], "optim.lr = inf is not a finite number"),
        (["--set", "model.value_head.epsilon=nan"], "model.value_head.epsilon = nan is not a "
                                                    "finite number"),
        (["--set", "objective.target_kind='td'", "--set", "model.value_head.enabled=true"],
         "holds monte_carlo returns, objective.target_kind is 'td'"),
        (["--set", f"train.out={out}"], "already exists"),
    ]:
        code = main(["train", "--config", str(toml), "--set", f"train.out={tmp_path / 'x'}",
                     *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)


def test_shipped_configs_parse():
    from pathlib import Path

    for name in ("demo", "scratch", "cpu", "gpu", "joint", "value_only"):
        cfg = load_train_config(Path(__file__).parents[1] / "configs/train" / f"{name}.toml")
        assert cfg.train.mode in ("scratch", "joint", "value_only")


def test_sigkill_then_resume_matches_an_uninterrupted_run(sidecar, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    toml = tmp_path / "t.toml"
    toml.write_text(f'[data]\nsidecar = "{sidecar}"\nval_rows = 32\n[model]\nhidden = 32\n'
                    'layers = 1\nheads = 2\nkv_heads = 1\nmlp = 64\n[train]\nsteps = 12\n'
                    'batch_size = 16\neval_every = 6\ncheckpoint_every = 3\nprogress = false\n'
                    'threads = 1\n')
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


def test_sibling_afterstates_are_the_engines_moves_under_every_symmetry(sidecar):
    src = open_source(DataConfig(sidecar=str(sidecar)))
    rows = src.train_rows[::7][:4000]
    spec = Spec(value_target="return_scaled", afterstate=True, siblings=True,
                gamma=src.meta["gamma"])
    cols = read_columns(src, rows, spec)
    sym = torch.arange(len(rows)) % 8
    b = make_batch(cols, sym)
    boards, masks = from_exponents(b.tokens.numpy().astype(np.uint8))
    moves = move_all(boards, masks)  # the engine on the transformed boards
    want = to_exponents(moves.boards.reshape(-1), moves.masks.reshape(-1)).reshape(-1, 4, 16)
    legal = legal_moves(b.legal).numpy()
    assert np.array_equal(b.siblings.numpy()[legal], want[legal])
    assert np.array_equal(b.sibling_rewards.numpy()[legal], moves.rewards[legal])
    assert np.array_equal(b.after.numpy(), want[np.arange(len(rows)), b.move.numpy()])


def test_ranking_loss_golden_values():
    rewards = torch.tensor([[0.0, 4.0, 8.0, 0.0]])
    values = torch.tensor([[100.0, 90.0, 80.0, 500.0]])
    q = one_ply_q(rewards, values, 0.5)
    assert torch.equal(q, torch.tensor([[50.0, 49.0, 48.0, 250.0]]))
    legal = torch.tensor([0b0111])  # Right is illegal: its large Q must not count
    z = torch.tensor([50.0, 49.0, 48.0]) / 10
    want = -(z[1] - torch.logsumexp(z, 0))
    assert torch.isclose(rank_loss(q, legal, torch.tensor([1]), 10.0), want)
    assert q_agreement(q, legal, torch.tensor([0])).item() == 1.0
    assert q_agreement(q, torch.tensor([0b1111]), torch.tensor([0])).item() == 0.0


def test_ranking_loss_trains_and_reports_the_value_agreement(sidecar, tmp_path):
    cfg = _cfg(sidecar, tmp_path / "run", steps=4, eval_every=4, checkpoint_every=4)
    cfg.objective.value_state = "afterstate"
    cfg.objective.rank_weight = 1.0
    train(cfg)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["rank_loss"]) for r in records if r["kind"] == "train")
    val = [r for r in records if r["kind"] == "val"][-1]
    assert 0 <= val["value_agreement"] <= 1 and np.isfinite(val["rank_loss"])
    assert read_value_target(tmp_path / "run" / "init").state == "afterstate"
    with pytest.raises(UserError, match=r"rank_weight needs objective\.value_state"):
        train(from_dict({**_cfg(sidecar, tmp_path / "b").to_dict(),
                         "objective": {"rank_weight": 1.0}}))


# -- the value target's provenance, afterstates, one forward path ------------------------------


def test_sidecar_gamma_and_kind_are_checked_and_recorded(sidecar, tmp_path):
    with pytest.raises(UserError, match=r"sidecar's gamma is 0\.997, objective\.gamma is 0\.99"):
        train(from_dict({**_cfg(sidecar, tmp_path / "a").to_dict(),
                         "objective": {"gamma": 0.99}}))
    nstep = tmp_path / "nstep"
    nstep.mkdir()
    for f in sidecar.iterdir():
        (nstep / f.name).symlink_to(f)
    meta = json.loads((sidecar / "values.json").read_text())
    (nstep / "values.json").unlink()
    forged = {k: v for k, v in meta.items() if k != "checksum"} | {"kind": "n_step", "n": 5}
    (nstep / "values.json").write_text(json.dumps({**forged, "checksum": json_sha256(forged)}))
    cfg = _cfg(nstep, tmp_path / "b", steps=2, eval_every=2, checkpoint_every=2)
    with pytest.raises(UserError, match=r"holds n_step returns, objective\.target_kind "
                                        r"is 'monte_carlo'"):
        train(cfg)
    cfg.objective.target_kind = "n_step"
    cfg.objective.value_state = "afterstate"
    train(cfg)
    target = read_value_target(tmp_path / "b" / "init")
    assert (target.kind, target.n, target.state) == ("n_step", 5, "afterstate")
    assert target.sidecar == json_sha256(forged) != meta["checksum"]


def test_compile_applies_in_every_mode(sidecar, tmp_path, monkeypatch):
    calls = []

    def fake_compile(model):  # stands for torch.compile: records what the loop calls
        def forward(*args, **kwargs):
            calls.append(torch.is_grad_enabled())
            return model(*args, **kwargs)
        return forward

    monkeypatch.setattr(torch, "compile", fake_compile)
    train(_cfg(sidecar, tmp_path / "a", steps=3, compile=True))
    torch.manual_seed(1)
    save_init(Model(ModelConfig.from_dict(TINY)), tmp_path / "init")
    for name, extra in [("value_only", {"mode": "value_only", "init": str(tmp_path / "init"),
                                        "freeze_trunk": True}),
                        ("weight0", {})]:
        calls.clear()
        cfg = _cfg(sidecar, tmp_path / name, steps=3, compile=True, **extra)
        cfg.objective.policy_weight = 0.0 if name == "weight0" else 1.0
        cfg.objective.value_state = "afterstate"
        train(cfg)
        assert calls.count(True) == 3, name  # every training step went through it
        assert calls.count(False) == 1, name  # and the validation (one batch)


# -- reliability --------------------------------------------------------------------------------


def test_a_non_finite_loss_stops_the_run_keeping_the_last_checkpoint(sidecar, tmp_path,
                                                                     monkeypatch):
    import lab2048.train.trainer as trainer

    real, steps = trainer.losses, []

    def losses(*args, **kwargs):
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():
            steps.append(1)
            if len(steps) >= 5:  # step 5 (after the checkpoint at 3) blows up
                out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer, "losses", losses)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="step 6: loss nan") as e:
        train(_cfg(sidecar, out))
    assert "\n" not in str(e.value) and "step 3" in str(e.value)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    init = load_init(out / "init").state_dict()
    assert state["step"] == 3
    assert all(torch.equal(init[k], state["model"][k]) for k in init)
    assert all(torch.isfinite(v).all() for v in init.values())


def test_damaged_checkpoint_and_metrics_are_one_line_errors(sidecar, tmp_path):
    cfg = _cfg(sidecar, tmp_path / "run", steps=3)
    train(cfg, stop_after=3)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    good = ckpt.read_bytes()
    for damaged in (good[:len(good) // 2], np.random.default_rng(0).bytes(5000), b""):
        ckpt.write_bytes(damaged)
        with pytest.raises(UserError, match="not a readable checkpoint") as e:
            train(cfg, resume=True)
        assert "\n" not in str(e.value)
    ckpt.write_bytes(good)
    shutil.rmtree(tmp_path / "run" / "init")  # as if killed between the two renames
    train(cfg, resume=True)
    init = load_init(tmp_path / "run" / "init").state_dict()
    weights = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(init[k], weights[k]) for k in init)
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text("not json\n" + metrics.read_text())
    with pytest.raises(UserError, match="line 1 is not a metrics record"):
        train(cfg, resume=True)


def test_a_full_disk_leaves_init_and_checkpoint_consistent(sidecar, tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    import lab2048.train.trainer as trainer

    real_write, saves = Path.write_bytes, []

    def write_bytes(path, data):  # the second checkpoint finds the disk full
        if path.name == "checkpoint.pt":
            saves.append(path)
            if len(saves) == 2:
                real_write(path, bytes(data[:100]))
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="no space left on the device") as e:
        train(_cfg(sidecar, out))
    assert "\n" not in str(e.value)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    init = load_init(out / "init").state_dict()
    assert state["step"] == 3 and all(torch.equal(init[k], state["model"][k]) for k in init)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "curves.png", "init",
                                                     "metrics.jsonl"]
    # metrics.jsonl: a failed append is cut back, never left half-written
    real_open = open

    class Full:
        def __init__(self, f):
            self.f = f

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[:7])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", real_write)
    monkeypatch.setattr(trainer, "open", lambda p, mode="r", *a, **k: Full(real_open(p, mode)),
                        raising=False)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(UserError, match=r"metrics\.jsonl: cannot write"):
        train(_cfg(sidecar, out), resume=True)
    after = (out / "metrics.jsonl").read_text()
    assert after == "".join(line + "\n" for line in before.splitlines()
                            if json.loads(line)["step"] <= 3)


# -- several processes --------------------------------------------------------------------------


def test_torchrun_two_processes_resume_and_equal_one_process(sidecar, tmp_path):
    """Two gloo processes continue a one-process run from its checkpoint; the result equals
    one process with the same global batch."""
    import subprocess
    import sys

    toml = tmp_path / "t.toml"
    toml.write_text(f'[data]\nsidecar = "{sidecar}"\nval_rows = 64\n[model]\nhidden = 32\n'
                    'layers = 1\nheads = 2\nkv_heads = 1\nmlp = 64\n[model.value_head]\n'
                    'enabled = true\n[train]\nsteps = 4\nbatch_size = 32\neval_every = 4\n'
                    'checkpoint_every = 2\nprogress = false\nthreads = 1\n')
    whole, two = tmp_path / "whole", tmp_path / "two"
    assert main(["train", "--config", str(toml), "--set", f"train.out={whole}"]) == 0
    train(load_train_config(toml, [f"train.out={two}"]), stop_after=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc-per-node", "2", "-m", "lab2048", "train", "--config",
                           str(toml), "--set", f"train.out={two}", "--resume"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count(f"{two}:") == 1  # rank 0 reports
    a, b = load_init(whole / "init").state_dict(), load_init(two / "init").state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
    ra = [json.loads(r) for r in (whole / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(r) for r in (two / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in ra] == [(r["kind"], r["step"]) for r in rb]
    for x, y in zip(ra, rb, strict=True):
        for k in ("loss", "value_loss", "policy_agreement", "value_r2"):
            if k in x:
                assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-5), (x["step"], k)
