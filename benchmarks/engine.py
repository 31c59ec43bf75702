"""Engine speed as a ratio against a C table-lookup engine compiled here (gcc -O3), same run.

    python benchmarks/engine.py [--boards 1000000] [--games 2000] [--reps 5] [--quick]

Three figures, each numba moves/s divided by C moves/s over the same work:
- scalar: the engine's scalar kernel `kernels.move` (mask check, table path), called in a
  compiled loop over every board and direction;
- batch:  `engine.move_all` called from Python on a uint64 array (allocation and input checks
  included) against the C loop filling the same arrays;
- games:  `play.agents.play_games("random", seeds)` against the same random-agent games in C
  (legality, move, seeded spawn each move).
Boards come from random-agent games. Both sides print checksums, which must match: the two
engines do the same work with the same results, or the benchmark fails. Each figure is the best
of --reps runs, C and numba interleaved. Target: every ratio >= 0.5.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import c_baseline
import numpy as np
from numba import njit

from lab2048.engine import kernels as K
from lab2048.engine import move_all
from lab2048.play.agents import AGENT_SALT, play_games


@njit(cache=True)
def collect_boards(n, seed, move_xor, line_reward):
    """n boards met along random-agent games with seeds seed, seed + 1, ..."""
    out = np.empty(n, np.uint64)
    i = 0
    g = seed
    while i < n:
        b, m, spawns, moves = K.new_board(np.uint64(g)), 0, 2, 0
        legal = K.legal_mask(b, m, move_xor, line_reward)
        while legal != 0 and i < n:
            out[i] = b
            i += 1
            x = K.draw(np.uint64(g) ^ AGENT_SALT, moves)
            d = np.int64(x % np.uint64(4))
            while not (legal >> d) & 1:
                d = (d + 1) % 4
            b, m, _, spawns, legal, _ = K.step(b, m, d, np.uint64(g), spawns, move_xor, line_reward)
            moves += 1
        g += 1
    return out


@njit(cache=True)
def scalar_pass(boards, move_xor, line_reward):
    check = np.uint64(0)
    rewards = 0
    for i in range(len(boards)):
        for d in range(4):
            nb, _, r = K.move(boards[i], 0, d, move_xor, line_reward)
            check ^= nb + np.uint64(d)
            rewards += r
    return check, rewards


def batch_checksum(res) -> int:
    mixed = res.boards + res.rewards.astype(np.uint64) * np.uint64(31) + np.repeat(
        res.legal.astype(np.uint64), 4).reshape(-1, 4)
    return int(np.bitwise_xor.reduce(mixed.ravel()))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = c_baseline.parser(__doc__, reps=5)
    ap.add_argument("--boards", type=int, default=1_000_000)
    ap.add_argument("--games", type=int, default=2000)
    args = ap.parse_args()
    if args.quick:
        args.boards, args.games, args.reps = 20_000, 20, 1
    gcc = c_baseline.find_gcc("engine.py")

    tables = K.tables()
    boards = collect_boards(args.boards, 10_000, *tables)
    seeds = np.arange(args.games, dtype=np.uint64) + np.uint64(1)
    # warm up (compile or load from cache) outside the timings
    scalar_pass(boards[:10], *tables)
    move_all(boards[:10])
    play_games("random", seeds[:2], progress=False)

    with tempfile.TemporaryDirectory() as tmp:
        exe, board_file = c_baseline.build(gcc, "engine_ref.c", tmp), Path(tmp) / "boards.u64"
        boards.tofile(board_file)
        c_best = {"scalar": float("inf"), "batch": float("inf"), "games": float("inf")}
        nb_best = dict(c_best)
        for _ in range(args.reps):
            c = json.loads(subprocess.run(
                [str(exe), str(board_file), "2", str(args.games), "1"],
                check=True, capture_output=True, text=True).stdout)
            for key in c_best:
                c_best[key] = min(c_best[key], c[key]["seconds"])
            t, (check, rewards) = timed(lambda: scalar_pass(boards, *tables))
            nb_best["scalar"] = min(nb_best["scalar"], t)
            t, res = timed(lambda: move_all(boards))
            nb_best["batch"] = min(nb_best["batch"], t)
            t, games = timed(lambda: play_games("random", seeds, progress=False))
            nb_best["games"] = min(nb_best["games"], t)

    # the same work with the same results, or no figure at all
    agree = {
        "scalar": (f"{int(check):016x}", int(rewards)) == (c["scalar"]["checksum"],
                                                           c["scalar"]["rewards"]),
        "batch": f"{batch_checksum(res):016x}" == c["batch"]["checksum"],
        "games": (int(games.moves.sum()), int(games.scores.sum())) == (c["games"]["moves"],
                                                                      c["games"]["score"]),
    }
    if not all(agree.values()):
        print(f"numba and C engines disagree: {agree}", file=sys.stderr)
        return 1

    moves = {"scalar": 4 * len(boards), "batch": 4 * len(boards),
             "games": int(games.moves.sum())}
    print(f"engine benchmark: {len(boards):,} boards from random games, {args.games} random "
          f"games ({moves['games']:,} moves), best of {args.reps}; C built with gcc -O3")
    print(f"{'figure':<8} {'numba moves/s':>15} {'C moves/s':>15} {'ratio':>7}")
    ratios = {}
    for key in ("scalar", "batch", "games"):
        nb_rate, c_rate = moves[key] / nb_best[key], moves[key] / c_best[key]
        ratios[key] = nb_rate / c_rate
        print(f"{key:<8} {nb_rate:>15,.0f} {c_rate:>15,.0f} {ratios[key]:>7.2f}")
    print("checksums agree; target ratio >= 0.5: "
          + ("met" if min(ratios.values()) >= 0.5 else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
