"""Benchmark: `value-sidecar` against the I/O it cannot avoid, measured in the same run.

Builds a synthetic dataset of valid random-agent games (default 10 million steps, in shards of
2^21 rows), then times
- baseline: read every steps shard into memory with NumPy and write arrays of the sidecar's
  size (24 bytes a row) with np.save;
- sidecar: `build_sidecar` with all cores (checks, rewards, returns, h, fingerprints, files).
Both run warm (the shards are read once first), interleaved `--repeat` times. Prints steps/s
and the ratio sidecar time / baseline time, best to best and median to median; the target is
<= 2.

    python benchmarks/value_sidecar.py [--steps 10000000] [--dir /tmp/lab2048-bench]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from numba import njit

from lab2048.data.dataset import DatasetWriter, Run, make_rows
from lab2048.data.sidecar import VALUES_DTYPE, SidecarConfig, build_sidecar
from lab2048.engine import kernels as K
from lab2048.play.agents import random_move


@njit(cache=True)
def _random_games(first_seed, steps, move_xor, line_reward, boards, moves, legals, ranks,
                  run_of, scores):
    """Fill `steps` rows with whole random-agent games; return the number of games."""
    n, game = 0, 0
    while n < steps:
        seed = np.uint64(first_seed + game)
        b, m, spawns, score, k = K.new_board(seed), 0, 2, 0, 0
        legal = K.legal_mask(b, m, move_xor, line_reward)
        while legal != 0 and n < steps:
            d = random_move(seed, k, legal)
            boards[n], moves[n], legals[n], ranks[n], run_of[n] = b, d, legal, \
                K.highest_exponent(b, m), game
            b, m, reward, spawns, legal, _ = K.step(b, m, d, seed, spawns, move_xor,
                                                     line_reward)
            score += reward
            n += 1
            k += 1
        scores[game] = score
        game += 1
    return game


def make_dataset(root: Path, steps: int, shard_rows: int) -> None:
    boards = np.zeros(steps, np.uint64)
    moves, legals, ranks = (np.zeros(steps, np.uint8) for _ in range(3))
    run_of = np.zeros(steps, np.int64)
    scores = np.zeros(steps // 10 + 10, np.int64)
    games = _random_games(1, steps, *K.tables(), boards, moves, legals, ranks, run_of, scores)
    starts = np.searchsorted(run_of, np.arange(games + 1))
    with DatasetWriter(root, session={"source": "benchmark"}, shard_rows=shard_rows,
                       overwrite=True) as writer:
        for g in range(games):
            a, b = starts[g], starts[g + 1]
            rows = make_rows(run_id=g + 1, seed=g + 1, boards=boards[a:b],
                             masks=np.zeros(b - a, np.uint16), moves=moves[a:b],
                             ev_legal=legals[a:b], max_rank=ranks[a:b],
                             board_eval=np.zeros(b - a, np.int32))
            writer.add_run(Run(g + 1, g + 1, b - a, int(scores[g]), 0), rows)


def io_baseline(root: Path, out: Path) -> float:
    start = time.perf_counter()
    for i, path in enumerate(sorted(root.glob("steps-*.npy"))):
        rows = np.load(path)
        np.save(out / f"values-{i:05d}.npy", np.zeros(len(rows), VALUES_DTYPE))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000_000)
    parser.add_argument("--shard-rows", type=int, default=1 << 21)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lab2048-bench-", dir=args.dir))
    try:
        data, out = scratch / "ds", scratch / "io"
        out.mkdir()
        t = time.perf_counter()
        make_dataset(data, args.steps, args.shard_rows)
        print(f"dataset: {args.steps:,} steps of random games in "
              f"{time.perf_counter() - t:.1f} s")
        io_baseline(data, out)  # warm the page cache (and compile the kernels below)
        cfg = SidecarConfig()
        build_sidecar(data, cfg, overwrite=True, progress=False)
        base, side = [], []
        for _ in range(args.repeat):  # interleaved: both see the same drift of the machine
            base.append(io_baseline(data, out))
            side.append(_timed(lambda: build_sidecar(data, cfg, overwrite=True,
                                                     progress=False)))
        b, s = min(base), min(side)
        print(f"I/O baseline (read steps, write sidecar-sized arrays): best {b:.2f} s, "
              f"{args.steps / b:,.0f} steps/s")
        print(f"value-sidecar: best {s:.2f} s, {args.steps / s:,.0f} steps/s")
        print(f"ratio sidecar / I/O baseline: {s / b:.2f} best to best, "
              f"{np.median(side) / np.median(base):.2f} median to median (target <= 2)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
