"""Expectimax search over moves and spawns, and the compiled teacher game loop.

Choices
- Value of a move d from board b, searched p plies deep (p >= 1, see `TeacherConfig`):

      V(d) = C(move(b, d), p, 1)
      C(a, p, q) = (1/n) Σ_{empty cells i} [0.9·S(a + 2@i, p, 0.9q/n) + 0.1·S(a + 4@i, p, 0.1q/n)]
      S(c, p, q) = leaf(c)                                   if p = 1
                 = max over legal moves d' of C(move(c, d'), p − 1, q)    otherwise
                 = LOST_VALUE                                if c has no legal move

  where a is the board after a move (a chance node: n empty cells, each taking a 2 with
  probability 0.9 or a 4 with 0.1), c a board after a spawn (a max node), q the probability of
  the spawns on the path so far. leaf(c) = board_eval(c) (LOST_VALUE if dead, tested only when
  the spawn filled the last empty cell, else the heuristic).
- Probability cutoff: C(a, p, q) = heuristic(a), without expanding, when q < prob_cutoff
  (a is the board after a legal move, so it has an empty cell and is alive).
- A move that would merge two 2^16 tiles is legal but ends the game (engine TILE_LIMIT): it is
  valued LOST_VALUE, like any other end of the game.
- Transposition table at chance nodes: 2^tt_bits entries (board u64, value f32, tag u32), one
  slot per board at index (b · 0x9E3779B97F4A7C15) >> (64 − tt_bits), always replaced on store.
  The tag is epoch·16 + p; an entry answers C(a, p', ·) when its board and epoch match and its
  p >= p' (a deeper result stands in for a shallower one; the path probability q it was
  computed at is not compared, as in the published player). Each thread keeps one table per
  tt_bits between calls, and every root search takes a new epoch, so a search's result
  depends on (board, mask, settings) alone, never on what earlier searches left in the
  table: `search(b, m, cfg)` reproduces a `play_game` row exactly. Boards
  with a non-zero tile_65536_mask are not cached (the key holds the board only); values are
  stored as float32, so a hit returns the stored value rounded to float32.
- Nodes (speed statistics): every chance node entered and every spawned board scored or
  expanded (leaves included), i.e. one per call of C and one per S.
- Per-move outputs (the dataset's columns): branch_evs[d] = float32(V(d) / 1000) for legal d,
  0.0 for illegal d; move_dir = the first d (UDLR) with the largest branch_evs among legal
  moves (argmax of the stored float32 values, so the row is self-consistent); ev_legal the
  engine's legal mask; board_eval the static value of the board before the move.
- Rewards are not part of V: the heuristic ranks board shapes; the score is a by-product.
- One decision rule for every board (`decide`), used by the game loop and `search_boards`:
  a formation table's move where it applies (`tables.formation_values`: the tuple11 table
  from probability `MIN_PROB["tuple11"]`, else the tuple10 table from `MIN_PROB["tuple10"]`;
  valuation "tuple11" or "tuple10", branch_evs the per-move success probabilities), else the
  search of the configured evaluation (`root_values`: "lines" above, or "corner":
  `corner.corner_value`, whose V has its own units); valuation "search". board_eval is the
  configured evaluation's static value.
- The game ends by the engine's one rule (`kernels.end_reason`): no legal move, the 2^17
  limit (the move is not applied and gets no row), or max_moves (0: no limit).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from lab2048.data.dataset import VALUATION_TYPES
from lab2048.engine import conventions as C
from lab2048.engine import kernels as K
from lab2048.teacher import corner, tables
from lab2048.teacher.config import TeacherConfig
from lab2048.teacher.heuristic import (
    LOST_VALUE,
    board_eval,
    heuristic,
    is_dead,
    spawn_heuristic,
)
from lab2048.teacher.tables import formation_values

__all__ = ["TT_DTYPE", "TeacherConfig", "TeacherGame", "new_table", "play_game", "search",
           "search_boards"]

U64 = np.uint64
TT_DTYPE = np.dtype([("board", np.uint64), ("value", np.float32), ("tag", np.uint32)])
HASH_MUL = U64(0x9E3779B97F4A7C15)
EPOCH_LIMIT = 1 << 27  # epochs wrap (with a table clear) before epoch * 16 overflows u32
SEARCH = np.uint8(VALUATION_TYPES["search"])
TUPLE11 = np.uint8(VALUATION_TYPES["tuple11"])
TUPLE10 = np.uint8(VALUATION_TYPES["tuple10"])
MIN_PROB11 = tables.MIN_PROB["tuple11"]
MIN_PROB10 = tables.MIN_PROB["tuple10"]

_jit = njit(cache=True, nogil=True)


def new_table(cfg: TeacherConfig) -> np.ndarray:
    """An empty transposition table for these settings (tag 0 never matches an epoch)."""
    return np.zeros(1 << cfg.tt_bits, TT_DTYPE)


_local = threading.local()


def _table(cfg: TeacherConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's transposition tables (of the lines search and of the corner search, the
    one not in use with 2^10 entries), and its last epoch (int64[1]), kept between calls: a
    fresh table costs page faults that would dominate short depth-1 games, and the epochs
    already hide what earlier searches left in it."""
    tables = getattr(_local, "tables", None)
    if tables is None:
        tables = _local.tables = {}
    key = (cfg.evaluation, cfg.tt_bits)
    if key not in tables:
        size = 1 << cfg.tt_bits
        lines = size if cfg.evaluation == "lines" else 1 << 10
        tables[key] = (np.zeros(lines, TT_DTYPE),
                       np.zeros(size if cfg.evaluation == "corner" else 1 << 10,
                                corner.TT_DTYPE),
                       np.zeros(1, np.int64))
    return tables[key]


