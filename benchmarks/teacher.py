"""Teacher search speed as a ratio against a plain C expectimax compiled here (gcc -O3).

    python benchmarks/teacher.py [--games 4] [--every 5] [--depth 2] [--max-depth 3]
                                 [--reps 3] [--quick]

Boards: every --every-th board of default-teacher games with seeds 1..--games (boards
holding a 16384 or more are left out: the C baseline has no 2^16 path). Both sides search
every board with the same settings (TeacherConfig defaults except --depth and --max-depth),
the same heuristic table (written from `LINE_TABLE` for the C side), cutoff, transposition
table policy and depth rule. Figure: numba search nodes/s divided by C nodes/s over the same
boards, best of --reps, C and numba interleaved. The two must count the same nodes and find
the same move values (up to float rounding) and moves, or the benchmark fails.
Target: ratio >= 0.5.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import c_baseline
import numpy as np

from lab2048.teacher import TeacherConfig, play_game, search_boards
from lab2048.teacher.heuristic import LINE_TABLE


def collect_boards(games: int, every: int) -> np.ndarray:
    """Every `every`-th board of default-teacher games with seeds 1..games, below 16384."""
    out = []
    for seed in range(1, games + 1):
        g = play_game(seed, TeacherConfig())
        keep = (g.masks == 0) & (g.max_rank < 14)
        out.append(g.boards[keep][::every])
    return np.concatenate(out)


def c_moves(values: np.ndarray, legal: np.ndarray) -> np.ndarray:
    """move_dir from raw values, the rule of `search.choose` (float32 of V / 1000, first max)."""
    evs = np.where(legal, (values / 1000.0).astype(np.float32), -np.inf)
    return np.argmax(evs, axis=1)


def main() -> int:
    ap = c_baseline.parser(__doc__, reps=3)
    ap.add_argument("--games", type=int, default=4)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--depth", type=int, default=TeacherConfig.depth)
    ap.add_argument("--max-depth", type=int, default=TeacherConfig.max_depth)
    args = ap.parse_args()
    if args.quick:
        args.games, args.every, args.reps = 1, 40, 1
    gcc = c_baseline.find_gcc("teacher.py")

    cfg = TeacherConfig(depth=args.depth, max_depth=max(args.depth, args.max_depth))
    boards = collect_boards(args.games, args.every)
    masks = np.zeros(len(boards), np.uint16)
    search_boards(boards[:2], masks[:2], cfg)  # warm up (compile or load the cache)

    with tempfile.TemporaryDirectory() as tmp:
        exe = c_baseline.build(gcc, "teacher_ref.c", tmp, "-lm")
        table_file, board_file = Path(tmp) / "table.f32", Path(tmp) / "boards.u64"
        values_file = Path(tmp) / "values.f64"
        LINE_TABLE.astype("<f4").tofile(table_file)
        boards.astype("<u8").tofile(board_file)
        c_cmd = [str(exe), str(table_file), str(board_file), str(cfg.depth), str(cfg.max_depth),
                 str(int(cfg.adaptive)), str(cfg.depth_offset), repr(cfg.prob_cutoff),
                 str(cfg.tt_bits), "1", str(values_file)]
        c_best = nb_best = float("inf")
        for _ in range(args.reps):
            c = json.loads(subprocess.run(c_cmd, check=True, capture_output=True,
                                          text=True).stdout)
            c_best = min(c_best, c["seconds"])
            t0 = time.perf_counter()
            res = search_boards(boards, masks, cfg)
            nb_best = min(nb_best, time.perf_counter() - t0)
        c_values = np.fromfile(values_file, "<f8").reshape(-1, 4)

    nb_nodes = int(res["nodes"].sum())
    legal = (res["ev_legal"][:, None] >> np.arange(4)) & 1 == 1
    agree = {
        "nodes": nb_nodes == c["nodes"],
        "values": bool(np.allclose(res["values"], c_values, rtol=1e-9, atol=1e-6)),
        "moves": bool(np.array_equal(res["move_dir"], c_moves(c_values, legal))),
    }
    if not all(agree.values()):
        worst = float(np.abs(res["values"] - c_values).max())
        print(f"numba and C searches disagree: {agree} (numba nodes {nb_nodes:,}, C nodes "
              f"{c['nodes']:,}, largest value difference {worst:g})", file=sys.stderr)
        return 1

    settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items())
    plies = np.bincount(res["plies"], minlength=cfg.max_depth + 1)[cfg.depth:]
    print(f"teacher benchmark: {len(boards):,} boards from {args.games} teacher games, "
          f"{nb_nodes:,} nodes, best of {args.reps}; C built with gcc -O3")
    print(f"settings: {settings}; boards per depth {cfg.depth}..{cfg.max_depth}: "
          f"{', '.join(str(int(p)) for p in plies)}")
    nb_rate, c_rate = nb_nodes / nb_best, c["nodes"] / c_best
    ratio = nb_rate / c_rate
    print(f"{'figure':<8} {'numba nodes/s':>15} {'C nodes/s':>15} {'ratio':>7}")
    print(f"{'search':<8} {nb_rate:>15,.0f} {c_rate:>15,.0f} {ratio:>7.2f}")
    print(f"boards/s: numba {len(boards) / nb_best:,.0f}, C {len(boards) / c_best:,.0f}")
    print("values, moves and node counts agree; target ratio >= 0.5: "
          + ("met" if ratio >= 0.5 else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
