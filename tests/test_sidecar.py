"""Value sidecar: golden values by hand, the return identities, sharding independence, the
65536 merge, truncated runs, and refusal of every kind of bad input."""

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lab2048.data.dataset import DatasetWriter, Run, make_rows
from lab2048.data.sidecar import VALUES_DTYPE, SidecarConfig, build_sidecar, open_sidecar
from lab2048.engine import Board, legal_masks
from lab2048.errors import UserError
from lab2048.value_transform import h
from synthetic import engine_run, write_engine_dataset


def _hand_run(grids_and_moves, run_id=1):
    """(Run, rows) from boards given as tile grids and the moves played on them."""
    boards = [Board.from_tiles(g) for g, _ in grids_and_moves]
    bits = np.array([b.bits for b in boards], np.uint64)
    masks = np.array([b.mask for b in boards], np.uint16)
    rewards = [b.move(d).reward for b, (_, d) in zip(boards, grids_and_moves, strict=True)]
    rows = make_rows(run_id=run_id, seed=0, boards=bits, masks=masks,
                     moves=np.array([d for _, d in grids_and_moves], np.uint8),
                     ev_legal=legal_masks(bits, masks),
                     max_rank=np.array([max(b.exponents) for b in boards], np.uint8),
                     board_eval=np.zeros(len(boards), np.int32))
    last = boards[-1].move(grids_and_moves[-1][1]).board
    return Run(run_id, 0, len(rows), sum(rewards), last.highest_tile), rows


Z = [0, 0, 0, 0]
UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
# rewards 4 (2+2), 0 (a slide), 4 (2+2 in the last column)
HAND = [([[2, 2, 0, 0], Z, Z, Z], LEFT),
        ([[4, 2, 0, 0], Z, Z, Z], RIGHT),
        ([[0, 0, 4, 2], Z, Z, [0, 0, 0, 2]], DOWN)]


def _write(root, runs, shard_rows=1 << 20, overwrite=False):
    with DatasetWriter(root, session={"source": "test"}, shard_rows=shard_rows,
                       overwrite=overwrite) as w:
        for run, rows in runs:
            w.add_run(run, rows)


def _values(root):
    return np.concatenate(open_sidecar(root)[1])


def test_golden_values_by_hand(tmp_path):
    _write(tmp_path / "ds", [_hand_run(HAND)])
    meta = build_sidecar(tmp_path / "ds", SidecarConfig(gamma=0.5, reward_scale=0.5),
                         progress=False)
    v = _values(tmp_path / "ds")
    assert v.dtype == VALUES_DTYPE and VALUES_DTYPE.itemsize == 24
    assert v["reward"].tolist() == [4, 0, 4]
    assert v["reward_scaled"].tolist() == [2, 0, 2]
    assert v["return_raw"].tolist() == [5, 2, 4]  # 4 + 0.5 * (0 + 0.5 * 4), 0 + 0.5 * 4, 4
    # h of the scaled returns 2.5, 1, 2: sqrt(x + 1) - 1 + 0.001 x
    assert v["return_scaled"] == pytest.approx([0.8733287, 0.4152136, 0.7340508], abs=1e-6)
    assert meta["truncated_runs"] == [1] and meta["score_mismatches"] == []
    assert meta["runs"] == 1 and meta["rows"] == 3


def test_identities_at_gamma_one_and_zero(tmp_path):
    runs = write_engine_dataset(tmp_path / "ds", seeds=(3, 4, 5, 6))
    build_sidecar(tmp_path / "ds", SidecarConfig(gamma=1.0), progress=False, chunk_rows=97)
    v = _values(tmp_path / "ds")
    at = 0
    for run, rows in runs:
        r = v[at:at + len(rows)]
        score_before = np.concatenate(([0], np.cumsum(r["reward"][:-1])))
        assert np.array_equal(r["return_raw"], run.max_score - score_before)  # exact integers
        at += len(rows)
    build_sidecar(tmp_path / "ds", SidecarConfig(gamma=0.0), progress=False, overwrite=True)
    v = _values(tmp_path / "ds")
    assert np.array_equal(v["return_raw"], v["reward"])
    assert np.allclose(v["return_scaled"], h(v["reward"].astype(np.float64)), rtol=1e-6)


