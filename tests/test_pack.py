"""`pack`: Macroxue logs and text games into packed datasets that pass `check`, bad games skipped
by name, outputs protected, the same bytes for any number of workers."""

import gzip
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from lab2048.data.check import check_dataset, format_report
from lab2048.data.dataset import STEP_DTYPE, VALUATION_TYPES
from lab2048.data.macroxue_text import read_text_game, replay
from lab2048.data.pack import pack
from lab2048.engine.batch import from_exponents, legal_masks, to_exponents
from lab2048.errors import UserError
from lab2048.teacher import board_evals

FIXTURES = Path(__file__).parent / "fixtures"
LOGS = FIXTURES / "macroxue-logs"
SEARCH, TUPLE, BIG = "d3-seed13-search", "d3-seed26-tuple", "d5-seed99-65536"
GAME_8192 = FIXTURES / "macroxue-d3-seed2031.txt.gz"  # 7,303 moves, reaches 8192
GAME_32768 = FIXTURES / "macroxue-d3-seed1068.txt.gz"  # 15,602 moves, reaches 32768


def read_log(path):
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def write_log(path, lines):
    path.write_bytes(gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode()))


def rows_of(root):
    shards = sorted(root.glob("steps-*.npy"))
    for path in shards:
        arr = np.load(path)
        assert arr.dtype == STEP_DTYPE and arr.dtype.itemsize == 46
    return np.concatenate([np.load(p) for p in shards])


def runs_of(root):
    db = sqlite3.connect(root / "metadata.db")
    try:
        return db.execute("SELECT id, seed, steps, max_score, highest_tile, end_reason, source "
                          "FROM runs ORDER BY id").fetchall()
    finally:
        db.close()


def session_of(root):
    db = sqlite3.connect(root / "metadata.db")
    try:
        return dict(db.execute("SELECT meta_key, meta_value FROM session").fetchall())
    finally:
        db.close()


def assert_checks(root):
    report = check_dataset(root)
    assert report.ok, format_report(report)
    return report


def packed(src, out, **kw):
    return pack(src, out, workers=kw.pop("workers", 1), progress=False, **kw)


# ---------------------------------------------------------------------------------------------
# macroxue-jsonl


def test_jsonl_fixtures_pack_and_check(tmp_path):
    out = tmp_path / "ds"
    report = packed(LOGS, out)
    assert (report.games, report.steps, report.skipped, report.out) == (3, 17, [], out)
    assert report.ev_legal_differs == 1  # the search log's null on a legal move (line 4)
    check = assert_checks(out)
    assert check.ev_legal_differs == 1
    assert runs_of(out) == [
        (1, 13, 7, 24, 8, "", f"{SEARCH}.jsonl.gz"),
        (2, 26, 7, 16, 8, "", f"{TUPLE}.jsonl.gz"),
        (3, 99, 3, 65_540, 65_536, "", f"{BIG}.jsonl.gz"),
    ]
    session = session_of(out)
    assert session["source"] == "macroxue-jsonl" and session["input"] == "macroxue-logs"
    assert session["games"] == "3" and session["skipped"] == "0"
    assert json.loads((out / "valuation_types.json").read_text()) == VALUATION_TYPES


