"""The engine benchmark runs and its C baseline computes exactly what the engine computes.

No timing is asserted here (timings live in benchmarks/); --quick checks the checksums of the
scalar, batch and random-game passes, which must match between numba and C.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks" / "engine.py"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the C baseline needs gcc")
def test_engine_benchmark_agrees_with_c():
    result = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "checksums agree" in result.stdout
    for figure in ("scalar", "batch", "games"):
        assert any(line.startswith(figure) for line in result.stdout.splitlines())
