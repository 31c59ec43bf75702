"""The teacher's static evaluation of a board: a sum of per-line scores from one 65536-entry table.

Choices
- The evaluation is a sum over the 8 lines of the board (4 rows, read left to right, and 4
  columns, read top to bottom), each scored by `line_score` and looked up in `LINE_TABLE`
  (float32, indexed by the line's u16 of four nibbles). Columns are the rows of
  `kernels.transpose(b)`. For a line of exponents e0..e3 (0 = empty):

      score(line) = 270·empty + 700·merges − 47·min(mono_left, mono_right) − 11·Σ e_i^3.5

  empty      number of cells with e_i = 0;
  merges     number of tiles with an equal neighbour once empty cells are squeezed out
             (a run of L ≥ 2 equal tiles counts L: "2 0 2 4" counts 2, "2 2 2 0" counts 3);
  mono_left  Σ over neighbours (e_i, e_i+1) with e_i > e_i+1 of e_i^4 − e_i+1^4, empty = 0;
  mono_right the same for e_i < e_i+1, so min(left, right) is the cost of the line's
             cheaper departure from being monotone;
  sum        a convex penalty on the tiles' exponents (bigger tiles cost far more).
  The weights and powers are the published ones of a strong public expectimax player; this is
  an independent implementation of that formula.
- `heuristic(b)` = Σ over the 8 lines of LINE_TABLE[line], a float64 sum of float32 entries.
  Every entry has 13 <= |x| < 2^22 (a test checks it), so each is a multiple of 2^-20 and any
  sum or difference of a few dozen of them is below 2^28: exact in float64 (53 bits). Hence
  the value does not depend on the order of the terms (it is the same under all 8 symmetries
  of the board: each row and column scores the same read either way, and the set of lines is
  only permuted), and `spawn_heuristic` may update it for one row and one column exactly.
- Game over: a board with no legal move is worth LOST_VALUE = −1,600,000 flat (the published
  player adds 200,000 per line to every live board and scores a lost one 0; a constant shift of
  every value leaves expectimax's choices unchanged). `board_eval(b, m)` is
  LOST_VALUE for a dead board, else `heuristic(b)`; in the dataset it is rounded to int32.
- Rewards are not part of the value: the search ranks futures by board shape alone, as the
  published player does; scores follow from surviving and merging.
- 2^16 tiles (tile_65536_mask) are scored as nibble 15, i.e. as 32768: the table has 16
  exponents. Deadness, however, is exact: with a mask, a 32768 next to a 65536 cannot merge,
  two 65536 can (a legal move in 2048, ending the game at the engine's tile limit).
- `LINE_TABLE` is a module global built once at import, so numba freezes it into compiled code
  and `board_eval(b, m)` needs no table argument.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lab2048.engine import kernels as K

U64 = np.uint64
EMPTY_WEIGHT = 270.0
MERGE_WEIGHT = 700.0
MONO_WEIGHT = 47.0
MONO_POWER = 4.0
SUM_WEIGHT = 11.0
SUM_POWER = 3.5
LOST_VALUE = -1_600_000.0  # 8 lines x 200,000: a lost game against a live board

_jit = njit(cache=True, nogil=True)


@_jit
def line_score(line):
    """score(line) of the module docstring for a u16 line (nibble 0 = bits 15..12 first)."""
    e = np.zeros(4, np.int64)
    for k in range(4):
        e[k] = (line >> (12 - 4 * k)) & 0xF
    empty = 0
    total = 0.0
    for k in range(4):
        if e[k] == 0:
            empty += 1
        total += float(e[k]) ** SUM_POWER
    merges = 0
    previous = 0
    run = 0  # equal tiles seen after the first of the current run
    for k in range(4):
        if e[k] == 0:
            continue
        if e[k] == previous:
            run += 1
        else:
            if run > 0:
                merges += run + 1
            run = 0
            previous = e[k]
    if run > 0:
        merges += run + 1
    left = 0.0
    right = 0.0
    for k in range(3):
        a = float(e[k]) ** MONO_POWER
        b = float(e[k + 1]) ** MONO_POWER
        if e[k] > e[k + 1]:
            left += a - b
        else:
            right += b - a
    return (EMPTY_WEIGHT * empty + MERGE_WEIGHT * merges - MONO_WEIGHT * min(left, right)
            - SUM_WEIGHT * total)


@_jit
def build_line_table():
    """LINE_TABLE: float32 line_score of every u16 line."""
    table = np.empty(65536, np.float32)
    for line in range(65536):
        table[line] = line_score(line)
    return table


LINE_TABLE = build_line_table()


@_jit
def line_sum(table, b):
    """Σ over the 4 rows (left to right) and the 4 columns (top to bottom) of table[line]
    (float64), the line as its 16 bits: how every line-table evaluation scores a board."""
    t = K.transpose(b)
    mask = U64(0xFFFF)
    total = 0.0
    for lines in (b, t):  # rows, then columns: a fixed order, so sums are reproducible
        for shift in (U64(48), U64(32), U64(16), U64(0)):
            total += np.float64(table[(lines >> shift) & mask])
    return total


@_jit
def heuristic(b):
    """Σ over the 4 rows and the 4 columns of LINE_TABLE[line] (float64), with no game-over test."""
    return line_sum(LINE_TABLE, b)


@_jit
def spawn_heuristic(a, t, h, k, tile):
    """heuristic(a with exponent `tile` put in the empty nibble k, counted from the low end),
    given h = heuristic(a) and t = transpose(a): only one row and one column change, so

        h − T[row] − T[column] + T[new row] + T[new column]

    which is exactly the full sum (every partial sum is exact in float64, see the docstring).
    """
    mask = U64(0xFFFF)
    row = (a >> U64(16 * (k // 4))) & mask
    col = (t >> U64(16 * (k % 4))) & mask
    new_row = row | (U64(tile) << U64(4 * (k % 4)))
    new_col = col | (U64(tile) << U64(4 * (k // 4)))
    return (h - np.float64(LINE_TABLE[row]) - np.float64(LINE_TABLE[col])
            + np.float64(LINE_TABLE[new_row]) + np.float64(LINE_TABLE[new_col]))


@_jit
def _has_zero_nibble(x):
    """Whether any of the 16 nibbles of x is 0 (exact: borrows only follow a true zero)."""
    return ((x - U64(0x1111111111111111)) & ~x & U64(0x8888888888888888)) != U64(0)


@_jit
def is_dead(b, m):
    """Whether board (b, m) has no legal move: full, and no two neighbours can merge.

    (The empty board, which has no legal move either but is no lost game, is not dead.)
    """
    if _has_zero_nibble(b):
        return False
    if m == 0:
        # neighbours equal <=> a zero nibble in b ^ (b shifted by one cell); the positions that
        # would pair cells across a row end (or off the board) are forced non-zero
        across = (b ^ (b >> U64(4))) | U64(0xF000F000F000F000)
        down = (b ^ (b >> U64(16))) | U64(0xFFFF000000000000)
        return not (_has_zero_nibble(across) or _has_zero_nibble(down))
    for i in range(16):
        e = K.cell_exponent(b, m, i)
        if i % 4 < 3 and K.cell_exponent(b, m, i + 1) == e:
            return False
        if i < 12 and K.cell_exponent(b, m, i + 4) == e:
            return False
    return True


@_jit
def board_eval(b, m):
    """The static value of board (b, m): LOST_VALUE if no move is legal, else heuristic(b)."""
    if is_dead(b, m):
        return LOST_VALUE
    return heuristic(b)


@_jit
def _board_evals(boards, masks, out):
    for i in range(len(boards)):
        v = board_eval(boards[i], masks[i])
        out[i] = np.int32(np.floor(v + 0.5))


def board_evals(boards, masks) -> np.ndarray:
    """int32 board_eval of each board, rounded half up (the dataset's `board_eval` field)."""
    boards = np.ascontiguousarray(boards, dtype=np.uint64)
    masks = np.ascontiguousarray(masks, dtype=np.uint16)
    if boards.shape != masks.shape or boards.ndim != 1:
        raise ValueError(f"boards and masks must be 1-D of one length, got {boards.shape} "
                         f"and {masks.shape}")
    out = np.empty(len(boards), np.int32)
    _board_evals(boards, masks, out)
    return out