def test_sharding_does_not_change_the_values(tmp_path):
    runs = [engine_run(seed, i + 1) for i, seed in enumerate((21, 22, 23))]
    _write(tmp_path / "one", runs)
    _write(tmp_path / "many", runs, shard_rows=37)  # runs cross shard boundaries
    cfg = SidecarConfig(gamma=0.997, reward_scale=0.01)
    build_sidecar(tmp_path / "one", cfg, progress=False, chunk_rows=64, workers=2)
    build_sidecar(tmp_path / "many", cfg, progress=False, chunk_rows=5, workers=2)
    one, many = _values(tmp_path / "one"), _values(tmp_path / "many")
    assert len(open_sidecar(tmp_path / "many")[1]) > 5
    assert one.tobytes() == many.tobytes()
    # chunks own whole runs, so one big chunk gives the same bytes too
    build_sidecar(tmp_path / "one", cfg, progress=False, overwrite=True)
    assert _values(tmp_path / "one").tobytes() == one.tobytes()


def test_merge_to_65536(tmp_path):
    first = Board.from_exponents([15, 15, 0, 0, 1] + [0] * 11)  # two 32768 tiles merge
    after = first.move(LEFT).board.with_tile(15, 1)  # a 2 spawns in the corner
    rows_grid = [(first.tiles, LEFT), (after.tiles, RIGHT)]
    run, rows = _hand_run(rows_grid)
    assert rows["tile_65536_mask"][1] == 1  # bit 0: cell 0 holds 2^16
    _write(tmp_path / "ds", [(run, rows)])
    build_sidecar(tmp_path / "ds", SidecarConfig(gamma=1.0), progress=False)
    v = _values(tmp_path / "ds")
    assert v["reward"][0] == 65536 and v["return_raw"][0] == 65536 + v["reward"][1]


def test_finished_runs_are_not_truncated(tmp_path):
    runs = [engine_run(seed, i + 1) for i, seed in enumerate((31, 32, 33))]
    runs.append(engine_run(34, 4, max_moves=40))  # cut short
    _write(tmp_path / "ds", runs)
    meta = build_sidecar(tmp_path / "ds", SidecarConfig(), progress=False)
    assert meta["truncated_runs"] == [4] and meta["score_mismatches"] == []
    assert json.loads((tmp_path / "ds" / "values.json").read_text())["truncated_runs"] == [4]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lab2048", *map(str, args)],
                          capture_output=True, text=True)


def _swap_rows(d):
    rows = np.load(d / "steps-00000.npy")
    rows[[5, 6]] = rows[[6, 5]]
    np.save(d / "steps-00000.npy", rows)


def _break_chain(d):
    rows = np.load(d / "steps-00000.npy")
    rows["board"][8] ^= np.uint64(1)  # a 2 appears (or changes) in the last cell
    np.save(d / "steps-00000.npy", rows)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "steps-00000.npy").unlink(), "no steps shards"),
    (lambda d: (d / "steps-00000.npy").write_bytes(
        (d / "steps-00000.npy").read_bytes()[:500]), "truncated or corrupt"),
    (lambda d: np.save(d / "steps-00000.npy", np.zeros(4, "<u8")), "46-byte packed"),
    (_swap_rows, "rows out of order"),
    (_break_chain, "not the move plus one spawn"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, damage, message):
    write_engine_dataset(tmp_path / "ds", seeds=(41,))
    damage(tmp_path / "ds")
    result = _cli("value-sidecar", "--dataset", tmp_path / "ds")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert not list((tmp_path / "ds").glob("values*")) and not list(
        (tmp_path / "ds").glob(".values*"))


