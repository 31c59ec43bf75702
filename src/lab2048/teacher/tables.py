"""Formation tables: exact success probabilities for the endgame formations the corner search
steers into, computed once by exhaustive expectimax and looked up during play.

Choices
- A formation (`FORMATIONS`) is a set of locked cells holding big tiles in the top-left
  corner and a target cell; every other cell is free. Two formations, named by their
  dataset valuation types (for their 11 and 10 free cells). Cells are (row, column), row 0
  on top:

      tuple11             tuple10             L  locked
      L L L f             L L L f             T  the target cell
      L L T f             L L L T             f  the other free cells
      f f f f             f f f f
      f f f f             f f f f

  tuple11 builds the sixth tile of the corner, beside the second locked tile of the second
  row; tuple10 builds the seventh, beside the third (the smallest locked tile when the corner
  descends left to right and top to bottom).
- Each free cell has a cap, the largest exponent it may hold: for a table of rank r, r on
  the target and its neighbours, one less per further step from the target, never below 2
  (a spawned 4 fits). For tuple11:

      .   .   .   r−1        rank 6: target, (1,3), (2,2) up to 64; (0,3), (2,1), (2,3),
      .   .   r   r               (3,2) up to 32; (2,0), (3,1), (3,3) up to 16; (3,0) up to 8
      r−2 r−1 r   r−1
      r−3 r−2 r−1 r−2

  and for tuple10 r on (0,3), (1,3), (2,3), r − 1 on (2,2), (3,3), r − 2 on (2,1), (3,2),
  r − 3 on (2,0), (3,1), r − 4 on (3,0) (an r in the target is made of two r − 1 next to
  each other, and so on outward). The table holds, for every filling of the free cells within
  their caps (0 = empty), the probability P that optimal play reaches the goal, a tile of
  exponent r + 1 in the target cell, without ever moving a locked tile or making a free tile
  above its cap:

      P(s)    = max over moves d of Q(s, d)                    (0 if no move qualifies)
      Q(s, d) = 1                                          if move(s, d) has r + 1 in T
              = 0                                          if it moves a locked tile or puts
                                                              a free tile above its cap
              = (1/n) Σ_{empty free i} [0.9·P(s' + 2@i) + 0.1·P(s' + 4@i)]  otherwise
                                                              (s' = move(s, d), n empties)

  The locked cells hold the distinct exponents 15, 14, 13, ... while the table is built, so
  they never merge; every move adds a spawn and merges keep the sum of the free tiles, so the
  recursion ends. This is the method the public macroxue/2048-ai player describes for its
  lookup tables (its logs call such moves `tuple11` and `tuple10`); the formations, goals and
  encoding here are this project's own.
- Index of a state: the free cells' exponents as the digits of a mixed-radix number (radix
  cap + 1), the target cell the lowest digit, then the other free cells in reading order.
  Entries are u16: round(P·65534); 65535 marks an entry not yet computed. The file of rank R
  holds the tables of ranks R, R − 1, ..., 3 one after the other (`layout`): 2 bytes an
  entry. tuple11, R = 3: 0.42 M entries (0.8 MiB), 4: 3.0 M (5.7 MiB), 5: 28.9 M (55 MiB),
  6: 251 M (479 MiB), 7: 1.58 G (3.0 GiB); tuple10, R = 6: 17.8 M (34 MiB), 7: 108 M
  (206 MiB), 8: 520 M (991 MiB).
- The compiled functions see a rank of a formation as `shape(rank, formation)`, an int64
  array of the caps, place values, free cells, locked cells and the target's locked
  neighbours, so one set of functions serves every formation.
- Use during play (`formation_values`): the rank used for a board is one less than the
  smallest of the target's locked neighbours, at most R, so the goal tile merges into the
  locked corner. The board qualifies, as it is or mirrored on its main diagonal (Up <-> Left,
  Down <-> Right), when that rank is at least 3, its locked cells hold exponents above the
  rank with no two neighbours equal, and every free cell, the target included, is within its
  cap (the free tiles then never merge with a locked one, as in the table). Each move's Q is
  then computed from the table; when the best Q reaches the formation's `MIN_PROB`, the
  table's move is played (branch_evs = Q), else the next formation or the search decides.
  With both orientations qualifying, the one with the higher best Q counts.
- Building (`build`): a depth-first pass over all indices, memoised in a u16 file mapped into
  memory (`.partial`): an entry is written once, when final, so a killed build resumes where
  it stopped. The recursion reads every P back as stored (rounded to u16), so a resumed build
  gives the same table as one that ran through, and each entry is its recurrence of the
  stored entries, rounded. The finished tables are written as one file with a 64-byte header
  (magic, format, rank, entries, checksum) and renamed into place; loading checks all of
  them. The file name carries the formation (`tuple10-r7.bin`).
- Numba caches a caller with its callees compiled in: after editing this module, delete the
  `search.*.nbi/.nbc` cache files beside `search.py`, or the game loop keeps the old code.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from numba import njit

from lab2048.engine import kernels as K
from lab2048.errors import UserError

U64 = np.uint64
FORMATIONS = {  # name (the dataset's valuation type): (locked cells, target cell)
    "tuple11": ((0, 1, 2, 4, 5), 6),
    "tuple10": ((0, 1, 2, 4, 5, 6), 7),
}
FORMATION = "tuple11"
MIN_CAP = 2  # every free cell can take a spawned 4
MIN_RANK = 3
SCALE = 65534.0
UNSET = np.uint16(65535)
# a table move is played from this probability; tuple10 whenever any move can reach its goal
# (1/SCALE: the smallest stored probability above 0), as the public player plays its tuple10
MIN_PROB = {"tuple11": 0.9, "tuple10": 1 / SCALE}
MAGIC = b"L2048TBL"
FORMAT = 2  # 2: per-cell caps
HEADER = struct.Struct("<8sIIQQ32x")  # magic, format, rank, entries, checksum: 64 bytes
ROWS = 5  # a shape's rows: caps, place values, free cells, locked cells, target's neighbours

_jit = njit(cache=True, nogil=True)


def _adjacent(a: int, b: int) -> bool:
    return abs(a // 4 - b // 4) + abs(a % 4 - b % 4) == 1


def free_cells(formation: str = FORMATION) -> np.ndarray:
    """The free cells in index order: the target first, then the others in reading order."""
    locked, target = FORMATIONS[formation]
    return np.array([target] + [c for c in range(16) if c not in locked and c != target],
                    np.int64)


def caps(rank: int, formation: str = FORMATION) -> np.ndarray:
    """The largest exponent each free cell may hold: rank for the target and its neighbours,
    one less per further step, at least MIN_CAP."""
    target = FORMATIONS[formation][1]
    steps = np.array([abs(c // 4 - target // 4) + abs(c % 4 - target % 4)
                      for c in free_cells(formation)])
    return np.maximum(MIN_CAP, rank - np.maximum(0, steps - 1)).astype(np.int64)


def places(rank: int, formation: str = FORMATION) -> np.ndarray:
    """The place value of each free cell's digit in an index (mixed radix cap + 1)."""
    radix = caps(rank, formation) + 1
    return np.concatenate([[1], np.cumprod(radix[:-1])]).astype(np.int64)


