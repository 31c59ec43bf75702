"""The engine and teacher benchmarks run, and their C baselines compute exactly what numba
computes.

No timing is asserted here (timings live in benchmarks/); --quick runs tiny sizes and the
benchmark itself fails unless numba and C agree: the checksums of the engine's scalar, batch
and random-game passes; the teacher's move values, moves and node counts.
"""

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
