"""Teacher strength and speed: seeded full games per setting, scores and tile-reach rates.

    python benchmarks/teacher_strength.py --games 100 --workers 2 \\
        --setting depth=1,adaptive=false --setting depth=2 [--json out.json]

    python benchmarks/teacher_strength.py --games 100 --setting preset=strong

    python benchmarks/teacher_strength.py --from-json a.json --from-json b.json --plot s.png

Each --setting is a comma-separated list of TeacherConfig fields (unset ones keep their
defaults), optionally starting from a preset (`preset=strong,table_rank=4`); with none, the
default TeacherConfig is measured. Game i plays seed first_seed + i. Per setting it prints:
games, moves/s (moves over the summed wall time of the games, each game on one core), CPU
moves/s (over the games' thread CPU time: the speed of one core even on a shared machine),
nodes/s, the share of moves valued by a formation table (per valuation type in the JSON),
mean and median score with a 95% interval of the mean (normal, from the games' spread), and
the share of games reaching 2048 ... 32768. `--from-json` reports earlier `--json` results
instead of playing, runs of one setting (two seed ranges) pooled into one; `--plot` draws the
settings' scores and reach rates side by side. Workers are processes, one game at a time each;
with more workers than idle cores the per-core wall rates drop, the scores do not (games are
deterministic).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
from pathlib import Path

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
    return {"seed": int(seed), "score": int(g.score), "moves": len(g.moves),
            "highest_tile": int(g.highest_tile), "end_reason": int(g.end_reason),
            "seconds": g.seconds, "cpu_seconds": g.cpu_seconds, "nodes": int(g.nodes),
            "valuation": np.bincount(g.valuation, minlength=len(VALUATION_TYPES)).tolist()}


def measure(cfg: TeacherConfig, seeds, workers: int, max_moves: int = 0) -> dict:
    jobs = [(int(s), cfg, max_moves) for s in seeds]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rows = list(pool.imap_unordered(_one, jobs))
    else:
        rows = [_one(j) for j in jobs]
    return summarize(dataclasses.asdict(cfg), rows, max_moves)


def summarize(settings: dict, rows: list[dict], max_moves: int = 0) -> dict:
    """The figures of one setting from its games' rows (sorted by seed)."""
    rows = sorted(rows, key=lambda r: r["seed"])
    scores = np.array([r["score"] for r in rows])
    highest = np.array([r["highest_tile"] for r in rows])
    moves = sum(r["moves"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    valuation = np.sum([r["valuation"] for r in rows], axis=0)
    return {
        "settings": settings,
        "games": len(rows),
        "max_moves": max_moves,
        "moves": moves,
        "moves_per_s": moves / seconds,
        "cpu_moves_per_s": moves / sum(r["cpu_seconds"] for r in rows),
        "table_share": float(valuation[1:].sum() / moves),
        "valuation_share": {name: float(valuation[i] / moves)
                            for name, i in VALUATION_TYPES.items()},
        "nodes_per_s": sum(r["nodes"] for r in rows) / seconds,
        "game_seconds": seconds,
        "mean_score": float(scores.mean()),
        "mean_score_ci95": float(1.96 * scores.std(ddof=1) / np.sqrt(len(scores)))
        if len(scores) > 1 else 0.0,
        "median_score": float(np.median(scores)),
        "max_score": int(scores.max()),
        "reach": {str(t): float((highest >= t).mean()) for t in TILES},
        "per_game": rows,
    }


def merge(results: list[dict]) -> list[dict]:
    """Results of one setting (e.g. seeds 1..100 and 101..200 run apart) as one."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(json.dumps(r["settings"], sort_keys=True), []).append(r)
    return [summarize(g[0]["settings"], [row for r in g for row in r["per_game"]],
                      g[0]["max_moves"]) for g in groups.values()]


def plot(results: list[dict], path: str) -> None:
    """Scores and reach rates of the settings side by side (`lab2048 evaluate`'s picture)."""
    from lab2048.play.arena import plot_agents
    from lab2048.play.arena import summarize as summarize_games
    from lab2048.play.games import GameResults

    games = []
    for r in results:
        rows = r["per_game"]
        games.append(GameResults(
            agent=describe(TeacherConfig(**r["settings"])),
            seeds=np.array([g["seed"] for g in rows], np.uint64),
            scores=np.array([g["score"] for g in rows], np.int64),
            moves=np.array([g["moves"] for g in rows], np.int64),
            highest=np.array([int(g["highest_tile"]).bit_length() - 1 for g in rows], np.uint8),
            ends=np.array([g["end_reason"] for g in rows], np.uint8),
            seconds=r["game_seconds"]))
    plot_agents(games, {g.agent: summarize_games(g) for g in games}, Path(path))


def describe(cfg: TeacherConfig) -> str:
    if cfg.evaluation == "corner":
        deeper = (f"..{cfg.max_depth}/{cfg.depth_offset}"
                  if cfg.adaptive and cfg.max_depth > cfg.depth else "")
        return (f"corner {cfg.depth}{deeper}" + (f" r{cfg.table_rank}" if cfg.table_rank else "")
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
    ap.add_argument("--from-json", action="append", default=[], metavar="FILE",
                    help="report earlier --json results instead of playing (repeatable; runs "
                    "of one setting, e.g. two seed ranges, are merged)")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="draw the settings' scores and reach rates side by side")
    args = ap.parse_args()
    print(f"{'setting':<22} {'games':>5} {'moves/s':>9} {'cpu mv/s':>9} {'nodes/s':>11} "
          f"{'table':>5} {'mean':>9} {'±95%':>7} {'median':>9} "
          + " ".join(f"{t:>6}" for t in TILES[:-1]), flush=True)
    if args.from_json:
        results = merge([r for f in args.from_json for r in read_results(f)])
        for r in results:
            report(r)
    else:
        settings = [parse_setting(s) for s in args.setting] or [TeacherConfig()]
        play_game(1, settings[0], max_moves=5)  # compile or load the cache before timing
        seeds = np.arange(args.games, dtype=np.uint64) + np.uint64(args.first_seed)
        results = []
        for cfg in settings:
            results.append(measure(cfg, seeds, args.workers, args.max_moves))
            report(results[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.plot:
        plot(results, args.plot)
    return 0


def read_results(path: str) -> list[dict]:
    """An earlier --json file's results; one line naming the file if it is not one."""
    try:
        results = json.loads(Path(path).read_text())
        for r in results:
            TeacherConfig(**r["settings"])
            if not all("cpu_seconds" in g for g in r["per_game"]):
                raise ValueError("games without their timing")
    except (OSError, ValueError, TypeError, KeyError, IndexError) as e:
        raise SystemExit(f"{path}: not a teacher_strength --json file ({e})") from None
    return results


def report(r: dict) -> None:
    print(f"{describe(TeacherConfig(**r['settings'])):<22} {r['games']:>5} "
          f"{r['moves_per_s']:>9,.0f} {r['cpu_moves_per_s']:>9,.0f} {r['nodes_per_s']:>11,.0f} "
          f"{r['table_share']:>5.0%} {r['mean_score']:>9,.0f} {r['mean_score_ci95']:>7,.0f} "
          f"{r['median_score']:>9,.0f} "
          + " ".join(f"{r['reach'][str(t)]:>6.0%}" for t in TILES[:-1]), flush=True)


if __name__ == "__main__":
    sys.exit(main())