def entries(rank: int, formation: str = FORMATION) -> int:
    """The entries of the table of one rank."""
    return int(np.prod(caps(rank, formation) + 1))


def shape(rank: int, formation: str = FORMATION) -> np.ndarray:
    """int64[ROWS, 16], the compiled functions' view of a formation's rank: caps and place
    values of the free cells (row 0, 1), the free cells, target first (row 2), the locked
    cells (row 3), the locked neighbours of the target (row 4); rows padded with -1."""
    locked, target = FORMATIONS[formation]
    out = np.full((ROWS, 16), -1, np.int64)
    free = free_cells(formation)
    out[0, :len(free)], out[1, :len(free)], out[2, :len(free)] = (
        caps(rank, formation), places(rank, formation), free)
    out[3, :len(locked)] = locked
    near = [c for c in locked if _adjacent(c, target)]
    out[4, :len(near)] = near
    return out


def layout(rank: int, formation: str = FORMATION) -> tuple[np.ndarray, np.ndarray, int]:
    """The file of rank R holds the tables of ranks R, R − 1, ..., MIN_RANK in that order:
    (shapes int64[R + 1, ROWS, 16] indexed by rank, offsets int64[R + 1] of each rank's first
    entry, total entries)."""
    shapes = np.full((rank + 1, ROWS, 16), -1, np.int64)
    shapes[:] = shape(MIN_RANK, formation)  # the cell rows, also for the unused ranks
    offsets = np.zeros(rank + 1, np.int64)
    total = 0
    for r in range(rank, MIN_RANK - 1, -1):
        shapes[r], offsets[r] = shape(r, formation), total
        total += entries(r, formation)
    return shapes, offsets, total


