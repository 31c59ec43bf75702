"""Numba kernels of the 2048 engine: line tables, moves, legality, seeded spawns, one game step.

Choices
- A *line* is one row or column as a u16 of four nibbles, nibble 0 (bits 15..12) being the
  cell at the edge the tiles slide toward for Left/Up. Rows are read straight from the board
  (row r = bits 63-16r .. 48-16r); columns are read as rows of the transposed board.
- Moves go through 65536-entry tables built once at import (`build_tables`): for each line and
  direction the XOR that turns the board's line into the moved line (pre-shifted into column
  position for Up/Down, as in the classic bitboard engines), and the merge reward of the line.
  A move is 4 lookups and 4 XORs. The reward of a line is the same sliding either way (a run of
  k equal tiles makes k // 2 merges from either end), so one reward table serves both.
- 2^16: a nibble cannot hold exponent 16. Lines where two 32768 (nibble 15) tiles would merge
  carry the reward `NEEDS_WIDE` (< 0), and boards with a non-zero tile_65536_mask never take the
  table path: both go to `move_wide`, which works on exponents 0..16 and writes the mask. A merge
  of two 2^16 tiles would make 2^17, which neither the board nor the mask can hold: `move_wide`
  returns the reward `TILE_OVERFLOW` (-1) for it and the game loop ends the game (TILE_LIMIT).
- Spawns are counter-based: the k-th spawn of a game (k = 0, 1, ... counting the two opening
  tiles) uses the 64-bit draw `splitmix64(seed + (k + 1) * GOLDEN)`. The high 32 bits choose the
  empty cell, `(hi * n_empty) >> 32` (bias < 2^-27), the low 32 bits choose a 4 when below
  0.1 * 2^32. The same seed and the same moves give the same game in any process, and any
  spawn of a game can be recomputed from (seed, k) alone.
- Types: boards are uint64, masks int64 holding a u16, rewards int64. Numba mixes uint64 and
  int64 into float64, so every constant that meets a board is a np.uint64.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from lab2048.engine import conventions as C

U64 = np.uint64
NIBBLE = U64(0xF)
LINE = U64(0xFFFF)
GOLDEN = U64(0x9E3779B97F4A7C15)
MIX1 = U64(0xBF58476D1CE4E5B9)
MIX2 = U64(0x94D049BB133111EB)
LOW32 = U64(0xFFFFFFFF)
FOUR_THRESHOLD = U64(round(C.SPAWN_FOUR_PROBABILITY * 2**32))  # a draw below it spawns a 4
NEEDS_WIDE = -(1 << 24)  # line reward marking a 32768+32768 merge; four of them stay < 0
TILE_OVERFLOW = -1  # move_wide's reward for a move that would make a 2^17 tile

UP, DOWN, LEFT, RIGHT = (int(m) for m in C.Move)
WIDE = C.MAX_EXPONENT  # the exponent a nibble of 15 stands for where the mask bit is set

_jit = njit(cache=True, nogil=True)


# ---------------------------------------------------------------------------------------------
# Lines and tables


@_jit
def merge_line(cells):
    """Slide a line of 4 exponents toward its edge and merge: (moved cells, reward).

    A line is packed 6 bits a cell, position k (k = 0 at the edge tiles slide to) in bits
    6k..6k+5. Equal neighbours (after sliding) merge once each, nearest the edge first:
    1 1 1 1 -> 2 2, 2 1 1 -> 2 2 (not 3). Merging two k's makes k + 1 and earns 2^(k+1).
    Exponents may exceed 15 on output; callers decide what a 16 or 17 means. Scalar code with
    no allocation, so the callers' loops compile tight.
    """
    out = 0
    n = 0  # tiles placed in `out`
    open_exp = 0  # exponent of the last placed tile while it may still merge, else 0
    reward = 0
    for k in range(4):
        e = (cells >> (6 * k)) & 63
        if e == 0:
            continue
        if e == open_exp:
            out += 1 << (6 * (n - 1))  # the last placed tile becomes e + 1
            reward += 1 << (e + 1)
            open_exp = 0
        else:
            out |= e << (6 * n)
            n += 1
            open_exp = e
    return out, reward


@_jit
def _unpack_column(line):
    """A line's four nibbles placed down column 0 of a board (nibble k at bits 63-16k..60-16k)."""
    col = U64(0)
    for k in range(4):
        col |= U64((line >> (12 - 4 * k)) & 0xF) << U64(60 - 16 * k)
    return col