def test_overwrite_and_interruption_keep_the_previous_sidecar(tmp_path, monkeypatch):
    write_engine_dataset(tmp_path / "ds", seeds=(51, 52))
    build_sidecar(tmp_path / "ds", SidecarConfig(gamma=0.9), progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds").glob("values*")}
    result = _cli("value-sidecar", "--dataset", tmp_path / "ds")
    assert result.returncode == 2 and "pass --overwrite" in result.stderr

    import lab2048.data.sidecar as sidecar

    def interrupted(*args):  # after every chunk is written, before anything is published
        raise KeyboardInterrupt

    monkeypatch.setattr(sidecar, "_summary", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_sidecar(tmp_path / "ds", SidecarConfig(gamma=0.5), progress=False,
                      overwrite=True)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in (tmp_path / "ds").glob("values*")}
    assert after == before and not list((tmp_path / "ds").glob(".values*"))
    assert open_sidecar(tmp_path / "ds")[0]["gamma"] == 0.9


def test_reader_refuses_a_sidecar_that_does_not_match(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(61, 62))
    build_sidecar(tmp_path / "ds", SidecarConfig(), progress=False, output=tmp_path / "sc")
    open_sidecar(tmp_path / "ds", tmp_path / "sc")
    with pytest.raises(UserError, match=r"values\.json: no such file"):
        open_sidecar(tmp_path / "ds")
    write_engine_dataset(tmp_path / "ds", seeds=(61, 63), overwrite=True)
    with pytest.raises(UserError, match=r"rows|changed since the sidecar"):
        open_sidecar(tmp_path / "ds", tmp_path / "sc")
    write_engine_dataset(tmp_path / "ds", seeds=(61, 62), overwrite=True)  # same rows again
    open_sidecar(tmp_path / "ds", tmp_path / "sc")
    values = tmp_path / "sc" / "values-00000.npy"
    v = np.load(values)
    v["step_index"][3] += 1
    np.save(values, v)
    with pytest.raises(UserError, match="fingerprint differs"):
        open_sidecar(tmp_path / "ds", tmp_path / "sc")
    with pytest.raises(UserError, match="row 3 is run 1 step 4, the dataset has run 1 step 3"):
        open_sidecar(tmp_path / "ds", tmp_path / "sc", fingerprints=False)


def test_non_finite_results_are_refused(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(71,))
    with pytest.raises(UserError, match="non-finite reward_scaled"):
        build_sidecar(tmp_path / "ds", SidecarConfig(reward_scale=1e300), progress=False)
    assert not list((tmp_path / "ds").glob("values*"))


def test_embedded_dataset_sidecar(tmp_path):
    from lab2048.data.dataset import Dataset, default_dataset

    meta = build_sidecar(default_dataset(), SidecarConfig(gamma=1.0), output=tmp_path / "sc",
                         progress=False)
    assert meta["truncated_runs"] == [] and meta["score_mismatches"] == []  # full games
    ds = Dataset(default_dataset())
    v = np.concatenate(open_sidecar(ds, tmp_path / "sc")[1])
    firsts = np.flatnonzero(v["step_index"] == 0)
    assert np.array_equal(v["return_raw"][firsts], ds.runs["max_score"])  # G_0 = final score


@pytest.mark.parametrize("chunk_rows", [7, 1 << 20])
def test_runs_are_linked_across_chunks_and_checked_against_the_runs_table(tmp_path,
                                                                          chunk_rows):
    import sqlite3

    write_engine_dataset(tmp_path / "ds", seeds=(81, 82, 83))
    db = tmp_path / "ds" / "metadata.db"
    with sqlite3.connect(db) as con:
        con.execute("UPDATE runs SET max_score = max_score + 4 WHERE id = 2")
    con.close()
    meta = build_sidecar(tmp_path / "ds", SidecarConfig(), progress=False,
                         chunk_rows=chunk_rows)
    assert meta["runs"] == 3 and meta["score_mismatches"] == [2]
    shard = tmp_path / "ds" / "steps-00000.npy"
    original = np.load(shard)
    rows = original.copy()
    again = np.flatnonzero(rows["run_id"] == 3)
    rows["run_id"][again] = 1  # run 1 again, after run 2
    np.save(shard, rows)
    with pytest.raises(UserError, match=f"row {again[0]}: the rows of run 1 are not contig"):
        build_sidecar(tmp_path / "ds", SidecarConfig(), progress=False, overwrite=True,
                      chunk_rows=chunk_rows)
    rows = original.copy()
    rows["run_id"][rows["run_id"] == 2] = 9  # rows of a run the runs table does not know
    np.save(shard, rows)
    with pytest.raises(UserError, match=r"run 2: listed in metadata.db but has no rows"):
        build_sidecar(tmp_path / "ds", SidecarConfig(), progress=False, overwrite=True,
                      chunk_rows=chunk_rows)


def test_fingerprints_of_pieces_add_up_to_the_whole_shard():
    from lab2048.data.dataset import STEP_DTYPE
    from lab2048.data.fingerprint import Hash as _Hash
    from lab2048.data.fingerprint import fingerprint as _fingerprint
    from lab2048.data.fingerprint import hash_piece as _hash_piece

    rng = np.random.default_rng(0)
    rows = np.frombuffer(rng.bytes(37 * STEP_DTYPE.itemsize), STEP_DTYPE).copy()
    whole = _fingerprint(rows)
    for cuts in ([], [1], [3, 4, 5], [8, 16], list(range(1, 37))):
        total = _Hash()
        for a, b in itertools.pairwise([0, *cuts, len(rows)]):
            total.add(_hash_piece(rows[a:b], a))
        assert total.fingerprint(len(rows)) == whole
    changed = rows.copy()
    changed.view(np.uint8)[-1] ^= 1  # the last, partial word counts too
    assert _fingerprint(changed) != whole
    assert _fingerprint(rows[:36]) != whole


# ---------------------------------------------------------------------------------------------
# Bootstrapped targets, values.json's checksum, the refusals of issue 16


def _tiny_init(path, gamma=None, state="board"):
    import torch

    from lab2048.model import Model, ModelConfig, ValueHeadConfig, save_init
    from lab2048.value_target import ValueTarget

    torch.manual_seed(0)
    model = Model(ModelConfig(hidden=16, layers=1, heads=2, kv_heads=1, mlp=32,
                              value_head=ValueHeadConfig(enabled=True, objective="mse",
                                                         prior=200.0)))
    with torch.no_grad():  # values that differ from board to board
        model.value.out.weight.normal_(0, 0.5)
    save_init(model, path)
    if gamma is not None:
        ValueTarget(gamma=gamma, state=state).save(path)
    return model


def _model_values(model, rows):
    from lab2048.engine.batch import legal_masks, to_exponents

    pred = model.predict(to_exponents(rows["board"], rows["tile_65536_mask"]),
                         legal_masks(rows["board"], rows["tile_65536_mask"]))
    return pred.value.detach().numpy().astype(np.float64)


def test_bootstrapped_targets_match_the_returns_functions(tmp_path):
    from lab2048.data.returns import discounted_returns, lambda_returns, n_step_returns
    from lab2048.data.sidecar import read_meta

    runs = write_engine_dataset(tmp_path / "ds", seeds=(91, 92), shard_rows=50)
    model = _tiny_init(tmp_path / "init", gamma=0.9)
    init = tmp_path / "init"
    out = tmp_path / "sc"
    result = _cli("value-sidecar", "--dataset", tmp_path / "ds", "--output", out,
                  "--bootstrap", init, "--n-step", 3, "--workers", 1)
    assert result.returncode == 0, result.stderr
    meta = read_meta(out / "values.json")
    from lab2048.data.fingerprint import file_sha256

    assert (meta["kind"], meta["n"], meta["gamma"]) == ("n_step", 3, 0.9)
    assert meta["bootstrap"] == file_sha256(init / "model.safetensors")
    assert not list(out.glob(".values-bootstrap-*"))  # resumable values removed when done
    v = _values_of(tmp_path / "ds", out)
    at = 0
    for _, rows in runs:
        r = v[at:at + len(rows)]
        want = n_step_returns(r["reward"].astype(np.float64), _model_values(model, rows), 0.9,
                              3)
        assert np.allclose(r["return_raw"], want, rtol=1e-5, atol=1e-2)
        at += len(rows)
    # λ = 1 is the Monte Carlo return; λ = 0 the one-step TD target
    for lam in (1.0, 0.0):
        meta = build_sidecar(tmp_path / "ds", SidecarConfig(gamma=0.9, kind="lambda", lam=lam),
                             output=out, overwrite=True, progress=False, bootstrap=init,
                             chunk_rows=7)
        assert (meta["kind"], meta["lam"]) == ("lambda", lam)
        v, at = _values_of(tmp_path / "ds", out), 0
        for _, rows in runs:
            r, rew = v[at:at + len(rows)], v[at:at + len(rows)]["reward"].astype(np.float64)
            want = (discounted_returns(rew, 0.9) if lam == 1 else
                    lambda_returns(rew, _model_values(model, rows), 0.9, 0.0))
            assert np.allclose(r["return_raw"], want, rtol=1e-5, atol=1e-2)
            at += len(rows)


def _values_of(ds, sc):
    return np.concatenate(open_sidecar(ds, sc)[1])


def test_bootstrap_refusals(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(93,))
    _tiny_init(tmp_path / "init", gamma=0.99)
    base = ("value-sidecar", "--dataset", tmp_path / "ds", "--output", tmp_path / "sc")
    cases = [
        (("--bootstrap", tmp_path / "init", "--n-step", 2, "--gamma", 0.9),
         "value-target.json: the value head was trained for gamma 0.99, not 0.9"),
        (("--n-step", 2), "needs --bootstrap INIT and one of --n-step N or --lambda L"),
        (("--bootstrap", tmp_path / "init", "--n-step", 2, "--lambda", 0.5), "one of --n-step"),
        (("--bootstrap", tmp_path / "init", "--lambda", 1.5), "--lambda must be in [0, 1]"),
        (("--bootstrap", tmp_path / "nothing", "--n-step", 2), "no such model init directory"),
    ]
    for extra, message in cases:
        result = _cli(*base, *extra)
        assert result.returncode == 2 and message in result.stderr, (extra, result.stderr)
        assert result.stderr.count("\n") == 1
        assert not (tmp_path / "sc").exists()
    _tiny_init(tmp_path / "after", gamma=0.99, state="afterstate")
    result = _cli(*base, "--bootstrap", tmp_path / "after", "--n-step", 2)
    assert result.returncode == 2 and "afterstate value head cannot bootstrap" in result.stderr


def test_bootstrap_values_resume_per_shard(tmp_path, monkeypatch):
    import lab2048.data.bootstrap as bootstrap

    write_engine_dataset(tmp_path / "ds", seeds=(94, 95), shard_rows=60)
    _tiny_init(tmp_path / "init")
    cfg = SidecarConfig(gamma=0.99, kind="lambda", lam=0.5)
    real, calls = bootstrap.np.save, []

    def save_then_die(f, values):  # killed while saving the second shard
        real(f, values)
        calls.append(f)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(bootstrap.np, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_sidecar(tmp_path / "ds", cfg, progress=False, bootstrap=tmp_path / "init")
    kept = list((tmp_path / "ds").glob(".values-bootstrap-*/*.npy"))
    assert len(kept) == 1 and not (tmp_path / "ds" / "values.json").exists()
    monkeypatch.undo()
    computed = []
    monkeypatch.setattr(bootstrap.np, "save", lambda p, v: (computed.append(p), real(p, v)))
    build_sidecar(tmp_path / "ds", cfg, progress=False, bootstrap=tmp_path / "init")
    shards = len(list((tmp_path / "ds").glob("steps-*.npy")))
    assert shards > 2 and len(computed) == shards - 1  # the saved shard is kept


def test_edited_values_json_is_refused(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(96,))
    build_sidecar(tmp_path / "ds", SidecarConfig(gamma=0.99), progress=False)
    path = tmp_path / "ds" / "values.json"
    text = path.read_text()
    path.write_text(text.replace('"gamma": 0.99', '"gamma": 0.9'))
    with pytest.raises(UserError, match=r"values\.json: edited after it was written \(its "
                       r"checksum differs\); rebuild it with `lab2048 value-sidecar"):
        open_sidecar(tmp_path / "ds")
    meta = json.loads(text)
    meta["format_version"] = 2
    path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="format version 2, this lab2048 reads 3"):
        open_sidecar(tmp_path / "ds")


def test_workers_must_not_be_negative(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(97,))
    result = _cli("value-sidecar", "--dataset", tmp_path / "ds", "--output", tmp_path / "sc",
                  "--workers", -1)
    assert result.returncode == 2 and result.stderr == (
        "lab2048: error: workers must be at least 0, got -1\n")
    assert not (tmp_path / "sc").exists()


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(98,))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / "ds" / f".values.{dead}-abc.tmp"
    stale.mkdir()
    (stale / "values-00000.npy").write_bytes(b"x" * 1000)
    live = tmp_path / "ds" / f".values.{os.getppid()}-abc.tmp"  # a live process's
    live.mkdir()
    other = tmp_path / "ds" / ".values.notes.tmp"  # not a temporary of ours
    other.write_text("keep")
    build_sidecar(tmp_path / "ds", SidecarConfig(), progress=False)
    assert not stale.exists() and live.exists() and other.exists()
    assert [p.name for p in (tmp_path / "ds").glob(".values.*")] != []


