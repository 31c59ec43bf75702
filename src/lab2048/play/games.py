"""The one game loop of lab2048's players: seeded games in lockstep, under one end rule.

    res = play_lockstep(agent, seeds, max_moves=0)       # GameResults, one game per seed

Choices
- The end rule is the engine's one rule (`kernels.end_reason`): a game ends when the board
  after a move and its spawn has no legal move (NO_MOVES), when the chosen move would merge two
  2^16 tiles (TILE_LIMIT: the move is not applied and not counted), or after `max_moves` moves
  when max_moves > 0 (MAX_MOVES; 0 is NO_MOVE_LIMIT). `advance` applies it to one move; the
  baselines' compiled loop in agents.py uses it too.
- Spawns are the engine's counter-based spawns of each game's seed (`kernels.step`), so every
  agent that plays a seed meets the same spawn stream: games of two agents on one seed differ
  only through their moves, and results are paired by seed.
- Lockstep: each round asks the agent for the moves of every unfinished game at once (one
  batched forward pass, or one search over all their children), then one compiled call plays
  them. The order in which games finish never changes a game.
- `on_end(i)` is called as game i finishes (the caller saves it: an interrupted evaluation
  keeps its finished games), `on_ply(idx, moves, rewards)` after every round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from lab2048.engine import kernels as K
from lab2048.engine.conventions import END_ONGOING, END_TILE_LIMIT, NO_MOVE_LIMIT


@njit(cache=True, nogil=True, inline="always")
def advance(b, m, d, seed, spawns, n, max_moves, move_xor, line_reward):
    """Move d of a game that has made n moves, under the end rule (module docstring):
    (board, mask, reward, spawns used, legal mask, moves made, end reason)."""
    nb, nm, reward, s, legal, end = K.step(b, m, d, seed, spawns, move_xor, line_reward)
    if end == END_TILE_LIMIT:
        return b, m, np.int64(0), spawns, legal, n, end
    n += 1
    return nb, nm, reward, s, legal, n, K.end_reason(end, n, max_moves)


@njit(cache=True, nogil=True)
def _start(seeds, boards, legal, move_xor, line_reward):
    for g in range(len(seeds)):
        boards[g] = K.new_board(seeds[g])
        legal[g] = K.legal_mask(boards[g], 0, move_xor, line_reward)


@njit(cache=True, nogil=True)
def _advance_games(idx, moves, seeds, boards, masks, spawns, legal, scores, counts, ends,
                   max_moves, rewards, move_xor, line_reward):
    """Play moves[j] in game idx[j]; rewards[j] gets its reward."""
    for j in range(len(idx)):
        g = idx[j]
        b, m, r, s, lg, n, end = advance(boards[g], np.int64(masks[g]), np.int64(moves[j]),
                                         seeds[g], spawns[g], counts[g], max_moves, move_xor,
                                         line_reward)
        boards[g], masks[g], spawns[g], legal[g], counts[g], ends[g] = b, m, s, lg, n, end
        scores[g] += r
        rewards[j] = r


@njit(cache=True, nogil=True)
def _highest(boards, masks, out):
    for g in range(len(boards)):
        out[g] = K.highest_exponent(boards[g], np.int64(masks[g]))


@dataclass
class GameResults:
    agent: str
    seeds: np.ndarray  # uint64 [G]
    scores: np.ndarray  # int64 [G], exact sums of rewards
    moves: np.ndarray  # int64 [G]
    highest: np.ndarray  # uint8 [G], largest exponent reached
    ends: np.ndarray  # uint8 [G], EndReason
    seconds: float
    boards_evaluated: int = 0  # positions the agent's model valued (0 for model-free agents)


def play_lockstep(agent, seeds, max_moves: int = NO_MOVE_LIMIT, *,
                  on_end: Callable[[int, GameResults], None] | None = None,
                  on_ply: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None
                  ) -> GameResults:
    """Play one game per seed with `agent` (agents.py: `choose(boards, masks, legal, seeds,
    move_numbers) -> moves`), all games in lockstep. `on_end(i, results)` sees game i's row
    filled in `results` as soon as it ends."""
    if max_moves < 0:
        raise ValueError(f"max_moves must be >= 0 (0: no limit), got {max_moves}")
    seeds = np.ascontiguousarray(seeds, np.uint64)
    g = len(seeds)
    tables = K.tables()
    boards, masks = np.zeros(g, np.uint64), np.zeros(g, np.uint16)
    legal, spawns = np.zeros(g, np.uint8), np.full(g, 2, np.int64)
    _start(seeds, boards, legal, *tables)
    res = GameResults(agent.name, seeds, np.zeros(g, np.int64), np.zeros(g, np.int64),
                      np.zeros(g, np.uint8), np.zeros(g, np.uint8), 0.0)
    evaluated = agent.boards_evaluated
    start = time.perf_counter()
    live = np.arange(g)
    while len(live):
        moves = np.asarray(agent.choose(boards[live], masks[live], legal[live], seeds[live],
                                        res.moves[live]), np.int64)
        if len(moves) != len(live) or ((legal[live] >> np.clip(moves, 0, 3)) & 1 == 0).any() \
                or (moves < 0).any():
            raise RuntimeError(f"agent {agent.name} chose an illegal move")
        rewards = np.zeros(len(live), np.int64)
        _advance_games(live, moves, seeds, boards, masks, spawns, legal, res.scores, res.moves,
                       res.ends, max_moves, rewards, *tables)
        if on_ply is not None:
            on_ply(live, moves, rewards)
        over = res.ends[live] != END_ONGOING
        done = live[over]
        if len(done):
            highest = np.zeros(len(done), np.int64)
            _highest(boards[done], masks[done], highest)
            res.highest[done] = highest
            res.seconds = time.perf_counter() - start
            res.boards_evaluated = agent.boards_evaluated - evaluated
            if on_end is not None:
                for i in done:
                    on_end(int(i), res)
        live = live[~over]
    res.seconds = time.perf_counter() - start
    res.boards_evaluated = agent.boards_evaluated - evaluated
    return res