# ---------------------------------------------------------------------------------------------
# The search


@_jit
def distinct_tiles(b, m):
    """Number of different non-empty exponents on board (b, m) (2^16 counts as its own)."""
    seen = 0
    for i in range(16):
        seen |= 1 << K.cell_exponent(b, m, i)
    seen >>= 1  # drop the empty cells
    count = 0
    while seen:
        count += seen & 1
        seen >>= 1
    return count


@_jit
def plies_for(b, m, depth, max_depth, adaptive, depth_offset):
    """The search depth of a board (TeacherConfig.plies)."""
    if not adaptive:
        return depth
    return min(max_depth, max(depth, distinct_tiles(b, m) - depth_offset))


@_jit
def _chance_value(a, m, plies, prob, cutoff, epoch, tt, shift, move_xor, line_reward, stats):
    """C(a, plies, prob) of the module docstring, S inlined; stats[0] counts nodes.

    One self-recursive function, compiled for one signature only: numba's cache mishandles
    mutual recursion and recursive functions with several signatures (a segfault on load), so
    `root_values` is its only caller and casts every argument.
    """
    stats[0] += 1
    if prob < cutoff:
        return heuristic(a)
    slot = 0
    if m == 0:
        slot = np.int64((a * HASH_MUL) >> shift)
        entry = tt[slot]
        tag = entry.tag
        if entry.board == a and tag >> 4 == epoch and tag & 15 >= plies:
            return np.float64(entry.value)
    n = K.count_empty(a)
    full = n == 1  # the spawn fills the board: the child may be dead
    t = K.transpose(a)
    h = heuristic(a) if plies == 1 else 0.0
    total = 0.0
    v2 = 0.0
    for k in range(16):  # nibble k from the low end: cell 15 - k
        if (a >> U64(4 * k)) & U64(15) != U64(0):
            continue
        for tile in range(1, 3):  # a 2 (p = 0.9), then a 4 (p = 0.1), in this cell
            c = a | (U64(tile) << U64(4 * k))
            q = prob * (0.9 if tile == 1 else 0.1) / n
            stats[0] += 1
            if plies == 1:
                v = LOST_VALUE if full and is_dead(c, m) else spawn_heuristic(a, t, h, k, tile)
            else:  # S(c, plies - 1, q): the best legal move
                v = -np.inf
                for d in range(4):
                    nb, nm, reward = K.move(c, m, d, move_xor, line_reward)
                    if reward == K.TILE_OVERFLOW:
                        w = LOST_VALUE
                    elif nb != c or nm != m:
                        w = _chance_value(nb, nm, plies - 1, q, cutoff, epoch, tt, shift,
                                          move_xor, line_reward, stats)
                    else:
                        continue
                    v = max(v, w)
                if v == -np.inf:
                    v = LOST_VALUE
            if tile == 1:
                v2 = v
            else:
                total += 0.9 * v2 + 0.1 * v
    value = total / n
    if m == 0:
        tt[slot].board = a
        tt[slot].value = np.float32(value)
        tt[slot].tag = np.uint32(epoch * 16 + plies)
    return value