def default_dir() -> Path:
    """The user cache directory of the tables: $XDG_CACHE_HOME/lab2048/teacher-tables
    (~/.cache when XDG_CACHE_HOME is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "lab2048" / "teacher-tables"


def table_path(directory: str | Path, rank: int, formation: str = FORMATION) -> Path:
    return Path(directory or default_dir()) / f"{formation}-r{rank}.bin"


# ---------------------------------------------------------------------------------------------
# Boards and indices


@_jit
def nibble(b, cell):
    return np.int64((b >> U64(60 - 4 * cell)) & U64(15))


@_jit
def board_of(index, shape):
    """The build board of an index: locked sentinels 15, 14, ... plus the free cells' digits."""
    b = U64(0)
    for k in range(16):
        if shape[3, k] < 0:
            break
        b |= U64(15 - k) << U64(60 - 4 * shape[3, k])
    for j in range(16):
        if shape[2, j] < 0:
            break
        digit = (index // shape[1, j]) % (shape[0, j] + 1)
        b |= U64(digit) << U64(60 - 4 * shape[2, j])
    return b


@_jit
def index_of(b, shape):
    """The index of a board's free cells (each within its cap)."""
    index = 0
    for j in range(16):
        if shape[2, j] < 0:
            break
        index += nibble(b, shape[2, j]) * shape[1, j]
    return index


@_jit
def outcome(b, nb, shape):
    """What a move from b to nb is for the formation: -1 illegal, 0 it fails (a locked tile
    moved or a free tile above its cap), 1 the goal, 2 play on (spawn a tile next)."""
    if nb == b:
        return -1
    for k in range(16):
        if shape[3, k] < 0:
            break
        if nibble(nb, shape[3, k]) != nibble(b, shape[3, k]):
            return 0
    if nibble(nb, shape[2, 0]) == shape[0, 0] + 1:
        return 1
    for j in range(16):
        if shape[2, j] < 0:
            break
        if nibble(nb, shape[2, j]) > shape[0, j]:
            return 0
    return 2


@_jit
def spawn_mean(nb, shape, table):
    """(1/n) Σ_{empty free i} [0.9·P(s' + 2@i) + 0.1·P(s' + 4@i)] of the docstring for the
    board nb = s' after a move that plays on, read from the table (its entries set)."""
    base = index_of(nb, shape)
    total = 0.0
    n = 0
    for j in range(16):
        if shape[2, j] < 0:
            break
        if nibble(nb, shape[2, j]) == 0:
            n += 1
            total += 0.9 * (table[base + shape[1, j]] / SCALE)
            total += 0.1 * (table[base + 2 * shape[1, j]] / SCALE)
    return total / n


# ---------------------------------------------------------------------------------------------
# Building


@_jit
def _value(index, shape, table, move_xor, line_reward, stats):
    """P of the state with this index as the table stores it (rounded; computed and stored if
    unset, its spawns' entries first); stats[0] counts the entries computed. Every P is read
    back rounded, so a resumed build gives the same table as one that ran through.
    Self-recursive, one signature: `_build_range` is its only caller."""
    if table[index] == UNSET:
        b = board_of(index, shape)
        best = 0.0
        for d in range(4):
            nb, _ = K.move_fast(b, d, move_xor, line_reward)
            kind = outcome(b, nb, shape)
            if kind == 1:
                best = 1.0
                break
            if kind == 2:
                base = index_of(nb, shape)
                for j in range(16):  # the spawns' entries, depth first
                    if shape[2, j] < 0:
                        break
                    if nibble(nb, shape[2, j]) == 0:
                        for child in (base + shape[1, j], base + 2 * shape[1, j]):
                            _value(child, shape, table, move_xor, line_reward, stats)
                best = max(best, spawn_mean(nb, shape, table))
        table[index] = np.uint16(np.floor(best * SCALE + 0.5))
        stats[0] += 1
    return table[index] / SCALE


@_jit
def _build_range(start, stop, shape, table, move_xor, line_reward):
    """Compute every unset entry in [start, stop) (and whatever they reach); returns the number
    of entries computed."""
    stats = np.zeros(1, np.int64)
    for i in range(start, stop):
        if table[i] == UNSET:
            _value(np.int64(i), shape, table, move_xor, line_reward, stats)
    return stats[0]


@_jit
def checksum(table):
    """A 64-bit checksum of the entries (splitmix64 chained over them)."""
    h = U64(len(table))
    for i in range(len(table)):
        z = h + U64(table[i]) + K.GOLDEN
        z = (z ^ (z >> U64(30))) * K.MIX1
        z = (z ^ (z >> U64(27))) * K.MIX2
        h = z ^ (z >> U64(31))
    return h


def build(rank: int, directory: str | Path = "", progress: bool = True,
          chunk: int = 1 << 18, formation: str = FORMATION) -> Path:
    """Build the tables of this formation, ranks MIN_RANK..rank, into `directory` (default:
    the user cache directory); resumes a killed build from its `.partial` file. Returns the
    file's path."""
    from lab2048.io import atomic_path, progress_bar

    path = table_path(directory, rank, formation)
    if path.exists():
        load(rank, directory, formation)  # refuses a corrupt file
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path.parent}: cannot create directory ({e.strerror})") from None
    shapes, offsets, n = layout(rank, formation)
    partial = path.with_name(path.name + ".partial")
    if not partial.exists() or partial.stat().st_size != 2 * n:
        with atomic_path(partial) as tmp:
            np.full(n, UNSET, np.uint16).tofile(tmp)
    table = np.memmap(partial, np.uint16, "r+", shape=(n,))
    move_xor, line_reward = K.tables()
    done = int(np.count_nonzero(table != UNSET))
    with progress_bar(progress, total=n, initial=done, unit="entry", unit_scale=True,
                      desc=f"{formation} ranks {MIN_RANK}..{rank}") as bar:
        for r in range(rank, MIN_RANK - 1, -1):
            region = table[offsets[r]: offsets[r] + entries(r, formation)]
            for start in range(0, len(region), chunk):
                bar.update(int(_build_range(start, min(start + chunk, len(region)), shapes[r],
                                            region, move_xor, line_reward)))
    table.flush()
    header = HEADER.pack(MAGIC, FORMAT, rank, n, int(checksum(table)))
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(header)
            f.write(memoryview(table))
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror})") from None
    del table
    partial.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# Loading and lookup

