"""Value sidecar: golden values by hand, the return identities, sharding independence, the
65536 merge, truncated runs, and refusal of every kind of bad input."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from lab2048.data.dataset import DatasetWriter, Run, make_rows
from lab2048.data.sidecar import (
    VALUES_DTYPE,
    SidecarConfig,
    build_sidecar,
    chunk_carries,
    open_sidecar,
)
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
    build_sidecar(tmp_path / "many", cfg, progress=False, chunk_rows=64, workers=2)
    one, many = _values(tmp_path / "one"), _values(tmp_path / "many")
    assert len(open_sidecar(tmp_path / "many")[1]) > 5
    assert one.tobytes() == many.tobytes()
    # and one big chunk (a plain backward pass) agrees to float32 precision
    build_sidecar(tmp_path / "one", cfg, progress=False, overwrite=True)
    assert np.allclose(_values(tmp_path / "one")["return_raw"], one["return_raw"], rtol=1e-6)


def test_chunk_carries_match_one_pass():
    rng = np.random.default_rng(0)
    rewards = rng.integers(0, 64, 500).astype(np.float64)
    ids = np.repeat([1, 2, 3], [10, 400, 90])
    gamma = 0.99
    g, full = 0.0, np.zeros(500)
    for t in range(499, -1, -1):
        g = rewards[t] + gamma * g * (t == 499 or ids[t] == ids[t + 1])
        full[t] = g
    cuts = [0, 7, 50, 100, 150, 300, 499, 500]
    heads, lengths, continues = [], [], []
    for a, b in itertools.pairwise(cuts):
        seg = np.sum(ids[a:b] == ids[a])
        heads.append((sum(rewards[a + k] * gamma ** k for k in range(seg)), seg))
        lengths.append(b - a)
        continues.append(b < 500 and ids[b - 1] == ids[b])
    carries = chunk_carries(heads, lengths, continues, gamma)
    for b, carry in zip(cuts[1:], carries, strict=True):
        assert carry == pytest.approx(full[b] if b < 500 and ids[b - 1] == ids[b] else 0.0)


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

    monkeypatch.setattr(sidecar, "_link", interrupted)
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
    with pytest.raises(UserError, match=r"runs \[9\] have rows but no entry"):
        build_sidecar(tmp_path / "ds", SidecarConfig(), progress=False, overwrite=True,
                      chunk_rows=chunk_rows)


def test_fingerprints_of_pieces_add_up_to_the_whole_shard():
    from lab2048.data.dataset import STEP_DTYPE
    from lab2048.data.sidecar import _fingerprint, _Hash, _hash_piece

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