@_jit
def root_values(b, m, plies, use_corner, cutoff, epoch, tt, ctt, move_xor, line_reward, stats,
                values):
    """V(d) into values[d] for each legal d (0.0 where illegal), by the lines search (table tt)
    or the corner one (`corner.corner_value`, table ctt); returns the legal mask. A move that
    merges two 2^16 tiles is valued lost (LOST_VALUE, or corner's lost)."""
    pass_score, lost = corner.corner_bounds(b, m) if use_corner else (0.0, LOST_VALUE)
    shift = U64(64 - int(np.log2(len(tt))))
    legal = 0
    for d in range(4):
        nb, nm, reward = K.move(b, m, d, move_xor, line_reward)
        values[d] = 0.0
        if reward == K.TILE_OVERFLOW:
            values[d] = lost
        elif use_corner and (nb != b or nm != m):
            values[d] = corner.corner_value(nb, nm, plies, cutoff, pass_score, lost, epoch, ctt,
                                            move_xor, line_reward, stats)
        elif nb != b or nm != m:
            values[d] = _chance_value(U64(nb), np.int64(nm), np.int64(plies), 1.0,
                                      np.float64(cutoff), np.int64(epoch), tt, shift, move_xor,
                                      line_reward, stats)
        else:
            continue
        legal |= 1 << d
    return legal


@_jit
def choose(values, legal, evs):
    """branch_evs into evs (float32 V/1000, 0 where illegal); returns move_dir (-1: none)."""
    best = -1
    for d in range(4):
        evs[d] = np.float32(values[d] / 1000.0) if (legal >> d) & 1 else np.float32(0.0)
        if (legal >> d) & 1 and (best < 0 or evs[d] > evs[best]):
            best = d
    return best


@_jit
def _next_epoch(epoch, tt, ctt):
    """epoch + 1, clearing the tables when the tags would overflow."""
    epoch += 1
    if epoch >= EPOCH_LIMIT:
        for i in range(len(tt)):
            tt[i].tag = np.uint32(0)
        for i in range(len(ctt)):
            ctt[i].tag = np.uint32(0)
        epoch = 1
    return epoch


@_jit
def _table_move(b, m, values, move_xor, line_reward, evs):
    """(legal mask, move_dir) of a table row: branch_evs = the per-move probabilities."""
    legal = K.legal_mask(b, m, move_xor, line_reward)
    best = -1
    for d in range(4):
        evs[d] = np.float32(values[d]) if (legal >> d) & 1 else np.float32(0.0)
        if (legal >> d) & 1 and (best < 0 or evs[d] > evs[best]):
            best = d
    return legal, best


@_jit
def decide(b, m, plies, use_corner, cutoff, epoch, tt, ctt, frank, fshapes, foffsets, ftable,
           grank, gshapes, goffsets, gtable, move_xor, line_reward, stats, values, evs):
    """One board's move: the tuple11 table's when it applies (valuation TUPLE11), else the
    tuple10 table's (TUPLE10), else the search's (SEARCH), lines or corner. Values into values,
    branch_evs into evs; returns (legal mask, move_dir, valuation)."""
    if frank > 0 and formation_values(b, m, frank, fshapes, foffsets, ftable, MIN_PROB11,
                                      move_xor, line_reward, values):
        legal, best = _table_move(b, m, values, move_xor, line_reward, evs)
        return legal, best, TUPLE11
    if grank > 0 and formation_values(b, m, grank, gshapes, goffsets, gtable, MIN_PROB10,
                                      move_xor, line_reward, values):
        legal, best = _table_move(b, m, values, move_xor, line_reward, evs)
        return legal, best, TUPLE10
    legal = root_values(b, m, plies, use_corner, cutoff, epoch, tt, ctt, move_xor, line_reward,
                        stats, values)
    return legal, choose(values, legal, evs), SEARCH


@_jit
def static_value(b, m, use_corner):
    """The board_eval column: the evaluation in use (LOST_VALUE or corner's), rounded."""
    value = corner.corner_eval(b) if use_corner else board_eval(b, m)
    return np.int32(np.floor(value + 0.5))