def test_jsonl_row_values(tmp_path):
    out = tmp_path / "ds"
    packed(LOGS, out)
    rows = rows_of(out)
    logs = [read_log(LOGS / f"{name}.jsonl.gz") for name in (SEARCH, TUPLE, BIG)]
    lines = [line for log in logs for line in log]
    assert rows["run_id"].tolist() == [1] * 7 + [2] * 7 + [3] * 3
    assert rows["step_index"].tolist() == [*range(7), *range(7), *range(3)]
    assert rows["seed"].tolist() == [13] * 7 + [26] * 7 + [99] * 3
    exps = to_exponents(rows["board"], rows["tile_65536_mask"])
    assert exps.tolist() == [line["board"] for line in lines]
    assert rows["max_rank"].tolist() == [line["max_rank"] for line in lines]
    assert np.array_equal(rows["board_eval"], board_evals(rows["board"], rows["tile_65536_mask"]))

    search, tup, big = rows[:7], rows[7:14], rows[14:]
    # search: down left down left up right left; null -> 0.0 with the bit cleared, line 2 has
    # no valuation_type (search), line 4 leaves the legal Up without a value
    assert search["move_dir"].tolist() == [1, 2, 1, 2, 0, 3, 2]
    assert search["valuation_type"].tolist() == [0] * 7
    assert search["ev_legal"].tolist() == [11, 15, 11, 14, 9, 8, 15]
    assert search["branch_evs"][0].tolist() == [2.5, 2.75, 0.0, 1.75]
    assert search["branch_evs"][3].tolist() == [0.0, 2.25, 2.5, 1.75]
    assert search["branch_evs"][5].tolist() == [0.0, 0.0, 0.0, 2.25]
    # tuple11 (line 5 tuple10): ev_legal from the board, a 0.0 on a legal move stays legal
    assert tup["move_dir"].tolist() == [3, 0, 3, 0, 3, 2, 3]
    assert tup["valuation_type"].tolist() == [1, 1, 1, 1, 2, 1, 1]
    assert tup["ev_legal"].tolist() == [15, 7, 15, 7, 14, 6, 11]
    assert tup["branch_evs"][2].tolist() == [0.0, 0.375, 0.25, 0.75]  # Up legal, probability 0
    assert tup["branch_evs"][1].tolist() == [0.75, 0.375, 0.25, 0.0]  # Right illegal: null
    assert tup["branch_evs"][6].tolist() == [0.5, 0.375, 0.0, 0.75]  # Left illegal: 0.0
    # 32768 + 32768 -> 65536: nibble 15 and the mask bit of its cell (0, then 4)
    assert big["max_rank"].tolist() == [15, 16, 16]
    assert big["tile_65536_mask"].tolist() == [0, 1 << 0, 1 << 4]
    assert int(big["board"][1]) >> 60 == 15


def write_game(directory, name, boards, moves, *, score, seed=5):
    """A log of the given boards (exponent lists) and moves, all branches valued 1.0."""
    lines = [{"seed": seed, "step_index": t, "max_rank": max(b), "move": m, "valuation": 1.0,
              "board": b, "branch_evs": dict.fromkeys(("up", "down", "left", "right"), 1.0)}
             for t, (b, m) in enumerate(zip(boards, moves, strict=True))]
    write_log(directory / f"{name}.jsonl.gz", lines)
    meta = {"seed": seed, "depth": 1, "num_moves": len(moves), "score": score, "max_tile": 0,
            "max_rank": 0, "sum_tile": 0, "seconds": 0.0}
    (directory / f"{name}.meta.json").write_text(json.dumps(meta))


def test_jsonl_end_reasons(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    # Left merges the 8s into a 16 and leaves one empty cell; any spawn there ends the game
    write_game(logs, "a-no-moves", [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 3, 3]],
               ["left"], score=16)
    # Left would merge two 65536 tiles: the move is not applied and the game ends, reward 0
    write_game(logs, "b-tile-limit", [[16, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]],
               ["left"], score=0)
    out = tmp_path / "ds"
    report = packed(logs, out)
    assert report.games == 2 and not report.skipped
    assert_checks(out)
    assert runs_of(out) == [(1, 5, 1, 16, 1 << 14, "no-moves", "a-no-moves.jsonl.gz"),
                            (2, 5, 1, 0, 1 << 16, "tile-limit", "b-tile-limit.jsonl.gz")]


def _edit_line(index, **changes):
    def edit(log, meta):
        log[index].update(changes)
    return edit


def _edit_meta(**changes):
    def edit(log, meta):
        meta.update(changes)
    return edit


def _drop_key(index, key):
    def edit(log, meta):
        del log[index][key]
    return edit


