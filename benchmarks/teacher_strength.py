"""Teacher strength and speed: seeded full games per setting, scores and tile-reach rates.

    python benchmarks/teacher_strength.py --games 100 --workers 2 \\
        --setting depth=1,adaptive=false --setting depth=2 [--json out.json]

    python benchmarks/teacher_strength.py --games 100 --setting preset=strong

Each --setting is a comma-separated list of TeacherConfig fields (unset ones keep their
defaults), optionally starting from a preset (`preset=strong,table_rank=4`); with none, the
default TeacherConfig is measured. Game i plays seed first_seed + i. Per setting it prints:
games, moves/s (moves over the summed wall time of the games, each game on one core), CPU
moves/s (over the games' thread CPU time: the speed of one core even on a shared machine),
nodes/s, the share of moves valued by a formation table (per valuation type in the JSON),
mean and median score with a 95% interval of the mean (normal, from the games' spread), and
the share of games reaching 2048 ... 32768. Workers are processes, one game at a time each;
with more workers than idle cores the per-core wall rates drop, the scores do not (games are
deterministic).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time

import numpy as np

from lab2048.data.dataset import VALUATION_TYPES
from lab2048.teacher import TeacherConfig, play_game

TILES = (2048, 4096, 8192, 16384, 32768, 65536)


def parse_setting(text: str) -> TeacherConfig:
    values = {}
    preset = "default"
    types = {f.name: f.type for f in dataclasses.fields(TeacherConfig)}
    for item in filter(None, text.split(",")):
        key, _, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if key == "preset":
            preset = raw.strip()
            continue
        if key not in types:
            raise SystemExit(f"unknown setting {key!r} (known: {', '.join(types)})")
        typ = types[key] if isinstance(types[key], str) else types[key].__name__
        if typ == "bool":
            values[key] = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            values[key] = {"int": int, "float": float, "str": str}[typ](raw)
    return TeacherConfig.preset(preset, **values)


def _one(job):
    seed, cfg, max_moves = job
    g = play_game(seed, cfg, max_moves)
    return (seed, g.score, len(g.moves), g.highest_tile, g.end_reason, g.seconds, g.nodes,
            g.cpu_seconds, np.bincount(g.valuation, minlength=len(VALUATION_TYPES)))


def measure(cfg: TeacherConfig, seeds, workers: int, max_moves: int = 0) -> dict:
    jobs = [(int(s), cfg, max_moves) for s in seeds]
    start = time.perf_counter()
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rows = list(pool.imap_unordered(_one, jobs))
    else:
        rows = [_one(j) for j in jobs]
    wall = time.perf_counter() - start
    rows.sort()
    scores = np.array([r[1] for r in rows])
    moves = np.array([r[2] for r in rows])
    highest = np.array([r[3] for r in rows])
    seconds = sum(r[5] for r in rows)
    nodes = sum(r[6] for r in rows)
    cpu = sum(r[7] for r in rows)
    return {
        "settings": dataclasses.asdict(cfg),
        "games": len(rows),
        "max_moves": max_moves,
        "moves": int(moves.sum()),
        "moves_per_s": float(moves.sum() / seconds),
        "cpu_moves_per_s": float(moves.sum() / cpu),
        "table_share": float(sum(r[8][1:].sum() for r in rows) / moves.sum()),
        "valuation_share": {name: float(sum(r[8][i] for r in rows) / moves.sum())
                            for name, i in VALUATION_TYPES.items()},
        "nodes_per_s": float(nodes / seconds),
        "game_seconds": seconds,
        "wall_seconds": wall,
        "mean_score": float(scores.mean()),
        "mean_score_ci95": float(1.96 * scores.std(ddof=1) / np.sqrt(len(scores)))
        if len(scores) > 1 else 0.0,
        "median_score": float(np.median(scores)),
        "max_score": int(scores.max()),
        "reach": {str(t): float((highest >= t).mean()) for t in TILES},
        "per_game": [{"seed": r[0], "score": int(r[1]), "moves": int(r[2]),
                      "highest_tile": int(r[3]), "end_reason": int(r[4])} for r in rows],
    }


def describe(cfg: TeacherConfig) -> str:
    if cfg.evaluation == "corner":
        return (f"corner {cfg.depth}" + (f" r{cfg.table_rank}" if cfg.table_rank else "")
                + (f"+{cfg.table10_rank}" if cfg.table10_rank else ""))
    if cfg.adaptive and cfg.max_depth > cfg.depth:
        return f"{cfg.depth}..{cfg.max_depth} (offset {cfg.depth_offset})"
    return str(cfg.depth)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--games", type=int, default=100)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-moves", type=int, default=0, help="per game, 0 = no limit")
    ap.add_argument("--setting", action="append", default=[],
                    help="TeacherConfig fields, e.g. depth=3,max_depth=4 or preset=strong "
                    "(repeatable)")
    ap.add_argument("--json", help="write the results (with per-game rows) here")
    args = ap.parse_args()
    settings = [parse_setting(s) for s in args.setting] or [TeacherConfig()]
    play_game(1, settings[0], max_moves=5)  # compile or load the cache before timing
    seeds = np.arange(args.games, dtype=np.uint64) + np.uint64(args.first_seed)
    results = []
    print(f"{'depth':<16} {'games':>5} {'moves/s':>9} {'cpu mv/s':>9} {'nodes/s':>11} "
          f"{'table':>5} {'mean':>9} {'±95%':>7} {'median':>9} "
          + " ".join(f"{t:>6}" for t in TILES[:-1]), flush=True)
    for cfg in settings:
        r = measure(cfg, seeds, args.workers, args.max_moves)
        results.append(r)
        print(f"{describe(cfg):<16} {r['games']:>5} {r['moves_per_s']:>9,.0f} "
              f"{r['cpu_moves_per_s']:>9,.0f} {r['nodes_per_s']:>11,.0f} "
              f"{r['table_share']:>5.0%} {r['mean_score']:>9,.0f} {r['mean_score_ci95']:>7,.0f} "
              f"{r['median_score']:>9,.0f} "
              + " ".join(f"{r['reach'][str(t)]:>6.0%}" for t in TILES[:-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