@_jit
def _search_boards(boards, masks, depth, max_depth, adaptive, depth_offset, cutoff, use_corner,
                   frank, fshapes, foffsets, ftable, grank, gshapes, goffsets, gtable, tt, ctt,
                   last, move_xor, line_reward, values, evs, moves, legal, plies, nodes,
                   valuation):
    """Root search of each board with its own epoch; raw values, outputs and node counts."""
    stats = np.zeros(1, np.int64)
    epoch = last[0]
    for i in range(len(boards)):
        epoch = _next_epoch(epoch, tt, ctt)
        b, m = boards[i], np.int64(masks[i])
        plies[i] = plies_for(b, m, depth, max_depth, adaptive, depth_offset)
        stats[0] = 0
        legal[i], moves[i], valuation[i] = decide(b, m, plies[i], use_corner, cutoff, epoch,
                                                  tt, ctt, frank, fshapes, foffsets, ftable,
                                                  grank, gshapes, goffsets, gtable, move_xor,
                                                  line_reward, stats, values[i], evs[i])
        nodes[i] = stats[0]
    last[0] = epoch


_NO_TABLE = np.zeros(0, np.uint16)


def _formation(cfg: TeacherConfig, rank: int, formation: str):
    """(rank, shapes, offsets, table) of one formation, its table loaded if used (rank > 0)."""
    shapes, offsets, _ = tables.layout(max(rank, tables.min_rank(formation)), formation)
    table = tables.load(rank, cfg.tables_dir, formation) if rank else _NO_TABLE
    return rank, shapes, offsets, table


def _settings(cfg: TeacherConfig):
    """The compiled functions' settings arguments, the formation tables loaded if used."""
    return (cfg.depth, cfg.max_depth, cfg.adaptive, cfg.depth_offset, float(cfg.prob_cutoff),
            cfg.evaluation == "corner", *_formation(cfg, cfg.table_rank, "tuple11"),
            *_formation(cfg, cfg.table10_rank, "tuple10"))


def search_boards(boards, masks, cfg: TeacherConfig) -> dict:
    """Search many boards: dict of `values` f64[N,4] (raw V), `branch_evs` f32[N,4], `move_dir`
    i8[N] (-1 where no move is legal), `ev_legal` u8[N], `plies` i8[N], `nodes` i64[N].

    Each board is searched with a new epoch of this thread's table (see `_table`)."""
    boards = np.ascontiguousarray(boards, dtype=np.uint64)
    masks = np.ascontiguousarray(masks, dtype=np.uint16)
    if boards.shape != masks.shape or boards.ndim != 1:
        raise ValueError("boards and masks must be 1-D arrays of one length")
    n = len(boards)
    out = {"values": np.zeros((n, 4)), "branch_evs": np.zeros((n, 4), np.float32),
           "move_dir": np.zeros(n, np.int8), "ev_legal": np.zeros(n, np.uint8),
           "plies": np.zeros(n, np.int8), "nodes": np.zeros(n, np.int64),
           "valuation": np.zeros(n, np.uint8)}
    _search_boards(boards, masks, *_settings(cfg), *_table(cfg),
                   *K.tables(), out["values"], out["branch_evs"], out["move_dir"],
                   out["ev_legal"], out["plies"], out["nodes"], out["valuation"])
    return out


def search(b, m, cfg: TeacherConfig) -> tuple[np.ndarray, int, int, int]:
    """(branch_evs f32[4], move_dir, ev_legal, board_eval) of one board (move_dir -1: no move)."""
    res = search_boards(np.array([b], np.uint64), np.array([m], np.uint16), cfg)
    value = static_value(U64(b), np.int64(m), cfg.evaluation == "corner")
    return (res["branch_evs"][0], int(res["move_dir"][0]), int(res["ev_legal"][0]), int(value))


# ---------------------------------------------------------------------------------------------
# The game loop


@_jit
def _grow(a, size):
    out = np.zeros((size, *a.shape[1:]), a.dtype)
    out[: len(a)] = a
    return out