BAD_LOGS = {  # the search fixture damaged in one way -> the reason it is skipped
    "num_moves": (_edit_meta(num_moves=8), "meta num_moves is 8 but the log holds 7 moves"),
    "score": (_edit_meta(score=28), "meta score is 28 but the moves earn 24"),
    "meta seed": (_edit_meta(seed=14), "the log's seed 13 differs from the meta seed 14"),
    "meta key": (lambda log, meta: meta.pop("depth"), "bad.meta.json: missing depth"),
    "illegal move": (_edit_line(5, move="up"), "line 6: move up is illegal on its board"),
    "board": (_edit_line(3, board=[0] * 8 + [2, 0, 0, 0, 2, 2, 0, 1]),
              "line 4: the board is not line 3's board after its move plus one spawned 2 or 4"),
    "max_rank": (_edit_line(2, max_rank=3),
                 "line 3: max_rank 3 but the board's highest exponent is 2"),
    "step_index": (_edit_line(4, step_index=5), "line 5: step_index 5 where 4 was expected"),
    "line seed": (_edit_line(1, seed=12), "line 2: seed 12 differs from line 1's seed 13"),
    "missing key": (_drop_key(0, "branch_evs"), "line 1: missing branch_evs"),
    "move name": (_edit_line(0, move="north"),
                  "line 1: move 'north' is not up, down, left or right"),
    "valuation type": (_edit_line(0, valuation_type="tuple9"),
                       "line 1: valuation_type 'tuple9' is not one of search, tuple11, tuple10"),
    "board type": (_edit_line(0, board=[0] * 15), "line 1: board is not 16 exponents in 0..16"),
    "value type": (_edit_line(0, branch_evs={"up": "1", "down": 1, "left": 1, "right": 1}),
                   "line 1: branch_evs holds a value that is not a number or null"),
}


@pytest.mark.parametrize("kind", BAD_LOGS)
def test_inconsistent_log_is_skipped_by_name(tmp_path, kind):
    edit, reason = BAD_LOGS[kind]
    logs = tmp_path / "logs"
    shutil.copytree(LOGS, logs)
    log, meta = read_log(LOGS / f"{SEARCH}.jsonl.gz"), json.loads(
        (LOGS / f"{SEARCH}.meta.json").read_text())
    edit(log, meta)
    write_log(logs / "bad.jsonl.gz", log)
    (logs / "bad.meta.json").write_text(json.dumps(meta))
    out = tmp_path / "ds"
    report = packed(logs, out)
    assert len(report.skipped) == 1
    name, got = report.skipped[0]
    assert name == "bad.jsonl.gz"
    assert got.startswith(reason) and "\n" not in got
    assert (report.games, report.steps) == (3, 17)  # the good games, numbered 1..3
    assert [r[0] for r in runs_of(out)] == [1, 2, 3]
    assert_checks(out)


def _bad_json(logs):
    text = gzip.decompress((logs / f"{SEARCH}.jsonl.gz").read_bytes()).decode().splitlines()
    text[2] = text[2][:40]
    (logs / "bad.jsonl.gz").write_bytes(gzip.compress(("\n".join(text) + "\n").encode()))
    shutil.copy(logs / f"{SEARCH}.meta.json", logs / "bad.meta.json")