_loaded: dict[Path, np.ndarray] = {}


def load(rank: int, directory: str | Path = "", formation: str = FORMATION) -> np.ndarray:
    """The tables of ranks MIN_RANK..rank (u16 entries in one array, see `layout`;
    memory-mapped read-only, checked once per process); a one-line UserError saying how to
    build them if the file is missing or corrupt."""
    path = table_path(directory, rank, formation)
    if path in _loaded:
        return _loaded[path]
    flag = "--rank" if formation == FORMATION else "--rank10"
    how = (f"build it with `lab2048 teacher build-tables {flag} {rank}"
           + (f" --out {directory}`" if directory else "`"))
    if not path.exists():
        raise UserError(f"{path}: no formation table of rank {rank} ({how})")
    n = layout(rank, formation)[2]
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
        magic, fmt, got_rank, got_n, check = HEADER.unpack(head)
    except (OSError, struct.error):
        raise UserError(f"{path}: not a formation table ({how})") from None
    if (magic, fmt, got_rank, got_n) != (MAGIC, FORMAT, rank, n) or \
            path.stat().st_size != HEADER.size + 2 * n:
        raise UserError(f"{path}: not a complete rank-{rank} formation table ({how})")
    table = np.memmap(path, np.uint16, "r", offset=HEADER.size, shape=(n,))
    if int(checksum(table)) != check:
        raise UserError(f"{path}: checksum mismatch, the table is corrupt ({how})")
    _loaded[path] = table
    return table