@_jit
def _play(seed, max_moves, depth, max_depth, adaptive, depth_offset, cutoff, use_corner, frank,
          fshapes, foffsets, ftable, grank, gshapes, goffsets, gtable, tt, ctt, last, move_xor,
          line_reward):
    """One teacher game; rows describe the board before each move taken."""
    cap = 1024
    boards = np.zeros(cap, np.uint64)
    masks = np.zeros(cap, np.uint16)
    moves = np.zeros(cap, np.uint8)
    legals = np.zeros(cap, np.uint8)
    evs = np.zeros((cap, 4), np.float32)
    evals = np.zeros(cap, np.int32)
    ranks = np.zeros(cap, np.uint8)
    valuation = np.zeros(cap, np.uint8)
    values = np.zeros(4)
    stats = np.zeros(1, np.int64)
    b = K.new_board(seed)
    m = np.int64(0)
    spawns = 2
    score = 0
    n = 0
    epoch = last[0]
    end = K.end_reason(C.END_ONGOING, n, max_moves)  # a new board always has a legal move
    while end == C.END_ONGOING:
        if n == cap:
            cap *= 2
            boards, masks, moves = _grow(boards, cap), _grow(masks, cap), _grow(moves, cap)
            legals, evs, evals = _grow(legals, cap), _grow(evs, cap), _grow(evals, cap)
            ranks, valuation = _grow(ranks, cap), _grow(valuation, cap)
        epoch = _next_epoch(epoch, tt, ctt)
        plies = plies_for(b, m, depth, max_depth, adaptive, depth_offset)
        legals[n], d, valuation[n] = decide(b, m, plies, use_corner, cutoff, epoch, tt, ctt,
                                            frank, fshapes, foffsets, ftable, grank, gshapes,
                                            goffsets, gtable, move_xor, line_reward, stats,
                                            values, evs[n])
        boards[n], masks[n], moves[n] = b, m, d
        evals[n] = static_value(b, m, use_corner)
        ranks[n] = K.highest_exponent(b, m)
        b, m, reward, spawns, _, step_end = K.step(b, m, d, seed, spawns, move_xor,
                                                   line_reward)
        if step_end == C.END_TILE_LIMIT:  # the move is not applied: no row for it
            end = step_end
            break
        score += reward
        n += 1
        end = K.end_reason(step_end, n, max_moves)  # the engine's one game-end rule
    last[0] = epoch
    return (boards[:n], masks[:n], moves[:n], legals[:n], evs[:n], evals[:n], ranks[:n],
            valuation[:n], score, K.highest_exponent(b, m), end, stats[0])


@dataclass
class TeacherGame:
    """One teacher game: a row per move taken, describing the board before the move."""

    boards: np.ndarray  # uint64 [N]
    masks: np.ndarray  # uint16 [N], tile_65536_mask
    moves: np.ndarray  # uint8 [N], UDLR
    ev_legal: np.ndarray  # uint8 [N], legal-move bitmask
    branch_evs: np.ndarray  # float32 [N, 4], V(d) / 1000, 0.0 where illegal
    board_eval: np.ndarray  # int32 [N], static value, rounded
    max_rank: np.ndarray  # uint8 [N], largest exponent on the board
    valuation: np.ndarray  # uint8 [N], valuation type id (VALUATION_TYPES: search, tuple11)
    seed: int
    score: int  # sum of the rewards of the moves taken
    highest_tile: int  # 2^(largest exponent) on the final board
    end_reason: int  # EndReason
    seconds: float  # wall time of the game
    cpu_seconds: float  # this thread's CPU time for the game (the speed on a shared machine)
    nodes: int  # search nodes (see the module docstring)


def play_game(seed: int, cfg: TeacherConfig, max_moves: int = 0) -> TeacherGame:
    """The teacher's game with this seed (engine spawns), at most max_moves moves (0: no limit).

    Deterministic: the same seed and settings give the same game.
    """
    if max_moves < 0:
        raise ValueError(f"max_moves must be >= 0, got {max_moves}")
    settings = _settings(cfg)
    start, cpu_start = time.perf_counter(), time.thread_time()
    (boards, masks, moves, legal, evs, evals, ranks, valuation, score, highest, end,
     nodes) = _play(U64(seed), max_moves, *settings, *_table(cfg), *K.tables())
    seconds, cpu_seconds = time.perf_counter() - start, time.thread_time() - cpu_start
    return TeacherGame(boards.copy(), masks.copy(), moves.copy(), legal.copy(), evs.copy(),
                       evals.copy(), ranks.copy(), valuation.copy(), int(seed), int(score),
                       1 << int(highest), int(end), seconds, cpu_seconds, int(nodes))
