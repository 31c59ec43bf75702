"""`lab2048 generate`: valid datasets, independent of worker count, resumable after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

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
    kept = len(list(staging.glob("game-*.npz")))
    assert 2 <= kept < 24 and not out.exists()
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    assert f"resuming: {kept} of 24 games already played" in result.stderr
    assert f"24 games ({24 - kept} played now)" in result.stdout
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
