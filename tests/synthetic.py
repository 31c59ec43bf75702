"""Test helper: small valid packed datasets from engine games (no teacher needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lab2048.data.dataset import DatasetWriter, Run, make_rows
from lab2048.engine import kernels
from lab2048.play.agents import random_move


def engine_run(seed: int, run_id: int, max_moves: int = 0) -> tuple[Run, np.ndarray]:
    """A random-agent game as (Run, STEP_DTYPE rows): every field consistent with the engine."""
    move_xor, line_reward = kernels.tables()
    seed64 = np.uint64(seed)
    b, m, spawns, score = np.uint64(kernels.new_board(seed64)), 0, 2, 0
    boards, masks, moves, legals, ranks = [], [], [], [], []
    legal = kernels.legal_mask(b, m, move_xor, line_reward)
    while legal and (not max_moves or len(moves) < max_moves):
        d = random_move(seed64, len(moves), legal)
        boards.append(b), masks.append(m), moves.append(d), legals.append(legal)
        ranks.append(kernels.highest_exponent(b, m))
        b, m, reward, spawns, legal, _ = kernels.step(b, m, d, seed64, spawns,
                                                      move_xor, line_reward)
        b = np.uint64(b)  # numba hands uint64 back as a Python int
        score += int(reward)
    rows = make_rows(run_id=run_id, seed=seed, boards=np.array(boards, np.uint64),
                     masks=np.array(masks, np.uint16), moves=np.array(moves, np.uint8),
                     ev_legal=np.array(legals, np.uint8), max_rank=np.array(ranks, np.uint8),
                     board_eval=np.zeros(len(boards), np.int32))
    run = Run(id=run_id, seed=seed, steps=len(rows), max_score=score,
              highest_tile=1 << int(kernels.highest_exponent(b, m)))
    return run, rows


def write_engine_dataset(out: Path, seeds=(1, 2, 3), shard_rows: int = 1 << 20,
                         overwrite: bool = False) -> list[tuple[Run, np.ndarray]]:
    runs = [engine_run(seed, i + 1) for i, seed in enumerate(seeds)]
    with DatasetWriter(out, session={"source": "test"}, shard_rows=shard_rows,
                       overwrite=overwrite) as writer:
        for run, rows in runs:
            writer.add_run(run, rows)
    return runs
