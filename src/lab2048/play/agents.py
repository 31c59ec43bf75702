"""Simple agents and the compiled game loop that plays them.

Agents (baselines to compare learned players against, and the demo's players):
- random: a uniformly random legal move, drawn from the agent's own stream
  `draw(seed ^ AGENT_SALT, move_number)`, so the spawns stay those of the game's seed.
- greedy: the legal move with the largest immediate reward; ties go to Left, Up, Right, Down
  in that order (which keeps big tiles in the top-left corner).
- corner: the first legal move of Left, Up, Right, Down (the classic corner strategy).

`play_game` is one game in numba, using the same `kernels.step` as `engine.Game`; `play_games`
runs many with a progress bar.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from lab2048.engine import kernels as K
from lab2048.engine.conventions import EndReason
from lab2048.io import progress_bar
from lab2048.play.config import AGENTS

AGENT_SALT = np.uint64(0xA6E17A6E17A6E17)
PREFERENCE = (2, 0, 3, 1)  # Left, Up, Right, Down
_ONGOING = int(EndReason.ONGOING)
_MAX_MOVES = int(EndReason.MAX_MOVES)
_TILE_LIMIT = int(EndReason.TILE_LIMIT)


@njit(cache=True, nogil=True)
def random_move(seed, move_number, legal):
    count = 0
    for d in range(4):
        count += (legal >> d) & 1
    x = K.draw(seed ^ AGENT_SALT, move_number)
    pick = np.int64(((x >> np.uint64(32)) * np.uint64(count)) >> np.uint64(32))
    for d in range(4):
        if (legal >> d) & 1:
            if pick == 0:
                return d
            pick -= 1
    return -1


@njit(cache=True, nogil=True)
def corner_move(legal):
    for d in PREFERENCE:
        if (legal >> d) & 1:
            return d
    return -1


@njit(cache=True, nogil=True)
def greedy_move(b, m, legal, move_xor, line_reward):
    best, best_reward = -1, -1
    for d in PREFERENCE:
        if (legal >> d) & 1:
            _, _, reward = K.move(b, m, d, move_xor, line_reward)
            if reward > best_reward:
                best, best_reward = d, reward
    return best


@njit(cache=True, nogil=True)
def choose_move(agent, b, m, seed, move_number, legal, move_xor, line_reward):
    """The move agent (index into AGENTS) plays on board (b, m) with legal-move mask `legal`."""
    if agent == 0:
        return random_move(seed, move_number, legal)
    if agent == 1:
        return greedy_move(b, m, legal, move_xor, line_reward)
    return corner_move(legal)


@njit(cache=True, nogil=True)
def play_game(agent, seed, max_moves, move_xor, line_reward, record):
    """Play one game; return (score, moves, board, mask, end reason).

    `record` receives the moves played when it has at least max_moves entries (pass an
    empty array to skip recording).
    """
    b = K.new_board(seed)
    m = 0
    spawns = 2
    score = 0
    n = 0
    end = _ONGOING
    recording = len(record) >= max_moves
    legal = K.legal_mask(b, m, move_xor, line_reward)  # an opening board always has moves
    while legal != 0 and n < max_moves:
        d = choose_move(agent, b, m, seed, n, legal, move_xor, line_reward)
        b, m, reward, spawns, legal, end = K.step(b, m, d, seed, spawns, move_xor, line_reward)
        if end == _TILE_LIMIT:
            break
        if recording:
            record[n] = d
        score += reward
        n += 1
    if end == _ONGOING:
        end = _MAX_MOVES
    return score, n, b, m, end


@njit(cache=True, nogil=True)
def _play_many(agent, seeds, max_moves, move_xor, line_reward, scores, moves, highest, ends):
    no_record = np.empty(0, np.uint8)
    for i in range(len(seeds)):
        # a literal agent per call site lets LLVM specialise each inlined game loop (+25% speed)
        if agent == 0:
            result = play_game(0, seeds[i], max_moves, move_xor, line_reward, no_record)
        elif agent == 1:
            result = play_game(1, seeds[i], max_moves, move_xor, line_reward, no_record)
        else:
            result = play_game(2, seeds[i], max_moves, move_xor, line_reward, no_record)
        scores[i], moves[i], b, m, ends[i] = result
        highest[i] = K.highest_exponent(b, m)


@dataclass
class GameResults:
    agent: str
    seeds: np.ndarray  # uint64 [G]
    scores: np.ndarray  # int64 [G], exact sums of rewards
    moves: np.ndarray  # int64 [G]
    highest: np.ndarray  # uint8 [G], largest exponent reached
    ends: np.ndarray  # uint8 [G], EndReason
    seconds: float


def agent_index(agent: str) -> int:
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r} (known: {', '.join(AGENTS)})")
    return AGENTS.index(agent)


def play_games(agent: str, seeds, max_moves: int = 1_000_000, progress: bool = True) -> GameResults:
    """Play one game per seed; a progress bar counts games (and moves per second)."""
    index = agent_index(agent)
    seeds = np.asarray(seeds, np.uint64)
    g = len(seeds)
    res = GameResults(agent, seeds, np.zeros(g, np.int64), np.zeros(g, np.int64),
                      np.zeros(g, np.uint8), np.zeros(g, np.uint8), 0.0)
    tables = K.tables()
    start = time.perf_counter()
    chunk = max(1, min(64, g // 50))
    moves_done = 0
    with progress_bar(progress, total=g, unit="game") as bar:
        for lo in range(0, g, chunk):
            sl = slice(lo, min(g, lo + chunk))
            _play_many(index, seeds[sl], max_moves, *tables, res.scores[sl], res.moves[sl],
                       res.highest[sl], res.ends[sl])
            bar.update(sl.stop - sl.start)
            moves_done += int(res.moves[sl].sum())
            bar.set_postfix(moves_per_s=f"{moves_done / (time.perf_counter() - start):,.0f}",
                            refresh=False)
    res.seconds = time.perf_counter() - start
    return res
