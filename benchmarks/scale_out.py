"""`generate` on a local Ray head against local worker processes, 1 and 2 workers.

    python benchmarks/scale_out.py [--games 24] [--max-moves 2000] [--reps 2]

Starts a Ray head on 127.0.0.1 with 2 CPUs (`lab2048.scale.local_head`), then generates the
same dataset (seeds 100.., the default teacher) with local workers and on the head, 1 and 2
workers each (on Ray, `--workers` caps the games in flight), runs interleaved, and prints wall
moves/s per run, the best of --reps, and the ratios Ray / local and 2 workers / 1. Every run's
dataset must be the same bytes, or the benchmark fails. Needs `pip install '.[ray]'`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lab2048.data.config import GenerateConfig
from lab2048.data.generate import generate
from lab2048.scale import LOOPBACK_ENV, local_head


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--games", type=int, default=24)
    ap.add_argument("--max-moves", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    os.environ.update(LOOPBACK_ENV)  # before ray is imported
    best: dict[tuple[str, int], float] = {}
    reference = None
    with tempfile.TemporaryDirectory() as tmp, local_head(num_cpus=2) as head:
        for rep in range(args.reps):
            for where in ("local", "ray"):
                for workers in (1, 2):
                    out = Path(tmp) / f"{where}-{workers}"
                    cfg = GenerateConfig(out=str(out), games=args.games, seed=100,
                                         workers=workers, max_moves=args.max_moves,
                                         ray=head.address if where == "ray" else "")
                    start = time.perf_counter()
                    summary = generate(cfg, progress=False)
                    rate = summary["steps"] / (time.perf_counter() - start)
                    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
                    if reference is None:
                        reference = files
                    elif files != reference:
                        print(f"FAIL: {where} with {workers} workers wrote other bytes")
                        return 1
                    shutil.rmtree(out)
                    key = (where, workers)
                    best[key] = max(best.get(key, 0.0), rate)
                    print(f"rep {rep}: {where:5} {workers} worker(s): {summary['steps']:,} "
                          f"moves, {rate:,.0f} moves/s", flush=True)
    load = os.getloadavg()[0]
    print(f"best of {args.reps} (load average {load:.1f} on {os.cpu_count()} cores):")
    for workers in (1, 2):
        print(f"  {workers} worker(s): local {best['local', workers]:,.0f}, ray "
              f"{best['ray', workers]:,.0f} moves/s; ray / local "
              f"{best['ray', workers] / best['local', workers]:.2f}")
    for where in ("local", "ray"):
        print(f"  {where}: 2 workers / 1 = {best[where, 2] / best[where, 1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