def test_a_full_disk_is_one_line_and_keeps_the_previous_sidecar(tmp_path, monkeypatch):
    import errno

    import lab2048.data.sidecar as sidecar

    write_engine_dataset(tmp_path / "ds", seeds=(99, 100))
    build_sidecar(tmp_path / "ds", SidecarConfig(gamma=0.9), progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds").glob("values*")}

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sidecar.os, "pwritev", full)
    with pytest.raises(UserError, match=r"ds: cannot write the sidecar \(No space left on "
                       r"device\)$"):
        build_sidecar(tmp_path / "ds", SidecarConfig(gamma=0.5), progress=False,
                      overwrite=True)
    after = {p.name: p.read_bytes() for p in (tmp_path / "ds").glob("values*")}
    assert after == before and not list((tmp_path / "ds").glob(".values*"))


@pytest.mark.parametrize("damage, message", [
    ("UPDATE runs SET steps = steps + 1 WHERE id = 1", "run 1: runs.steps = "),
    ("DROP TABLE session", "not a readable metadata database (no such table: session)"),
])
def test_value_sidecar_refuses_what_check_rejects(tmp_path, damage, message):
    import sqlite3

    from lab2048.data.check import check_dataset, format_report

    write_engine_dataset(tmp_path / "ds", seeds=(101, 102))
    with sqlite3.connect(tmp_path / "ds" / "metadata.db") as con:
        con.execute(damage)
    con.close()
    try:
        report = check_dataset(tmp_path / "ds")
        assert not report.ok and message in format_report(report)
    except UserError as e:  # an unreadable session table stops check itself
        assert message in str(e)
    result = _cli("value-sidecar", "--dataset", tmp_path / "ds")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not list((tmp_path / "ds").glob("values*"))


