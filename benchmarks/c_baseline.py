"""What the benchmarks against a C baseline (engine.py, teacher.py) share: their --reps and
--quick options, and building the C side (benchmarks/*_ref.c with lines_ref.h) by gcc -O3.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def parser(doc: str, reps: int) -> argparse.ArgumentParser:
    """The script's parser (its docstring's first line), with --reps and --quick."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--reps", type=int, default=reps,
                    help="each figure is the best of this many runs, C and numba interleaved")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: check agreement only")
    return ap


def find_gcc(script: str) -> str:
    """gcc's path; without gcc the baseline cannot be built: one line and exit status 2."""
    gcc = shutil.which("gcc")
    if gcc is None:
        print(f"benchmarks/{script}: gcc not found; cannot build the C baseline",
              file=sys.stderr)
        sys.exit(2)
    return gcc


def build(gcc: str, source: str, out_dir: Path, *libs: str) -> Path:
    """benchmarks/SOURCE compiled with gcc -O3 into out_dir; the executable's path."""
    exe = Path(out_dir) / Path(source).stem
    subprocess.run([gcc, "-O3", "-o", str(exe), str(HERE / source), *libs], check=True)
    return exe
