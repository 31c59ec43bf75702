"""`lab2048 annotate`: alignment with the steps shards, the outputs against the model and the
engine, the manifest and the refusal of stale or mismatched annotations, resume, --where and
--no-value-sidecar."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from annotated import GAMMA, sidecar, small_dataset, tiny_init

from lab2048.annotate.config import AnnotateConfig
from lab2048.annotate.files import (
    MANIFEST,
    NOT_ANNOTATED,
    VALUE_DTYPE,
    open_annotations,
    policy_dtype,
)
from lab2048.cli import main
from lab2048.data.dataset import Dataset
from lab2048.engine import Board
from lab2048.engine.batch import legal_masks, to_exponents
from lab2048.errors import UserError
from lab2048.value_target import DEFAULT_GAMMA


def _annotate(init, dataset, out, *extra):
    return main(["annotate", "--init", str(init), "--dataset", str(dataset), "--out", str(out),
                 "--threads", "1", "--batch", "256", *extra])


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A 3-shard dataset, a tiny categorical-value init (gamma 0.99) and its annotations."""
    root = tmp_path_factory.mktemp("annotate")
    ds = small_dataset(root / "ds")
    init = tiny_init(root / "init")
    assert _annotate(init, ds, root / "ann") == 0
    return ds, init, root / "ann"


def test_rows_align_with_the_steps_and_hold_the_model_outputs(made, one_torch_thread):
    ds_path, init, ann_dir = made
    ds = Dataset(ds_path)
    ann = open_annotations(ds, ann_dir)
    assert len(ds.shards) == 3 and [len(p) for p in ann.policy] == [len(s) for s in ds.shards]
    assert [len(v) for v in ann.value] == [len(b) for b in ann.bins] == [len(s) for s in
                                                                          ds.shards]
    from lab2048.model import load_init

    model = load_init(init)
    for steps, pol, val, bins in zip(ds.shards, ann.policy, ann.value, ann.bins, strict=True):
        assert pol.dtype == policy_dtype("action_policy") and val.dtype == VALUE_DTYPE
        assert bins.dtype == np.float16 and bins.shape == (len(steps), 41)
        np.testing.assert_array_equal(pol["run_id"], steps["run_id"])
        np.testing.assert_array_equal(val["step_index"], steps["step_index"])
        np.testing.assert_array_equal(pol["teacher_move"], steps["move_dir"])
        legal = legal_masks(np.ascontiguousarray(steps["board"]),
                            np.ascontiguousarray(steps["tile_65536_mask"]))
        np.testing.assert_array_equal(pol["legal"], legal)
        bits = (legal[:, None] >> np.arange(4)) & 1
        probs = np.asarray(pol["move_probs"])
        assert np.all(probs[bits == 0] == 0)
        np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
        np.testing.assert_array_equal(pol["model_move"], probs.argmax(1))
        assert np.all(np.isnan(val["q"]) == (bits == 0))  # Q exactly where the move is legal
        np.testing.assert_allclose(np.asarray(bins, np.float64).sum(1), 1, atol=2e-2)
        pred = model.predict(to_exponents(np.ascontiguousarray(steps["board"])), legal)
        np.testing.assert_allclose(val["value"], pred.value.numpy(), rtol=1e-4)
        np.testing.assert_allclose(probs, pred.move_probs.numpy(), atol=1e-5)


def test_q_is_reward_plus_gamma_times_the_expected_value_after_the_spawn(made):
    """Q(s,a) = r + γ Σ_spawns p V(child), V = 0 on a dead child, computed here one board at a
    time with the Board API and the model's own predictions."""
    ds_path, init, ann_dir = made
    ds = Dataset(ds_path)
    ann = open_annotations(ds, ann_dir)
    from lab2048.model import load_init

    model = load_init(init)
    for shard, row in ((0, 0), (1, 120), (2, 262)):
        board = Board(int(ds.shards[shard]["board"][row]))
        q = ann.value[shard]["q"][row]
        for move in board.legal_moves():
            res = board.move(move)
            total = 0.0
            for cell in res.board.empty_cells:
                for tile, p in ((1, 0.9), (2, 0.1)):
                    child = res.board.with_tile(cell, tile)
                    if not child.is_game_over:
                        exps = np.array([child.exponents], np.uint8)
                        v = model.predict(exps, np.array([15], np.uint8)).value.item()
                        total += p / len(res.board.empty_cells) * v
            assert q[int(move)] == pytest.approx(res.reward + GAMMA * total, rel=1e-4)


