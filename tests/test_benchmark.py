"""The engine and teacher benchmarks run, and their C baselines compute exactly what numba
computes.

No timing is asserted here (timings live in benchmarks/); --quick runs tiny sizes and the
benchmark itself fails unless numba and C agree: the checksums of the engine's scalar, batch
and random-game passes; the teacher's move values, moves and node counts.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the C baselines need gcc")
@pytest.mark.parametrize(("bench", "agreement", "figures"), [
    ("engine.py", "checksums agree", ("scalar", "batch", "games")),
    ("teacher.py", "values, moves and node counts agree", ("search",)),
])
def test_benchmark_agrees_with_c(bench, agreement, figures):
    result = subprocess.run([sys.executable, str(BENCHMARKS / bench), "--quick"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert agreement in result.stdout
    for figure in figures:
        assert any(line.startswith(figure) for line in result.stdout.splitlines())


def test_teacher_strength_merges_runs_of_one_setting(tmp_path):
    """Two seed ranges run apart and reported together equal their games pooled; the picture
    is drawn."""
    run = [sys.executable, str(BENCHMARKS / "teacher_strength.py")]
    quick = ["--games", "2", "--max-moves", "30", "--setting", "depth=1,adaptive=false"]
    for first, name in ((1, "a"), (3, "b")):
        result = subprocess.run([*run, *quick, "--first-seed", str(first),
                                 "--json", str(tmp_path / f"{name}.json")],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    result = subprocess.run([*run, "--from-json", str(tmp_path / "a.json"), "--from-json",
                             str(tmp_path / "b.json"), "--json", str(tmp_path / "all.json"),
                             "--plot", str(tmp_path / "all.png")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    parts = [json.loads((tmp_path / f"{n}.json").read_text())[0] for n in "ab"]
    (pooled,) = json.loads((tmp_path / "all.json").read_text())
    games = parts[0]["per_game"] + parts[1]["per_game"]
    assert [g["seed"] for g in pooled["per_game"]] == [1, 2, 3, 4]
    assert pooled["mean_score"] == pytest.approx(sum(g["score"] for g in games) / 4)
    assert pooled["moves"] == sum(p["moves"] for p in parts) == 4 * 30
    assert (tmp_path / "all.png").read_bytes()[:4] == b"\x89PNG"
    torn = tmp_path / "torn.json"
    torn.write_text((tmp_path / "all.json").read_text()[:200])
    result = subprocess.run([*run, "--from-json", str(torn)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{torn}: not a teacher_strength --json file (")
    assert len(result.stderr.strip().splitlines()) == 1
