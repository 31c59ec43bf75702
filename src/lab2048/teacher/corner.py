"""The corner evaluation and its pruned expectimax: the search half of the `strong` teacher.

Choices
- Evaluation (`evaluation="corner"`): a sum over the 4 rows read left to right and the 4 columns
  read top to bottom of a line score that rewards big tiles at the start of the line, so the
  biggest tiles gather in the top-left corner (one fixed corner, unlike the symmetric "lines"
  heuristic). With w(e) = e·2^e for a tile of exponent e (w(0) = 0) and a line e0..e3:

      corner(line) = w(e0) + Σ_{k=0..2} g(w(e_k), w(e_k+1))
      g(a, b)      = a + b + [a = b]·a   if a >= b
                   = 12·(a − b)          if a < b   (a bigger tile after a smaller one)

  The formula is the one the public macroxue/2048-ai player describes; this is an
  independent implementation. Values are integers below 2^24 per line, exact in float64.
  A 2^16 tile is scored as 32768 (nibble 15), as in `heuristic`.
- Search of depth D (`TeacherConfig.depth`): D + 1 layers of moves with D layers of spawns
  between them; the boards after the last moves are scored statically (afterstates):

      V(d)         = T(move(b, d), D − 1, 1)
      T(a, k, q)   = corner(a)                       if corner(a) < pass, k < 0 or q < cutoff
                   = (1/n) Σ_{empty i} [0.9·M(a + 2@i, k, 0.9q/n) + 0.1·M(a + 4@i, k, 0.1q/n)]
      M(c, k, q)   = max over legal moves d of T(move(c, d), k − 1, q);  lost if none

  pass = 2·w(highest exponent of the root) when corner(root) >= 0, else −∞: a board whose
  evaluation falls below twice the biggest tile's weight is already bad and is not expanded.
  lost = −max(2^17, 2·w(highest exponent of the root)): a dead end, relative to the game's
  stage. A move that would merge two 2^16 tiles ends the game and is valued lost.
- Transposition table at the spawn-expanded boards T(a, k, q): 2^tt_bits entries (board,
  value f32, path probability f32, tag = epoch·16 + k). An entry answers T(a, k', q') when its
  board and epoch match, k >= k' and its q >= q' (it was expanded at least as far). Every root
  search takes a new epoch (as in `search`): a move's value depends on the board and the
  settings alone. Boards with a 2^16 tile are not cached.
- Nodes: one per T call and one per spawned board (the `search` convention).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lab2048.engine import kernels as K
from lab2048.teacher.heuristic import line_sum

U64 = np.uint64
TT_DTYPE = np.dtype([("board", np.uint64), ("value", np.float32), ("prob", np.float32),
                     ("tag", np.uint32)])
HASH_MUL = U64(0x9E3779B97F4A7C15)
UPHILL_WEIGHT = 12.0

_jit = njit(cache=True, nogil=True)


@_jit
def tile_weight(e):
    """w(e) = e·2^e (0 for an empty cell)."""
    return float(e * (1 << e))


@_jit
def corner_line(line):
    """corner(line) of the module docstring for a u16 line (nibble 0 = bits 15..12 first)."""
    w = np.zeros(4)
    for k in range(4):
        w[k] = tile_weight((line >> (12 - 4 * k)) & 0xF)
    score = w[0]
    for k in range(3):
        a, b = w[k], w[k + 1]
        if a >= b:
            score += a + b + (a if a == b else 0.0)
        else:
            score += UPHILL_WEIGHT * (a - b)
    return score


@_jit
def build_corner_table():
    table = np.empty(65536)
    for line in range(65536):
        table[line] = corner_line(line)
    return table


CORNER_TABLE = build_corner_table()


@_jit
def corner_eval(b):
    """Σ over rows (left to right) and columns (top to bottom) of CORNER_TABLE[line]."""
    return line_sum(CORNER_TABLE, b)


@_jit
def _tiles_value(a, m, k, prob, cutoff, pass_score, lost, epoch, tt, shift, move_xor,
                 line_reward, stats):
    """T(a, k, prob) of the module docstring; stats[0] counts nodes. Self-recursive with one
    signature (see search._chance_value): `corner_value` is its only caller and casts."""
    stats[0] += 1
    score = corner_eval(a)
    if score < pass_score or k < 0 or prob < cutoff:
        return score
    slot = 0
    if m == 0:
        slot = np.int64((a * HASH_MUL) >> shift)
        entry = tt[slot]
        tag = entry.tag
        if (entry.board == a and tag >> 4 == epoch and tag & 15 >= k
                and entry.prob >= np.float32(prob)):
            return np.float64(entry.value)
    n = K.count_empty(a)
    total = 0.0
    for i in range(16):
        if (a >> U64(4 * i)) & U64(15) != U64(0):
            continue
        for tile in range(1, 3):
            c = a | (U64(tile) << U64(4 * i))
            p = 0.9 if tile == 1 else 0.1
            stats[0] += 1
            best = lost
            for d in range(4):
                nb, nm, reward = K.move(c, m, d, move_xor, line_reward)
                if reward == K.TILE_OVERFLOW:
                    continue  # ends the game: lost
                if nb != c or nm != m:
                    best = max(best, _tiles_value(nb, nm, k - 1, prob * p / n, cutoff,
                                                  pass_score, lost, epoch, tt, shift, move_xor,
                                                  line_reward, stats))
            total += p * best
    value = total / n
    if m == 0:
        tt[slot].board = a
        tt[slot].value = np.float32(value)
        tt[slot].prob = np.float32(prob)
        tt[slot].tag = np.uint32(epoch * 16 + k)
    return value


@_jit
def corner_bounds(b, m):
    """(pass, lost) of the module docstring for a root board."""
    weight = tile_weight(min(K.highest_exponent(b, m), 15))
    pass_score = 2.0 * weight if corner_eval(b) >= 0 else -np.inf
    return pass_score, -max(float(1 << 17), 2.0 * weight)


@_jit
def corner_value(a, m, depth, cutoff, pass_score, lost, epoch, tt, move_xor, line_reward,
                 stats):
    """V(d) = T(a, depth − 1, 1) of the module docstring for the board a after a root move
    (pass and lost: `corner_bounds` of the root); `search.root_values` is its only caller."""
    shift = U64(64 - int(np.log2(len(tt))))
    return _tiles_value(U64(a), np.int64(m), np.int64(depth - 1), 1.0, np.float64(cutoff),
                        np.float64(pass_score), np.float64(lost), np.int64(epoch), tt, shift,
                        move_xor, line_reward, stats)
