"""Benchmark: boards valued per second by the value search, against the model's raw forward.

`value:depth=1` chooses the moves of 64 mid-game positions (greedy games of seeds 0..63 after
40, 120 and 240 moves: early, middle and late boards) in one call each, as a ply of a 64-game
evaluation does: child generation, deduplication, the value forward of every distinct child,
the expectation and the argmax. Its rate is the distinct boards it valued per second. The
baseline, measured in the same run, is the model's plain forward pass (`model(tokens)` in
inference mode, value head included) on random boards at the same batch size, the mean
number of distinct children per call. The ratio is search / baseline (target >= 0.7): the
share of the forward's speed that the search keeps. Runs alternate, best and median reported.

    python benchmarks/search.py [--init DIR | --small] [--device cpu|cuda] [--threads N]
                                [--repeats 5]

--small uses the 0.18 M model of configs/train/cpu.toml, whose cheap forward shows the
search's own overhead more than the reference model's does.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from lab2048.engine import kernels as K
from lab2048.model import Model, ModelConfig, ValueHeadConfig, load_init
from lab2048.play.agents import _choose_many, baseline_index, make_agent
from lab2048.play.config import parse_agent
from lab2048.play.games import _advance_games, _start
from lab2048.play.predictor import LocalPredictor

GAMES = 64
STAGES = (40, 120, 240)


def mid_game_positions() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(boards, masks, legal) of the live greedy games of seeds 0..63 at each stage."""
    seeds = np.arange(GAMES, dtype=np.uint64)
    tables = K.tables()
    boards, masks = np.zeros(GAMES, np.uint64), np.zeros(GAMES, np.uint16)
    legal, spawns = np.zeros(GAMES, np.uint8), np.full(GAMES, 2, np.int64)
    scores, counts, ends = np.zeros(GAMES, np.int64), np.zeros(GAMES, np.int64), \
        np.zeros(GAMES, np.uint8)
    _start(seeds, boards, legal, *tables)
    out = []
    for move in range(max(STAGES)):
        live = np.flatnonzero(ends == 0)
        moves = np.empty(len(live), np.int64)
        _choose_many(baseline_index("greedy"), boards[live], masks[live], legal[live],
                     seeds[live], counts[live], *tables, moves)
        _advance_games(live, moves, seeds, boards, masks, spawns, legal, scores, counts, ends, 0,
                       np.zeros(len(live), np.int64), *tables)
        if move + 1 in STAGES:
            keep = ends == 0
            out.append((boards[keep].copy(), masks[keep].copy(), legal[keep].copy()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", help="model init directory (default: ModelConfig() with a value "
                    "head, random weights)")
    ap.add_argument("--small", action="store_true", help="the 0.18 M model (hidden 64, "
                    "2 layers) instead of the reference size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = dict(hidden=64, layers=2, heads=4, kv_heads=2, mlp=192) if args.small else {}
    model = load_init(args.init, device=args.device) if args.init else \
        Model(ModelConfig(**size, value_head=ValueHeadConfig(enabled=True))).to(args.device).eval()
    predictor = LocalPredictor(model, max_batch=1 << 16)
    agent = make_agent(parse_agent("value:depth=1"), predictor, gamma=0.997)
    positions = mid_game_positions()

    def search() -> tuple[int, float]:
        before = predictor.boards_evaluated
        start = time.perf_counter()
        for b, m, lg in positions:
            agent.choose(b, m, lg, None, None)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return predictor.boards_evaluated - before, time.perf_counter() - start

    search()  # warm-up: numba kernels, allocator
    boards, _ = search()
    batch = boards // len(positions)
    rng = np.random.default_rng(0)
    tokens = torch.as_tensor(rng.integers(0, 12, (batch, 16)), device=args.device)

    def forward() -> tuple[int, float]:
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16,
                                                    enabled=args.device.startswith("cuda")):
            for _ in positions:
                model(tokens)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return batch * len(positions), time.perf_counter() - start

    forward()
    rates = {"search": [], "forward": []}
    for _ in range(args.repeats):
        for name, fn in (("forward", forward), ("search", search)):
            n, seconds = fn()
            rates[name].append(n / seconds)
    best = max(rates["search"]) / max(rates["forward"])
    median = statistics.median(rates["search"]) / statistics.median(rates["forward"])
    print(f"value:depth=1 over {GAMES} games: {batch:,} distinct children per ply "
          f"(stages {', '.join(map(str, STAGES))} moves), device {args.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"search   {max(rates['search']):10,.0f} boards/s (best)  "
          f"{statistics.median(rates['search']):10,.0f} (median)")
    print(f"forward  {max(rates['forward']):10,.0f} boards/s (best)  "
          f"{statistics.median(rates['forward']):10,.0f} (median)")
    print(f"ratio search / forward: {best:.2f} best to best, {median:.2f} median to median "
          "(target 0.7)")


if __name__ == "__main__":
    main()