def test_value_sidecar_refuses_bytes_after_a_shard(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(103,))
    with open(tmp_path / "ds" / "steps-00000.npy", "ab") as f:
        f.write(b"\0" * 46)
    result = _cli("value-sidecar", "--dataset", tmp_path / "ds")
    assert result.returncode == 2 and "steps-00000.npy: 46 bytes after the array" in \
        result.stderr


def test_long_runs_over_many_chunks_give_the_same_bytes(tmp_path):
    from lab2048.data.dataset import default_dataset

    build_sidecar(default_dataset(), SidecarConfig(), output=tmp_path / "one", progress=False)
    build_sidecar(default_dataset(), SidecarConfig(), output=tmp_path / "many", progress=False,
                  chunk_rows=300, workers=2)  # runs of thousands of rows cross many cells
    one = _values_of(default_dataset(), tmp_path / "one")
    assert one.tobytes() == _values_of(default_dataset(), tmp_path / "many").tobytes()


def test_an_empty_dataset_has_an_empty_sidecar(tmp_path):
    _write(tmp_path / "ds", [])
    meta = build_sidecar(tmp_path / "ds", SidecarConfig(), progress=False)
    assert (meta["rows"], meta["runs"], meta["truncated_runs"]) == (0, 0, [])
    assert len(_values(tmp_path / "ds")) == 0
