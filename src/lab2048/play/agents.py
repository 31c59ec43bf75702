"""The agents: compiled baselines, the model's policy, value-guided search, hybrids, the teacher.

    agent = make_agent(parse_agent("hybrid:top=2"), predictor, gamma=0.997)
    moves = agent.choose(boards, masks, legal, seeds, move_numbers)   # one move per board

Every agent chooses the moves of many games at once (play/games.py plays them in lockstep):
- policy: the argmax of the masked move probabilities (ties: lowest UDLR index).
- value:depth=D: the argmax of Q from `search.q_values` on the model's value head: one forward
  pass over every distinct leaf of every game.
- hybrid: the argmax of Q among the moves the policy proposes (its top-k legal moves, or those
  it gives at least p, its argmax always included): a policy pass, then a value pass over the
  proposed moves' leaves, only on the boards where more than one move is proposed.
- teacher: the expectimax teacher's move (`lab2048.teacher.search_boards`).
- random: a uniformly random legal move, drawn from the agent's own stream
  `draw(seed ^ AGENT_SALT, move_number)`, so the spawns stay those of the game's seed.
- greedy: the legal move with the largest immediate reward; ties go to Left, Up, Right, Down
  in that order (which keeps big tiles in the top-left corner).
- corner: the first legal move of Left, Up, Right, Down (the classic corner strategy).

`play_game` / `play_games` are the baselines' own compiled loop (one game per call, no
Python per move: what benchmarks/engine.py compares with C), under the end rule of
play/games.py; they give exactly the games `play_lockstep` gives.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from lab2048.engine import kernels as K
from lab2048.engine.arrays import legal_bits, legal_bools
from lab2048.engine.batch import to_exponents
from lab2048.engine.conventions import END_ONGOING, NO_MOVE_LIMIT
from lab2048.io import progress_bar
from lab2048.play.config import BASELINES, AgentSpec
from lab2048.play.games import GameResults, advance
from lab2048.play.search import best_moves, q_values
from lab2048.teacher.search import search_boards

AGENT_SALT = np.uint64(0xA6E17A6E17A6E17)
PREFERENCE = (2, 0, 3, 1)  # Left, Up, Right, Down


# ---------------------------------------------------------------------------------------------
# Compiled baselines


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
    """The move baseline `agent` (index into BASELINES) plays on board (b, m)."""
    if agent == 0:
        return random_move(seed, move_number, legal)
    if agent == 1:
        return greedy_move(b, m, legal, move_xor, line_reward)
    return corner_move(legal)


@njit(cache=True, nogil=True)
def _choose_many(agent, boards, masks, legal, seeds, move_numbers, move_xor, line_reward, out):
    for i in range(len(boards)):
        out[i] = choose_move(agent, boards[i], np.int64(masks[i]), seeds[i], move_numbers[i],
                             legal[i], move_xor, line_reward)


@njit(cache=True, nogil=True)
def play_game(agent, seed, max_moves, move_xor, line_reward, record):
    """Play one game (max_moves 0: no limit); return (score, moves, board, mask, end reason).

    `record[n]` receives move n while n < len(record) (pass an empty array to skip it)."""
    b = K.new_board(seed)
    m = 0
    spawns = 2
    score = 0
    n = 0
    end = END_ONGOING
    legal = K.legal_mask(b, m, move_xor, line_reward)  # an opening board always has moves
    while end == END_ONGOING:
        d = choose_move(agent, b, m, seed, n, legal, move_xor, line_reward)
        if n < len(record):
            record[n] = d
        b, m, reward, spawns, legal, n, end = advance(b, m, d, seed, spawns, n, max_moves,
                                                      move_xor, line_reward)
        score += reward
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


def baseline_index(agent: str) -> int:
    if agent not in BASELINES:
        raise ValueError(f"unknown agent {agent!r} (known: {', '.join(BASELINES)})")
    return BASELINES.index(agent)


def play_games(agent: str, seeds, max_moves: int = NO_MOVE_LIMIT,
               progress: bool = True) -> GameResults:
    """Play one game per seed with a baseline, compiled end to end; a progress bar counts games
    (and moves per second)."""
    index = baseline_index(agent)
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


# ---------------------------------------------------------------------------------------------
# Agents that choose the moves of many games at once


class BaselineAgent:
    def __init__(self, spec: AgentSpec):
        self.name, self.index, self.boards_evaluated = spec.name, baseline_index(spec.kind), 0

    def choose(self, boards, masks, legal, seeds, move_numbers):
        out = np.empty(len(boards), np.int64)
        _choose_many(self.index, boards, masks, legal, seeds, move_numbers, *K.tables(), out)
        return out


class TeacherAgent:
    def __init__(self, spec: AgentSpec):
        self.name, self.cfg, self.boards_evaluated = spec.name, spec.teacher_config(), 0

    def choose(self, boards, masks, legal, seeds, move_numbers):
        return search_boards(boards, masks, self.cfg)["move_dir"].astype(np.int64)


def proposals(probs: np.ndarray, legal: np.ndarray, top: int = 0, p: float = 0.0) -> np.ndarray:
    """The legal-move mask of the moves a policy proposes: its `top` most likely legal moves
    (ties: lowest UDLR index), or those with probability >= p; its argmax always."""
    legal_bool = legal_bools(legal)
    filled = np.where(legal_bool, probs, -1.0)
    order = np.argsort(-filled, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(4)[None, :].repeat(len(order), 0), axis=1)
    chosen = (rank < top) if top else (filled >= p) | (rank == 0)
    chosen &= legal_bool
    return legal_bits(chosen)


class ModelAgent:
    """policy, value and hybrid agents on one predictor (play/predictor.py)."""

    def __init__(self, spec: AgentSpec, predictor, gamma: float = 0.0, afterstate: bool = False):
        self.spec, self.name, self.predictor = spec, spec.name, predictor
        self.gamma, self.afterstate = gamma, afterstate
        self.boards_evaluated = 0

    def choose(self, boards, masks, legal, seeds, move_numbers):
        before = self.predictor.boards_evaluated
        spec = self.spec
        allowed = legal
        if spec.kind in ("policy", "hybrid"):
            probs = self.predictor.policy(to_exponents(boards, masks), legal)
            if spec.kind == "policy":
                moves = np.argmax(np.where(legal_bools(legal), probs, -1.0), 1)
                self.boards_evaluated += self.predictor.boards_evaluated - before
                return moves
            allowed = proposals(probs, legal, spec.top, spec.p)
        moves = np.log2(np.maximum(allowed, 1)).astype(np.int64)  # where one move is allowed
        open_ = (allowed & (allowed - 1)) != 0  # several: the value search decides
        if open_.any():
            q = q_values(boards[open_], masks[open_], self.predictor.values, depth=spec.depth,
                         gamma=self.gamma, afterstate=self.afterstate, allowed=allowed[open_])
            moves[open_] = best_moves(q)
        self.boards_evaluated += self.predictor.boards_evaluated - before
        return moves


def make_agent(spec: AgentSpec, predictor=None, gamma: float = 0.0, afterstate: bool = False):
    """The agent of a spec; model agents need a predictor, value agents γ too."""
    if spec.kind in BASELINES:
        return BaselineAgent(spec)
    if spec.kind == "teacher":
        return TeacherAgent(spec)
    if predictor is None:
        raise ValueError(f"agent {spec.name} needs a model")
    return ModelAgent(spec, predictor, gamma, afterstate)