def _truncated_gzip(logs):
    data = gzip.compress(gzip.decompress((logs / f"{SEARCH}.jsonl.gz").read_bytes()))
    (logs / "bad.jsonl.gz").write_bytes(data[: len(data) // 2])
    shutil.copy(logs / f"{SEARCH}.meta.json", logs / "bad.meta.json")


def _missing_meta(logs):
    shutil.copy(logs / f"{SEARCH}.jsonl.gz", logs / "bad.jsonl.gz")


def _missing_log(logs):
    shutil.copy(logs / f"{SEARCH}.meta.json", logs / "bad.meta.json")


def _meta_not_json(logs):
    shutil.copy(logs / f"{SEARCH}.jsonl.gz", logs / "bad.jsonl.gz")
    (logs / "bad.meta.json").write_text('{"seed": 13,')


@pytest.mark.parametrize(("damage", "reason"), [
    (_bad_json, "line 3: not valid JSON ("),
    (_truncated_gzip, "damaged or truncated gzip data ("),
    (_missing_meta, "bad.meta.json: no such file"),
    (_missing_log, "no such file (only its .meta.json is there)"),
    (_meta_not_json, "bad.meta.json: not valid JSON ("),
])
def test_unreadable_log_is_skipped_by_name(tmp_path, damage, reason):
    logs = tmp_path / "logs"
    shutil.copytree(LOGS, logs)
    damage(logs)
    report = packed(logs, tmp_path / "ds")
    assert report.games == 3 and len(report.skipped) == 1
    name, got = report.skipped[0]
    assert name == "bad.jsonl.gz" and got.startswith(reason) and "\n" not in got
    assert_checks(tmp_path / "ds")


def test_nothing_packed_is_an_error(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(LOGS / f"{SEARCH}.jsonl.gz", logs / "bad.jsonl.gz")
    with pytest.raises(UserError, match=r"none of its 1 game\(s\) could be packed .*bad\.jsonl"):
        packed(logs, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and [p.name for p in tmp_path.iterdir()] == ["logs"]


def test_input_errors(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(UserError, match="no such file or directory"):
        packed(tmp_path / "missing", out)
    with pytest.raises(UserError, match="not a directory"):
        packed(LOGS / f"{SEARCH}.jsonl.gz", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"holds no macroxue-jsonl game files"):
        packed(tmp_path / "empty", out)
    with pytest.raises(UserError, match=r"holds no macroxue-text game files"):
        packed(LOGS, out, fmt="macroxue-text")
    with pytest.raises(UserError, match="unknown input format"):
        packed(LOGS, out, fmt="csv")
    with pytest.raises(UserError, match="workers"):
        packed(LOGS, out, workers=-1)
    assert not out.exists()


def test_refuses_to_overwrite_and_replaces_with_overwrite(tmp_path):
    out = tmp_path / "ds"
    packed(LOGS, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match="already exists"):
        packed(GAME_8192, out, fmt="macroxue-text")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    report = packed(GAME_8192, out, fmt="macroxue-text", overwrite=True)
    assert report.games == 1 and len(rows_of(out)) == 7303
    assert [r[-1] for r in runs_of(out)] == [GAME_8192.name]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary left behind


# ---------------------------------------------------------------------------------------------
# macroxue-text


def test_text_game_plain_file_in_small_shards(tmp_path):
    plain = tmp_path / "seed2031.txt"
    plain.write_bytes(gzip.decompress(GAME_8192.read_bytes()))
    out = tmp_path / "ds"
    report = packed(plain, out, fmt="macroxue-text", shard_rows=1000)
    assert (report.games, report.steps, report.skipped) == (1, 7303, [])
    assert len(list(out.glob("steps-*.npy"))) == 8  # 7 full shards of 1000 and one of 303
    assert_checks(out)
    game = read_text_game(GAME_8192)
    score = replay(game).score
    assert score == 175_624
    assert runs_of(out) == [(1, 2031, 7303, score, 8192, "no-moves", "seed2031.txt")]
    assert session_of(out)["source"] == "macroxue-text"
    rows = rows_of(out)
    boards, masks = from_exponents(game.exponents[:-1])
    assert np.array_equal(rows["board"], boards) and np.array_equal(rows["move_dir"], game.moves)
    assert np.array_equal(rows["ev_legal"], legal_masks(boards, masks))
    assert np.array_equal(rows["board_eval"], board_evals(boards, masks))
    assert not rows["branch_evs"].any() and set(rows["seed"].tolist()) == {2031}
    kinds = [VALUATION_TYPES[k] for k in game.valuation_types]
    assert rows["valuation_type"].tolist() == kinds and set(kinds) == {0, 1, 2}


def test_text_workers_give_identical_bytes_and_skip_bad_games(tmp_path):
    games = tmp_path / "games"
    games.mkdir()
    shutil.copy(GAME_8192, games / "a-2031.txt.gz")
    shutil.copy(GAME_32768, games / "c-1068.txt.gz")
    lines = gzip.decompress(GAME_8192.read_bytes()).decode().splitlines(keepends=True)
    (games / "b-truncated.txt").write_text("".join(lines[:3000]))
    # a board before move #46 that move #45 cannot make (its sum line kept consistent)
    assert lines[498].rstrip() == "|    64 |    16 |     8 |     4 |"
    lines[498], lines[506] = "|    64 |    16 |     8 |     8 |\n", "score 380 max 64 sum 104\n"
    (games / "d-wrong-board.txt").write_text("".join(lines))
    reports = {w: packed(games, tmp_path / f"w{w}", fmt="macroxue-text", workers=w)
               for w in (1, 2)}
    for report in reports.values():
        assert (report.games, report.steps) == (2, 7303 + 15_602)
        assert [name for name, _ in report.skipped] == ["b-truncated.txt", "d-wrong-board.txt"]
        truncated, wrong = (reason for _, reason in report.skipped)
        assert truncated.startswith("truncated: no final 'game# ...' line after ")
        assert wrong == "move #45 does not replay: board after the move differs"
    assert_checks(tmp_path / "w1")
    one, two = tmp_path / "w1", tmp_path / "w2"
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    for path in one.glob("steps-*.npy"):
        assert path.read_bytes() == (two / path.name).read_bytes()
    assert runs_of(one) == runs_of(two) == [
        (1, 2031, 7303, 175_624, 8192, "no-moves", "a-2031.txt.gz"),
        (2, 1068, 15_602, 464_860, 32768, "no-moves", "c-1068.txt.gz"),
    ]


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "lab2048", *map(str, args)],
                          capture_output=True, text=True)


def test_pack_command_exit_status_and_one_line_errors(tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(LOGS, logs)
    (logs / f"{TUPLE}.jsonl.gz").write_bytes(b"\x1f\x8b broken")
    result = _cli("pack", "--input", logs, "--out", tmp_path / "ds", "--workers", 1)
    assert result.returncode == 1, result.stderr
    assert f"skipped {TUPLE}.jsonl.gz:" in result.stderr and "2 games" in result.stdout
    result = _cli("pack", "--input", logs, "--out", tmp_path / "ds")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    result = _cli("pack", "--input", tmp_path / "nowhere", "--out", tmp_path / "x")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert str(tmp_path / "nowhere") in result.stderr
    assert _cli("check", tmp_path / "ds").returncode == 0


def test_overwrite_never_deletes_an_input_or_a_directory_that_is_not_a_dataset(tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(LOGS, logs)
    before = sorted(p.name for p in logs.iterdir())
    for out, message in ((logs, "logs: is the input; choose another output directory"),
                         (tmp_path, "contains the input")):
        result = _cli("pack", "--input", logs, "--out", out, "--overwrite")
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    notes = tmp_path / "notes"
    (notes / "docs").mkdir(parents=True)
    (notes / "notes.txt").write_text("mine")
    result = _cli("pack", "--input", logs, "--out", notes, "--overwrite")
    assert result.returncode == 2 and result.stderr == (
        f"lab2048: error: {notes}: not a dataset (no metadata.db); --overwrite replaces only "
        "a dataset, so nothing was deleted\n")
    assert sorted(p.name for p in logs.iterdir()) == before
    assert sorted(p.name for p in notes.iterdir()) == ["docs", "notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "notes"]


def test_a_full_disk_is_one_line_and_keeps_the_earlier_dataset(tmp_path, monkeypatch):
    import errno

    import lab2048.data.dataset as dataset

    out = tmp_path / "ds"
    packed(LOGS, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dataset.np, "save", full)
    with pytest.raises(UserError, match=r"ds: cannot write the dataset \(No space left"):
        packed(GAME_8192, out, fmt="macroxue-text", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]