def test_manifest_records_shapes_model_dataset_and_gamma(made):
    ds_path, init, ann_dir = made
    manifest = json.loads((ann_dir / MANIFEST).read_text())
    sha = hashlib.sha256((init / "model.safetensors").read_bytes()).hexdigest()
    assert manifest["model"]["weights_fingerprint"] == f"sha256:{sha}"
    assert manifest["model"]["config"]["value_head"]["support"]["n"] == 41
    assert manifest["gamma"] == GAMMA and manifest["gamma_source"] == "init"
    assert manifest["files"]["value_bins"] == {"dtype": "<f2", "shape": [-1, 41]}
    assert eval(manifest["files"]["value"]["dtype"]) == VALUE_DTYPE.descr
    from lab2048.data.fingerprint import fingerprint

    for entry, steps in zip(manifest["shards"], Dataset(ds_path).shards, strict=True):
        assert entry["rows"] == len(steps) == entry["annotated_rows"]
        assert entry["steps_fingerprint"] == fingerprint(steps)
        assert set(entry["files"]) == {"annotations", "value", "value_bins"}


def test_stale_or_mismatched_annotations_are_refused(made, tmp_path):
    ds_path, _, ann_dir = made
    ds2, ann2 = tmp_path / "ds", tmp_path / "ann"
    shutil.copytree(ds_path, ds2)
    shutil.copytree(ann_dir, ann2)
    open_annotations(ds2, ann2)
    with pytest.raises(UserError, match="fingerprint differs"):  # a swapped annotation file
        arr = np.load(ann2 / "annotations-value-00001.npy")
        arr["value"][3] += 1
        np.save(ann2 / "annotations-value-00001.npy", arr)
        open_annotations(ds2, ann2)
    shutil.rmtree(ann2)
    shutil.copytree(ann_dir, ann2)
    steps = np.load(ds2 / "steps-00002.npy")
    steps["branch_evs"][5] += 1.0  # a changed dataset
    np.save(ds2 / "steps-00002.npy", steps)
    with pytest.raises(UserError, match="changed since it was annotated"):
        open_annotations(ds2, ann2)
    resharded = small_dataset(tmp_path / "resharded", shard_rows=700)
    with pytest.raises(UserError, match="made for shards"):
        open_annotations(resharded, ann_dir)
    (ann2 / "annotations-00000.npy").unlink()
    with pytest.raises(UserError, match="no such file"):
        open_annotations(ds_path, ann2)
    with pytest.raises(UserError, match="make annotations with `lab2048 annotate"):
        open_annotations(ds_path, tmp_path)


def test_resume_finishes_an_interrupted_run_with_identical_files(made, tmp_path, monkeypatch):
    ds_path, init, ann_dir = made
    from lab2048.annotate import run as run_mod

    real, calls = run_mod._annotate_rows, []

    def interrupted(*args, **kwargs):  # Ctrl-C while the second shard is in progress
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_mod, "_annotate_rows", interrupted)
    out = tmp_path / "ann"
    assert _annotate(init, ds_path, out) == 130
    monkeypatch.setattr(run_mod, "_annotate_rows", real)
    manifest = json.loads((out / MANIFEST).read_text())
    assert [bool(s["files"]) for s in manifest["shards"]] == [True, False, False]
    with pytest.raises(UserError, match=r"incomplete \(1 of 3 shards"):
        open_annotations(ds_path, out)
    assert _annotate(init, ds_path, out) == 2  # exists: neither --resume nor --overwrite
    assert _annotate(init, ds_path, out, "--resume", "--no-value-sidecar") == 2  # other settings
    before = (out / "annotations-00000.npy").stat().st_mtime_ns
    assert _annotate(init, ds_path, out, "--resume") == 0
    assert (out / "annotations-00000.npy").stat().st_mtime_ns == before  # not redone
    for p in sorted(ann_dir.glob("annotations-*.npy")):
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name
    open_annotations(ds_path, out)


def test_no_value_sidecar_and_where(made, tmp_path):
    ds_path, init, _ = made
    out = tmp_path / "ann"
    assert _annotate(init, ds_path, out, "--no-value-sidecar", "--where", "id = 2") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "annotation_manifest.json", "annotations-00000.npy", "annotations-00001.npy",
        "annotations-00002.npy"]
    ann = open_annotations(ds_path, out)
    assert ann.value is None and ann.bins is None and ann.gamma is None
    pol = np.concatenate(ann.policy)
    picked = pol["run_id"] == 2
    assert np.all(pol["model_move"][~picked] == NOT_ANNOTATED)
    assert np.all(np.isnan(pol["move_probs"][~picked]))
    assert np.all(pol["model_move"][picked] < 4) and picked.sum() == 453
    # --overwrite replaces annotations, here in the dataset directory itself, and nothing else
    ds_copy = tmp_path / "ds"
    shutil.copytree(ds_path, ds_copy)
    assert _annotate(init, ds_copy, ds_copy, "--no-value-sidecar") == 0
    assert _annotate(init, ds_copy, ds_copy, "--overwrite") == 0
    assert len(list(ds_copy.glob("steps-*.npy"))) == 3
    assert open_annotations(ds_copy).value is not None


