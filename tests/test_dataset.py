"""Packed datasets: the exact 46-byte layout, writing and reading, and `check` finding every
kind of inconsistency (and only those)."""

import json
import sqlite3
import struct
import subprocess
import sys

import numpy as np
import pytest

from lab2048.data.check import check_dataset, format_report
from lab2048.data.dataset import (
    STEP_DTYPE,
    Dataset,
    DatasetWriter,
    default_dataset,
    make_rows,
    select_runs,
)
from lab2048.errors import UserError
from synthetic import engine_run, write_engine_dataset


def test_step_dtype_is_the_packed_macroxue_layout():
    assert STEP_DTYPE.itemsize == 46
    offsets = {name: STEP_DTYPE.fields[name][1] for name in STEP_DTYPE.names}
    assert offsets == {"run_id": 0, "step_index": 4, "board": 8, "board_eval": 16,
                       "tile_65536_mask": 20, "move_dir": 22, "valuation_type": 23,
                       "ev_legal": 24, "max_rank": 25, "seed": 26, "branch_evs": 30}
    assert STEP_DTYPE.descr == [("run_id", "<u4"), ("step_index", "<u4"), ("board", "<u8"),
                                ("board_eval", "<i4"), ("tile_65536_mask", "<u2"),
                                ("move_dir", "|u1"), ("valuation_type", "|u1"),
                                ("ev_legal", "|u1"), ("max_rank", "|u1"), ("seed", "<u4"),
                                ("branch_evs", "<f4", (4,))]


def test_row_bytes_golden():
    rows = make_rows(run_id=7, seed=(1 << 40) + 5, boards=np.array([0x1200_0000_0000_0031],
                     np.uint64), masks=np.array([0], np.uint16), moves=np.array([3], np.uint8),
                     ev_legal=np.array([0b1101], np.uint8), max_rank=np.array([3], np.uint8),
                     board_eval=np.array([-1234], np.int32),
                     branch_evs=np.array([[1.5, 0.0, -2.25, 3.0]], np.float32))
    expected = struct.pack("<IIQiHBBBBI4f", 7, 0, 0x1200_0000_0000_0031, -1234, 0, 3, 0,
                           0b1101, 3, 5, 1.5, 0.0, -2.25, 3.0)
    assert rows.tobytes() == expected  # the seed is truncated to 32 bits


def test_write_read_round_trip_across_shards(tmp_path):
    runs = write_engine_dataset(tmp_path / "ds", seeds=(11, 12, 13), shard_rows=100)
    ds = Dataset(tmp_path / "ds")
    assert len(ds.shards) == -(-sum(r.steps for r, _ in runs) // 100)
    assert all(isinstance(s, np.memmap) and s.dtype == STEP_DTYPE for s in ds.shards)
    assert np.array_equal(np.concatenate(ds.shards), np.concatenate([rows for _, rows in runs]))
    assert ds.runs["steps"].tolist() == [r.steps for r, _ in runs]
    assert ds.session["source"] == "test" and ds.session["format_version"] == "1"
    assert ds.valuation_types == {"search": 0, "tuple11": 1, "tuple10": 2}
    assert select_runs(tmp_path / "ds", "steps > 0").tolist() == [1, 2, 3]
    report = check_dataset(tmp_path / "ds", chunk_rows=64)  # chunks cut runs at odd places
    assert report.ok, format_report(report)
    assert report.rows == sum(r.steps for r, _ in runs) and report.ev_legal_differs == 0


def test_single_steps_file_is_accepted(tmp_path):
    write_engine_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "steps-00000.npy").rename(tmp_path / "ds" / "steps.npy")
    assert check_dataset(tmp_path / "ds").ok


def test_writer_refuses_existing_and_keeps_it_on_failure(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(1,))
    before = (tmp_path / "ds" / "steps-00000.npy").read_bytes()
    with pytest.raises(UserError, match="already exists"):
        write_engine_dataset(tmp_path / "ds", seeds=(2,))
    run, rows = engine_run(3, 1)
    with pytest.raises(RuntimeError), DatasetWriter(tmp_path / "ds", session={},
                                                    overwrite=True) as writer:
        writer.add_run(run, rows)
        raise RuntimeError("interrupted")
    assert (tmp_path / "ds" / "steps-00000.npy").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary left behind
    write_engine_dataset(tmp_path / "ds", seeds=(2,), overwrite=True)
    assert (tmp_path / "ds" / "steps-00000.npy").read_bytes() != before


