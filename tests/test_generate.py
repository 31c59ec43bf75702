"""`lab2048 generate`: valid datasets, independent of worker count, resumable after SIGKILL."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from resume import assert_resumes

from lab2048.data.check import check_dataset, format_report
from lab2048.data.config import GenerateConfig
from lab2048.data.dataset import STEP_DTYPE, Dataset
from lab2048.data.generate import generate, staging_dir
from lab2048.teacher.config import TeacherConfig

SMALL = dict(games=4, seed=70, max_moves=150, teacher=TeacherConfig(depth=1))


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "lab2048", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


def _shards(root):
    return [p.read_bytes() for p in sorted(root.glob("steps-*.npy"))]


def test_generated_dataset_passes_check_and_is_independent_of_workers(tmp_path):
    one = generate(GenerateConfig(out=str(tmp_path / "one"), workers=1, **SMALL),
                   progress=False)
    two = generate(GenerateConfig(out=str(tmp_path / "two"), workers=2, shard_rows=200,
                                  **SMALL), progress=False)
    assert one["steps"] == two["steps"] == 4 * 150  # max_moves cuts every game
    report = check_dataset(tmp_path / "two")
    assert report.ok and report.ev_legal_differs == 0, format_report(report)
    rows = np.concatenate([np.load(p) for p in sorted((tmp_path / "two").glob("steps-*"))])
    assert rows.dtype == STEP_DTYPE and len(_shards(tmp_path / "two")) == 3
    assert np.load(tmp_path / "one" / "steps-00000.npy").tobytes() == rows.tobytes()
    ds = Dataset(tmp_path / "one")
    assert ds.runs["id"].tolist() == [1, 2, 3, 4] and ds.runs["seed"].tolist() == [70, 71, 72, 73]
    assert json.loads(ds.session["teacher"])["depth"] == 1
    assert ds.session["source"] == "lab2048 generate"
    assert (rows["valuation_type"] == 0).all()
    legal = rows["ev_legal"][:, None] >> np.arange(4) & 1
    assert (rows["branch_evs"][legal == 0] == 0).all()
    assert not staging_dir(tmp_path / "one").exists()


def test_interrupted_generate_resumes_with_the_same_command(tmp_path):
    out = tmp_path / "ds"
    args = ("generate", "--out", out, "--games", 24, "--seed", 5, "--depth", 1,
            "--max-moves", 500, "--workers", 1)
    proc = subprocess.Popen([sys.executable, "-m", "lab2048", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    staging = staging_dir(out)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(staging.glob("game-*.npz"))) < 2:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert_resumes(_cli, args, out, 2, 24)
    fresh = tmp_path / "fresh"
    assert _cli("generate", "--out", fresh, *args[3:]).returncode == 0
    assert _shards(out) == _shards(fresh)
    assert check_dataset(out).ok


def test_generate_refuses_clearly(tmp_path):
    out = tmp_path / "ds"
    base = ("generate", "--out", out, "--games", 1, "--depth", 1, "--max-moves", 20)
    assert _cli(*base).returncode == 0
    result = _cli(*base)
    assert result.returncode == 2 and "already exists (pass --overwrite" in result.stderr
    assert _cli(*base, "--overwrite").returncode == 0
    staging_dir(tmp_path / "other").mkdir()
    (staging_dir(tmp_path / "other") / "settings.json").write_text("{}")
    result = _cli("generate", "--out", tmp_path / "other", "--games", 1, "--depth", 1)
    assert result.returncode == 2 and "other settings" in result.stderr
    for bad, message in [(("--games", 0), "games must be at least 1"),
                         (("--depth", 0), "depth"), ((), "--out DIR is required")]:
        args = ("generate", *(("--out", tmp_path / "x") if bad else ()), *bad)
        result = _cli(*args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_damaged_staged_game_is_played_again(tmp_path):
    from lab2048.data.generate import _prepare_staging, play_one

    cfg = GenerateConfig(out=str(tmp_path / "ds"), workers=1, **{**SMALL, "games": 3})
    fresh = generate(GenerateConfig(**{**cfg.__dict__, "out": str(tmp_path / "fresh")}),
                     progress=False)
    staging, _ = _prepare_staging(cfg, tmp_path / "ds", overwrite=False)
    for i in range(3):
        play_one(i, cfg.seed + i, cfg.teacher, cfg.max_moves, staging)
    game = staging / "game-0000001.npz"
    game.write_bytes(game.read_bytes()[:300])  # torn by a kill or a full disk
    result = _cli("generate", "--out", tmp_path / "ds", "--games", 3, "--seed", 70,
                  "--max-moves", 150, "--depth", 1, "--workers", 1)
    assert result.returncode == 0, result.stderr
    assert "game-0000001.npz: damaged; playing game 1 again" in result.stderr
    assert _shards(tmp_path / "ds") == _shards(tmp_path / "fresh") and fresh["games"] == 3


def test_overwrite_replaces_only_a_dataset_and_workers_must_not_be_negative(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    result = _cli("generate", "--out", notes, "--games", 1, "--depth", 1, "--overwrite")
    assert result.returncode == 2 and "not a dataset (no metadata.db)" in result.stderr
    assert [p.name for p in notes.iterdir()] == ["notes.txt"]
    result = _cli("generate", "--out", tmp_path / "x", "--games", 1, "--workers", -1)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "workers must be at least 0, got -1" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_a_full_disk_is_one_line_and_keeps_the_staged_games(tmp_path, monkeypatch):
    import errno

    import lab2048.data.dataset as dataset
    import lab2048.data.generate as gen
    from lab2048.errors import UserError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    cfg = GenerateConfig(out=str(tmp_path / "ds"), workers=1, **{**SMALL, "games": 2})
    staging, _ = gen._prepare_staging(cfg, tmp_path / "ds", overwrite=False)
    gen.play_one(0, cfg.seed, cfg.teacher, cfg.max_moves, staging)
    monkeypatch.setattr(gen.np, "savez", full)
    with pytest.raises(UserError, match=r"cannot write game 1 \(No space left on device\)$"):
        gen.play_one(1, cfg.seed + 1, cfg.teacher, cfg.max_moves, staging)
    monkeypatch.undo()
    gen.play_one(1, cfg.seed + 1, cfg.teacher, cfg.max_moves, staging)
    monkeypatch.setattr(dataset.np, "save", full)
    with pytest.raises(UserError, match=r"ds: cannot write the dataset \(No space left"):
        generate(cfg, progress=False)
    assert not (tmp_path / "ds").exists()
    assert sorted(p.name for p in staging.iterdir()) == [
        "game-0000000.npz", "game-0000001.npz", "settings.json"]
    monkeypatch.undo()
    assert generate(cfg, progress=False)["played_now"] == 0


def _children(pid):
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _gone(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_their_parent(tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "lab2048", "generate", "--out", str(out),
                             "--games", "50", "--depth", "1", "--max-moves", "2000",
                             "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(staging_dir(out).glob("game-*.npz")):
            time.sleep(0.05)
        workers = [k for k in _children(proc.pid) if "python" in
                   Path(f"/proc/{k}/cmdline").read_bytes().decode(errors="replace")]
        assert len(workers) >= 2
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, as a user's kill -9 would
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and not all(_gone(k) for k in workers):
            time.sleep(0.05)
        assert all(_gone(k) for k in workers)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