def test_gamma_comes_from_the_init_and_a_conflicting_flag_is_one_line(made, tmp_path, capsys):
    ds_path, init, _ = made
    assert _annotate(init, ds_path, tmp_path / "a", "--gamma", "0.9") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained for gamma 0.99, not 0.9" in err
    bare = tiny_init(tmp_path / "bare", gamma=None)  # an init that records no value target
    assert _annotate(bare, ds_path, tmp_path / "b", "--gamma", "0.95",
                     "--where", "id = 1") == 0
    manifest = json.loads((tmp_path / "b" / MANIFEST).read_text())
    assert manifest["gamma"] == 0.95 and manifest["gamma_source"] == "flag"
    capsys.readouterr()
    sc = sidecar(ds_path, tmp_path / "values", gamma=0.98)  # no flag: the sidecar's gamma
    assert _annotate(bare, ds_path, tmp_path / "c", "--sidecar", str(sc), "--where",
                     "id = 1") == 0
    manifest = json.loads((tmp_path / "c" / MANIFEST).read_text())
    assert manifest["gamma"] == 0.98 and manifest["gamma_source"] == "sidecar"
    assert "note" not in capsys.readouterr().err
    assert _annotate(bare, ds_path, tmp_path / "d", "--where", "id = 1") == 0  # the default
    manifest = json.loads((tmp_path / "d" / MANIFEST).read_text())
    assert manifest["gamma"] == DEFAULT_GAMMA and manifest["gamma_source"] == "default"
    assert "records no value target; 1-ply Q uses gamma 0.997" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--init DIR or --server"):
        AnnotateConfig()
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\], got 0"):  # 0 is no "unset"
        AnnotateConfig(init=str(init), gamma=0.0)


def test_binned_ev_and_mse_heads(tmp_path):
    ds = small_dataset(tmp_path / "ds", runs=(15,))
    init = tiny_init(tmp_path / "init", objective="mse", policy_head="binned_ev")
    assert _annotate(init, ds, tmp_path / "ann") == 0
    ann = open_annotations(ds, tmp_path / "ann")
    assert ann.bins is None and ann.value is not None
    pol = ann.policy[0]
    assert pol.dtype == policy_dtype("binned_ev")
    assert np.all((pol["p_winner"] >= 0) & (pol["p_winner"] <= 1))
    assert np.all(pol["bin_class"] < 7)
    # the move probabilities are the softmax of log P(WINNER) over the legal moves
    legal = (pol["legal"][:, None] >> np.arange(4)) & 1
    w = np.where(legal == 1, pol["p_winner"], 0)
    np.testing.assert_allclose(pol["move_probs"], w / w.sum(1, keepdims=True), atol=1e-5)


def test_through_the_inference_server_matches_in_process(made, tmp_path, one_torch_thread):
    import asyncio
    import threading

    from lab2048.model import load_init
    from lab2048.serve.server import start_server

    ds_path, init, ann_dir = made
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    running = asyncio.run_coroutine_threadsafe(
        start_server(load_init(init), "127.0.0.1:0", max_wait_ms=1, init_dir=init), loop
    ).result(60)
    try:
        assert main(["annotate", "--server", running.address, "--init", str(init), "--dataset",
                     str(ds_path), "--out", str(tmp_path / "ann"), "--batch", "256"]) == 0
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(0), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    local, remote = open_annotations(ds_path, ann_dir), open_annotations(ds_path, tmp_path / "ann")
    assert remote.manifest["model"]["weights_fingerprint"] == \
        local.manifest["model"]["weights_fingerprint"]
    assert remote.manifest["gamma"] == GAMMA
    for a, b in zip(local.policy, remote.policy, strict=True):
        np.testing.assert_allclose(a["move_probs"], b["move_probs"], atol=1e-5)
    for a, b in zip(local.value, remote.value, strict=True):
        np.testing.assert_allclose(a["value"], b["value"], rtol=1e-4)
        np.testing.assert_allclose(a["q"], b["q"], rtol=1e-4)
    for a, b in zip(local.bins, remote.bins, strict=True):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), atol=2e-3)