def _tamper(root, edit):
    path = root / "steps-00000.npy"
    rows = np.load(path)
    edit(rows)
    np.save(path, rows)


def _problems(root):
    report = check_dataset(root)
    return report, [text for items in report.problems.values() for text in items]


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.__setitem__("step_index", np.where(r["step_index"] == 5, 6, r["step_index"])),
     "step_index 6 where 5 was expected"),
    (lambda r: r["move_dir"].__setitem__(0, 9), "recorded move is illegal"),
    (lambda r: r["board"].__setitem__(10, r["board"][10] ^ np.uint64(0x3)),
     "next board is not the move plus one spawn"),
    (lambda r: r["max_rank"].__setitem__(3, 15), "max_rank is not the highest exponent"),
    (lambda r: r["valuation_type"].__setitem__(4, 9), "valuation_type 9 is not in"),
    (lambda r: r["seed"].__setitem__(7, r["seed"][7] + 1), "step 7: seed 6, runs.seed says 5"),
    (lambda r: r["branch_evs"].__setitem__((2, 1), np.nan),
     "step 2: branch_evs [0.0, nan, 0.0, 0.0] are not finite"),
])
def test_check_finds_row_problems(tmp_path, edit, message):
    write_engine_dataset(tmp_path / "ds", seeds=(5,))
    _tamper(tmp_path / "ds", edit)
    report, problems = _problems(tmp_path / "ds")
    assert not report.ok and any(message in p for p in problems), problems


def test_check_counts_ev_legal_disagreements_without_failing(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(5,))
    _tamper(tmp_path / "ds", lambda r: r["ev_legal"].__setitem__(slice(0, 3),
                                                                  r["ev_legal"][:3] ^ 1))
    report = check_dataset(tmp_path / "ds")
    assert report.ok and report.ev_legal_differs == 3
    assert "ev_legal differs from the board's legal moves on 3 steps" in format_report(report)


def test_check_finds_runs_table_problems(tmp_path):
    runs = write_engine_dataset(tmp_path / "ds", seeds=(5, 6))
    db = sqlite3.connect(tmp_path / "ds" / "metadata.db")
    db.execute("UPDATE runs SET steps = steps + 1 WHERE id = 1")
    db.execute("UPDATE runs SET max_score = max_score + 4 WHERE id = 2")
    db.execute("INSERT INTO runs VALUES (3, 7, 10, 0, 2, '', '')")
    db.commit()
    db.close()
    report = check_dataset(tmp_path / "ds")
    assert report.problems[1] == [f"runs.steps = {runs[0][0].steps + 1} but "
                                  f"{runs[0][0].steps} rows"]
    assert "runs.max_score" in report.problems[2][0]
    assert report.problems[3] == ["listed in metadata.db but has no rows"]
    assert "PROBLEMS: 3 in 3 runs" in format_report(report)


def test_check_finds_interleaved_runs(tmp_path):
    (r1, rows1), (r2, rows2) = engine_run(5, 1), engine_run(6, 2)
    with DatasetWriter(tmp_path / "ds", session={}) as writer:
        writer.add_run(r1, rows1)
        writer.add_run(r2, rows2)
    path = tmp_path / "ds" / "steps-00000.npy"
    rows = np.load(path)
    np.save(path, np.concatenate((rows[:10], rows[r1.steps:r1.steps + 5], rows[10:r1.steps],
                                  rows[r1.steps + 5:])))
    report = check_dataset(tmp_path / "ds")
    assert "rows are not contiguous" in report.problems[1]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lab2048", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "metadata.db").unlink(), "metadata.db: no such file"),
    (lambda d: (d / "valuation_types.json").write_text("{"), "not valid JSON"),
    (lambda d: (d / "steps-00000.npy").write_bytes(
        (d / "steps-00000.npy").read_bytes()[:-100]), "truncated or corrupt"),
    (lambda d: np.save(d / "steps-00000.npy", np.zeros(3, np.dtype(
        STEP_DTYPE.descr, align=True))), "is not the 46-byte packed step dtype"),
    (lambda d: (d / "steps-00000.npy").rename(d / "steps-00002.npy"), "out of sequence"),
    (lambda d: (d / "metadata.db").write_bytes(b"not a database" * 100),
     "not a readable metadata database"),
])
def test_check_bad_files_one_line_error(tmp_path, damage, message):
    write_engine_dataset(tmp_path / "ds", seeds=(5,))
    damage(tmp_path / "ds")
    result = _cli("check", tmp_path / "ds")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_check_cli_reports_and_exits_1_on_problems(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(5, 6))
    result = _cli("check", tmp_path / "ds")
    assert result.returncode == 0 and "2 runs" in result.stdout and "OK" in result.stdout
    _tamper(tmp_path / "ds", lambda r: r["max_rank"].__setitem__(0, 9))
    result = _cli("check", tmp_path / "ds")
    assert result.returncode == 1 and "run 1: step 0: max_rank" in result.stdout
    assert _cli("check", tmp_path / "missing").stderr.strip().endswith(
        "no such dataset directory")