@_jit
def build_tables():
    """(move_xor u64[4, 65536], line_reward i32[65536]) for the table path of `move_fast`.

    move_xor[LEFT/RIGHT, line] is line ^ moved_line; move_xor[UP/DOWN, line] is the same
    unpacked into column 0. line_reward is NEEDS_WIDE for lines with a 15+15 merge (their XOR,
    with the merged cell capped at 15, still says correctly that the line changes).
    """
    move_xor = np.zeros((4, 65536), np.uint64)
    line_reward = np.zeros(65536, np.int32)
    for line in range(65536):
        for reverse in (False, True):
            cells = 0
            for k in range(4):  # nibble k of the line; Right and Down slide toward nibble 3
                cells |= ((line >> (12 - 4 * k)) & 0xF) << (6 * (3 - k if reverse else k))
            out, reward = merge_line(cells)
            moved = 0
            for k in range(4):
                e = (out >> (6 * (3 - k if reverse else k))) & 63
                if e > 15:
                    reward, e = NEEDS_WIDE, 15
                moved |= e << (12 - 4 * k)
            diff = line ^ moved
            row_dir, col_dir = (RIGHT, DOWN) if reverse else (LEFT, UP)
            move_xor[row_dir, line] = U64(diff)
            move_xor[col_dir, line] = _unpack_column(diff)
            line_reward[line] = reward
    return move_xor, line_reward


# ---------------------------------------------------------------------------------------------
# Moves


@_jit
def transpose(b):
    """The board mirrored on its main diagonal: cell (r, c) goes to (c, r)."""
    a1 = b & U64(0xF0F00F0FF0F00F0F)
    a2 = b & U64(0x0000F0F00000F0F0)
    a3 = b & U64(0x0F0F00000F0F0000)
    a = a1 | (a2 << U64(12)) | (a3 >> U64(12))
    b1 = a & U64(0xFF00FF0000FF00FF)
    b2 = a & U64(0x00FF00FF00000000)
    b3 = a & U64(0x00000000FF00FF00)
    return b1 | (b2 >> U64(24)) | (b3 << U64(24))


@_jit
def move_fast(b, d, move_xor, line_reward):
    """(board after move d, reward) by table lookup, for boards without 2^16 tiles.

    A reward < 0 (NEEDS_WIDE) means two 32768 tiles merge: use `move_wide` instead.
    An illegal move returns the same board and reward 0.
    """
    table = move_xor[d]
    if d >= LEFT:
        l0 = (b >> U64(48)) & LINE
        l1 = (b >> U64(32)) & LINE
        l2 = (b >> U64(16)) & LINE
        l3 = b & LINE
        out = b ^ (table[l0] << U64(48)) ^ (table[l1] << U64(32)) ^ (table[l2] << U64(16))
        out ^= table[l3]
    else:
        t = transpose(b)
        l0 = (t >> U64(48)) & LINE
        l1 = (t >> U64(32)) & LINE
        l2 = (t >> U64(16)) & LINE
        l3 = t & LINE
        out = b ^ table[l0] ^ (table[l1] >> U64(4)) ^ (table[l2] >> U64(8))
        out ^= table[l3] >> U64(12)
    reward = (
        np.int64(line_reward[l0])
        + np.int64(line_reward[l1])
        + np.int64(line_reward[l2])
        + np.int64(line_reward[l3])
    )
    return out, reward