@_jit
def qualifies(x, shape):
    """Whether board x (no 2^16 tile) is in the formation, as it stands (see the docstring)."""
    for k in range(16):
        if shape[3, k] < 0:
            break
        if nibble(x, shape[3, k]) <= shape[0, 0]:
            return False
        for j in range(k):
            a, c = shape[3, j], shape[3, k]
            if abs(a // 4 - c // 4) + abs(a % 4 - c % 4) == 1 and nibble(x, a) == nibble(x, c):
                return False
    for j in range(16):
        if shape[2, j] < 0:
            break
        if nibble(x, shape[2, j]) > shape[0, j]:
            return False
    return True


@_jit
def move_probs(x, shape, table, move_xor, line_reward, q):
    """Q(x, d) of the docstring into q[d] (-1 where d is illegal) for a qualifying board x,
    read from the table; returns the best Q."""
    best = 0.0
    for d in range(4):
        nb, _ = K.move_fast(x, d, move_xor, line_reward)
        kind = outcome(x, nb, shape)
        q[d] = float(kind) if kind < 2 else spawn_mean(nb, shape, table)
        best = max(best, q[d])
    return best


@_jit
def table_rank(x, top, shape):
    """The rank whose goal merges into a locked tile: one less than the smallest locked
    neighbour of the target (shape row 4), at most top (the largest rank loaded)."""
    low = 15
    for k in range(16):
        if shape[4, k] < 0:
            break
        low = min(low, nibble(x, shape[4, k]))
    return min(top, low - 1)


@_jit
def formation_values(b, m, top, shapes, offsets, table, min_prob, move_xor, line_reward,
                     values):
    """When board (b, m) qualifies (either orientation) for the table of its rank
    (`table_rank`, at least MIN_RANK) and its best Q reaches min_prob: Q of each move into
    values (0.0 where illegal), returning True; else False (values untouched)."""
    if m != 0 or len(table) == 0:
        return False
    q = np.zeros(4)
    best = -1.0
    flip = False
    for orientation in range(2):
        x = b if orientation == 0 else K.transpose(b)
        r = table_rank(x, top, shapes[top])
        if r >= MIN_RANK and qualifies(x, shapes[r]):
            p = move_probs(x, shapes[r], table[offsets[r]:], move_xor, line_reward, q)
            if p > best:
                best = p
                flip = orientation == 1
    if best < min_prob:
        return False
    x = K.transpose(b) if flip else b
    r = table_rank(x, top, shapes[top])
    move_probs(x, shapes[r], table[offsets[r]:], move_xor, line_reward, q)
    for d in range(4):
        values[d ^ 2 if flip else d] = max(q[d], 0.0)
    return True