def test_embedded_default_dataset_is_valid():
    ds = Dataset(default_dataset())
    assert ds.session["source"] == "lab2048 generate" and ds.num_rows > 10_000
    teacher = json.loads(ds.session["teacher"])
    assert teacher["depth"] >= 1
    report = check_dataset(default_dataset())
    assert report.ok and report.ev_legal_differs == 0, format_report(report)
    assert set(report.valuation_counts) == {"search"}


def test_check_finds_bytes_after_a_shard(tmp_path):
    write_engine_dataset(tmp_path / "ds", seeds=(5,))
    with open(tmp_path / "ds" / "steps-00000.npy", "ab") as f:
        f.write(b"junk")
    report = check_dataset(tmp_path / "ds")
    assert report.problems[-1] == ["steps-00000.npy: 4 bytes after the array"]
    assert "  dataset: steps-00000.npy: 4 bytes after the array" in format_report(report)


def test_overwrite_replaces_only_a_dataset_and_never_an_input(tmp_path):
    from lab2048.errors import UserError

    notes = tmp_path / "notes"
    (notes / "docs").mkdir(parents=True)
    (notes / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"notes: not a dataset \(no metadata.db\); "
                       r"--overwrite replaces only a dataset, so nothing was deleted$"):
        write_engine_dataset(notes, seeds=(2,), overwrite=True)
    for inputs, message in (((notes,), "notes: is the input; choose another output"),
                            ((notes / "docs",), "notes: contains the input")):
        with pytest.raises(UserError, match=message):
            DatasetWriter(notes, session={}, overwrite=True, inputs=inputs)
    assert sorted(p.name for p in notes.iterdir()) == ["docs", "notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["notes"]  # no temporary made


def test_a_full_disk_is_one_line_and_leaves_no_output(tmp_path, monkeypatch):
    import errno

    import lab2048.data.dataset as dataset
    from lab2048.errors import UserError

    write_engine_dataset(tmp_path / "ds", seeds=(2,))
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dataset.np, "save", full)
    with pytest.raises(UserError, match=r"ds: cannot write the dataset \(No space left on "
                       r"device\)$"):
        write_engine_dataset(tmp_path / "ds", seeds=(3,), overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_published_files_follow_the_umask(tmp_path):
    import os

    from lab2048.io import atomic_path, publish_dir, remove_stale_temps, temp_dir_beside

    old = os.umask(0o022)
    try:
        tmp = temp_dir_beside(tmp_path / "out")
        (tmp / "weights").write_bytes(b"x")
        (tmp / "weights").chmod(0o600)  # as safetensors writes it
        publish_dir(tmp, tmp_path / "out")
        assert (tmp_path / "out" / "weights").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
        with atomic_path(tmp_path / "file") as t:
            t.write_text("x")
        assert (tmp_path / "file").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    assert remove_stale_temps(tmp_path / "out") == []


def test_a_killed_writers_temporary_is_removed_by_the_next_writer(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".ds.{dead}-abc.tmp"
    stale.mkdir()
    (stale / "steps-00000.npy").write_bytes(b"x" * 100)
    write_engine_dataset(tmp_path / "ds", seeds=(2,))
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