@_jit
def cell_exponent(b, m, i):
    """Exponent (0..16) of cell i of board b with tile_65536_mask m."""
    e = np.int64((b >> U64(60 - 4 * i)) & NIBBLE)
    return WIDE if e == 15 and (m >> i) & 1 else e


@_jit
def mask_is_valid(b, m):
    """Whether every cell marked in tile_65536_mask m holds nibble 15 on board b."""
    if m == 0:
        return True
    for i in range(16):  # noqa: SIM110 (numba compiles loops, not all() over generators)
        if (m >> i) & 1 and (b >> U64(60 - 4 * i)) & NIBBLE != NIBBLE:
            return False
    return True


@_jit
def decode(b, m):
    """The 16 cell exponents (0..16) of board b with tile_65536_mask m, cell 0 first."""
    cells = np.zeros(16, np.int64)
    for i in range(16):
        cells[i] = cell_exponent(b, m, i)
    return cells


@_jit
def encode(cells):
    """(board, tile_65536_mask) of 16 cell exponents 0..16; exponent 16 sets the mask bit."""
    b = U64(0)
    m = 0
    for i in range(16):
        e = cells[i]
        if e >= WIDE:
            m |= 1 << i
            e = 15
        b |= U64(e) << U64(60 - 4 * i)
    return b, m


@_jit
def line_cell(d, j, k):
    """Board cell of the k-th position (k = 0 at the edge tiles slide to) of line j in move d."""
    if d == UP:
        return 4 * k + j
    if d == DOWN:
        return 4 * (3 - k) + j
    if d == LEFT:
        return 4 * j + k
    return 4 * j + 3 - k


@_jit
def move_wide(b, m, d):
    """(board, mask, reward) after move d, on exponents 0..16 cell by cell.

    Handles 2^16 tiles and 32768 + 32768 merges; reward TILE_OVERFLOW (board unchanged) where
    two 2^16 tiles would merge.
    """
    nb = U64(0)
    nm = 0
    reward = 0
    for j in range(4):
        cells = 0
        for k in range(4):
            cells |= cell_exponent(b, m, line_cell(d, j, k)) << (6 * k)
        out, line_reward = merge_line(cells)
        reward += line_reward
        for k in range(4):
            e = (out >> (6 * k)) & 63
            if e > WIDE:
                return b, m, np.int64(TILE_OVERFLOW)
            i = line_cell(d, j, k)
            if e == WIDE:
                nm |= 1 << i
            nb |= U64(min(e, 15)) << U64(60 - 4 * i)
    return nb, nm, np.int64(reward)


@njit(cache=True, nogil=True, inline="always")  # as a call it runs at half the speed (LLVM
def move(b, m, d, move_xor, line_reward):  # would not inline it, move_wide and all)
    """(board, mask, reward) after move d: the table path when it is exact, else `move_wide`."""
    nb, reward = move_fast(b, d, move_xor, line_reward)  # unconditional: LLVM keeps it tight
    if m == 0 and reward >= 0:
        return nb, m, reward
    return move_wide(b, m, d)


@_jit
def is_legal(b, m, nb, nm, reward):
    """Whether a move from (b, m) to (nb, nm) with this reward is legal: it changes the board,
    or it would merge two 2^16 tiles (legal in 2048, though the result cannot be stored)."""
    return nb != b or nm != m or reward == TILE_OVERFLOW


@_jit
def _legal_mask_wide(b, m):
    legal = 0
    for d in range(4):
        nb, nm, reward = move_wide(b, m, d)
        if is_legal(b, m, nb, nm, reward):
            legal |= 1 << d
    return legal


@_jit
def legal_mask(b, m, move_xor, line_reward):
    """Bit d set where move d changes the board (a move making 2^17 counts as legal)."""
    if m != 0:
        return _legal_mask_wide(b, m)
    legal = 0
    for d in range(4):  # the table XOR is exact for legality, even for 32768 + 32768
        nb, _ = move_fast(b, d, move_xor, line_reward)
        if nb != b:
            legal |= 1 << d
    return legal


@_jit
def highest_exponent(b, m):
    """Largest exponent on the board (16 where a 2^16 tile is)."""
    if m != 0:
        return WIDE
    best = 0
    for i in range(16):
        best = max(best, np.int64((b >> U64(4 * i)) & NIBBLE))
    return best


# ---------------------------------------------------------------------------------------------
# Seeded spawns and one game step


@_jit
def draw(seed, k):
    """The k-th 64-bit draw of a counter-based splitmix64 stream: mix(seed + (k + 1) * GOLDEN)."""
    z = U64(seed) + (U64(k) + U64(1)) * GOLDEN
    z = (z ^ (z >> U64(30))) * MIX1
    z = (z ^ (z >> U64(27))) * MIX2
    return z ^ (z >> U64(31))


@_jit
def count_empty(b):
    n = 0
    for i in range(16):
        if (b >> U64(4 * i)) & NIBBLE == U64(0):
            n += 1
    return n


@_jit
def place_tile(b, x):
    """Board b with the tile chosen by 64-bit draw x on an empty cell (b itself if full)."""
    n = count_empty(b)
    if n == 0:
        return b
    pick = np.int64(((x >> U64(32)) * U64(n)) >> U64(32))
    exponent = U64(2) if (x & LOW32) < FOUR_THRESHOLD else U64(1)
    for i in range(16):
        shift = U64(60 - 4 * i)
        if (b >> shift) & NIBBLE == U64(0):
            if pick == 0:
                return b | (exponent << shift)
            pick -= 1
    return b


@_jit
def spawn(b, seed, k):
    """Board b after the k-th spawn of the game with this seed."""
    return place_tile(b, draw(seed, k))


@_jit
def new_board(seed):
    """A game's opening board: spawns 0 and 1 on an empty board (the next spawn is k = 2)."""
    return spawn(spawn(U64(0), seed, 0), seed, 1)


@_jit
def step(b, m, d, seed, spawns, move_xor, line_reward):
    """Play move d and spawn: (board, mask, reward, spawns used, legal mask after, end reason).

    An illegal move changes nothing. A move making 2^17 is not applied and ends the game
    (TILE_LIMIT). Otherwise the game ends (NO_MOVES) when the new board has no legal move.
    """
    nb, nm, reward = move(b, m, d, move_xor, line_reward)
    if reward == TILE_OVERFLOW:
        return (b, m, np.int64(0), spawns, legal_mask(b, m, move_xor, line_reward),
                C.END_TILE_LIMIT)
    if nb == b and nm == m:
        return b, m, np.int64(0), spawns, legal_mask(b, m, move_xor, line_reward), C.END_ONGOING
    nb = spawn(nb, seed, spawns)
    legal = legal_mask(nb, nm, move_xor, line_reward)
    return nb, nm, reward, spawns + 1, legal, C.END_NO_MOVES if legal == 0 else C.END_ONGOING


@_jit
def can_end_after(b, m, d, move_xor, line_reward):
    """Whether the game can be over after move d on (b, m), whatever spawn came: the move
    makes 2^17 (TILE_LIMIT), or it leaves one empty cell and a 2 or a 4 there leaves no legal
    move (NO_MOVES). A record that holds boards before moves, never the final board, ends a
    finished game only where this holds."""
    nb, nm, reward = move(b, m, d, move_xor, line_reward)
    if reward == TILE_OVERFLOW:
        return True
    if count_empty(nb) != 1:
        return False
    for i in range(16):
        shift = U64(60 - 4 * i)
        if (nb >> shift) & NIBBLE == U64(0):
            for e in (1, 2):
                if legal_mask(nb | (U64(e) << shift), nm, move_xor, line_reward) == 0:
                    return True
    return False


end_reason = _jit(C.end_reason)  # the one game-end rule, callable from numba loops


@functools.cache
def tables():
    """The process's (move_xor, line_reward), built on first use."""
    return build_tables()
