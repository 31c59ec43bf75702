"""Formation tables: exact success probabilities for the endgame formation the corner search
steers into, computed once by exhaustive expectimax and looked up during play.

Choices
- The formation (valuation type "tuple11", for its 11 free cells): five big tiles locked in
  the top-left corner, the other cells small. Cells are (row, column), row 0 on top:

      L L L f        L  locked: (0,0) (0,1) (0,2) (1,0) (1,1)
      L L T f        T  the target cell (1,2); f the other free cells
      f f f f
      f f f f

  Each free cell has a cap, the largest exponent it may hold: for a table of rank r, r on
  the target and its two neighbours, one less per further step from the target (the cells
  two steps away r − 1, three steps r − 2, (3,0) r − 3), never below 2 (a spawned 4 fits):

      .   .   .   r−1        rank 6: target, (1,3), (2,2) up to 64; (0,3), (2,1), (2,3),
      .   .   r   r               (3,2) up to 32; (2,0), (3,1), (3,3) up to 16; (3,0) up to 8
      r−2 r−1 r   r−1
      r−3 r−2 r−1 r−2

  (an r in the target is made of two r − 1 next to each other, and so on outward). The table
  holds, for every filling of the free cells within their caps (0 = empty), the probability P
  that optimal play reaches the goal, a tile of exponent r + 1 in the target cell, without
  ever moving a locked tile or making a free tile above its cap:

      P(s)    = max over moves d of Q(s, d)                    (0 if no move qualifies)
      Q(s, d) = 1                                          if move(s, d) has r + 1 in T
              = 0                                          if it moves a locked tile or puts
                                                              a free tile above its cap
              = (1/n) Σ_{empty free i} [0.9·P(s' + 2@i) + 0.1·P(s' + 4@i)]  otherwise
                                                              (s' = move(s, d), n empties)

  The locked cells hold the distinct exponents 15, 14, 13, 12, 11 while the table is built,
  so they never merge; every move adds a spawn and merges keep the sum of the free tiles, so
  the recursion ends. This is the method the public macroxue/2048-ai player describes for its
  lookup tables (its logs call such moves `tuple11`); the formation, goal and encoding here are
  this project's own.
- Index of a state: the free cells' exponents as the digits of a mixed-radix number (radix
  cap + 1), the target cell the lowest digit, then (0,3), (1,3), row 2, row 3, left to right.
  Entries are u16: round(P·65534); 65535 marks an entry not yet computed. The file of rank R
  holds the tables of ranks R, R − 1, ..., 3 one after the other (`layout`): 2 bytes an
  entry, R = 3: 0.42 M entries (0.8 MiB), 4: 3.0 M (5.7 MiB), 5: 28.9 M (55 MiB), 6: 251 M
  (479 MiB), 7: 1.58 G (3.0 GiB).
- Use during play (`formation_values`): the rank used for a board is one less than the
  smaller of the target's locked neighbours (1,1) and (0,2), at most R (`table_rank`), so
  the goal tile merges into the locked corner. The board qualifies, as it is or mirrored on
  its main diagonal (Up <-> Left, Down <-> Right), when that rank is at least 3, its locked
  cells hold exponents above the rank with no two neighbours equal, and every free cell, the
  target included, is within its cap (the free tiles then never merge with a locked one, as
  in the table). Each move's Q is then computed from the table; when the best Q reaches
  `MIN_PROB`, the table's move is played (valuation type "tuple11", branch_evs = Q), else
  the search decides. With both orientations qualifying, the one with the higher best Q
  counts.
- Building (`build`): a depth-first pass over all indices, memoised in a u16 file mapped into
  memory (`.partial`): an entry is written once, when final, so a killed build resumes where
  it stopped. The recursion reads every P back as stored (rounded to u16), so a resumed build
  gives the same table as one that ran through, and each entry is its recurrence of the
  stored entries, rounded. The finished tables are written as one file with a 64-byte header (magic,
  format, rank, entries, checksum) and renamed into place; loading checks all of them.
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
FORMATION = "tuple11"
LOCKED_CELLS = np.array([0, 1, 2, 4, 5], np.int64)
LOCKED_EXPONENTS = np.array([15, 14, 13, 12, 11], np.int64)
FREE_CELLS = np.array([6, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15], np.int64)  # target first
DISTANCE = np.array([0, 2, 1, 3, 2, 1, 2, 4, 3, 2, 3], np.int64)  # steps to the target
MIN_CAP = 2  # every free cell can take a spawned 4
MIN_RANK = 3
TARGET = 6
NEIGHBOURS = np.array([[0, 1], [1, 2], [0, 4], [1, 5], [4, 5]], np.int64)  # adjacent locked
SCALE = 65534.0
UNSET = np.uint16(65535)
MIN_PROB = 0.9  # a table move is played when its success probability reaches this
MAGIC = b"L2048TBL"
FORMAT = 2  # 2: per-cell caps
HEADER = struct.Struct("<8sIIQQ32x")  # magic, format, rank, entries, checksum: 64 bytes

_jit = njit(cache=True, nogil=True)


def caps(rank: int) -> np.ndarray:
    """The largest exponent each free cell may hold: rank for the target and its neighbours,
    one less per further step, at least MIN_CAP."""
    return np.maximum(MIN_CAP, rank - np.maximum(0, DISTANCE - 1)).astype(np.int64)


def places(rank: int) -> np.ndarray:
    """The place value of each free cell's digit in an index (mixed radix cap + 1)."""
    radix = caps(rank) + 1
    return np.concatenate([[1], np.cumprod(radix[:-1])]).astype(np.int64)


def entries(rank: int) -> int:
    """The entries of the table of one rank."""
    return int(np.prod(caps(rank) + 1))


def shape(rank: int) -> np.ndarray:
    """int64[2, 11]: caps and place values, the compiled functions' view of a rank."""
    return np.stack([caps(rank), places(rank)])


def layout(rank: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The file of rank R holds the tables of ranks R, R − 1, ..., MIN_RANK in that order:
    (shapes int64[R + 1, 2, 11] indexed by rank, offsets int64[R + 1] of each rank's first
    entry, total entries)."""
    shapes = np.zeros((rank + 1, 2, len(FREE_CELLS)), np.int64)
    offsets = np.zeros(rank + 1, np.int64)
    total = 0
    for r in range(rank, MIN_RANK - 1, -1):
        shapes[r], offsets[r] = shape(r), total
        total += entries(r)
    return shapes, offsets, total


def default_dir() -> Path:
    """The user cache directory of the tables: $XDG_CACHE_HOME/lab2048/teacher-tables
    (~/.cache when XDG_CACHE_HOME is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "lab2048" / "teacher-tables"


def table_path(directory: str | Path, rank: int) -> Path:
    return Path(directory or default_dir()) / f"{FORMATION}-r{rank}.bin"


# ---------------------------------------------------------------------------------------------
# Boards and indices


@_jit
def nibble(b, cell):
    return np.int64((b >> U64(60 - 4 * cell)) & U64(15))


@_jit
def board_of(index, shape):
    """The build board of an index: locked sentinels plus the free cells' digits."""
    b = U64(0)
    for j in range(len(LOCKED_CELLS)):
        b |= U64(LOCKED_EXPONENTS[j]) << U64(60 - 4 * LOCKED_CELLS[j])
    for j in range(len(FREE_CELLS)):
        digit = (index // shape[1, j]) % (shape[0, j] + 1)
        b |= U64(digit) << U64(60 - 4 * FREE_CELLS[j])
    return b


@_jit
def index_of(b, shape):
    """The index of a board's free cells (each within its cap)."""
    index = 0
    for j in range(len(FREE_CELLS)):
        index += nibble(b, FREE_CELLS[j]) * shape[1, j]
    return index


@_jit
def _locked_bits():
    mask = U64(0)
    for j in range(len(LOCKED_CELLS)):
        mask |= U64(15) << U64(60 - 4 * LOCKED_CELLS[j])
    return mask


LOCKED_MASK = _locked_bits()


@_jit
def outcome(b, nb, shape):
    """What a move from b to nb is for the formation: -1 illegal, 0 it fails (a locked tile
    moved or a free tile above its cap), 1 the goal, 2 play on (spawn a tile next)."""
    if nb == b:
        return -1
    if (nb & LOCKED_MASK) != (b & LOCKED_MASK):
        return 0
    if nibble(nb, TARGET) == shape[0, 0] + 1:
        return 1
    for j in range(len(FREE_CELLS)):
        if nibble(nb, FREE_CELLS[j]) > shape[0, j]:
            return 0
    return 2


# ---------------------------------------------------------------------------------------------
# Building


@_jit
def spawn_mean(nb, shape, table):
    """(1/n) Σ_{empty free i} [0.9·P(s' + 2@i) + 0.1·P(s' + 4@i)] of the docstring for the
    board nb = s' after a move that plays on, read from the table (its entries set)."""
    base = index_of(nb, shape)
    total = 0.0
    n = 0
    for j in range(len(FREE_CELLS)):
        if nibble(nb, FREE_CELLS[j]) == 0:
            n += 1
            total += 0.9 * (table[base + shape[1, j]] / SCALE)
            total += 0.1 * (table[base + 2 * shape[1, j]] / SCALE)
    return total / n


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
                for j in range(len(FREE_CELLS)):  # the spawns' entries, depth first
                    if nibble(nb, FREE_CELLS[j]) == 0:
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
          chunk: int = 1 << 18) -> Path:
    """Build the table of this rank into `directory` (default: the user cache directory);
    resumes a killed build from its `.partial` file. Returns the table's path."""
    from lab2048.io import atomic_path, progress_bar

    path = table_path(directory, rank)
    if path.exists():
        load(rank, directory)  # refuses a corrupt file
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{path.parent}: cannot create directory ({e.strerror})") from None
    shapes, offsets, n = layout(rank)
    partial = path.with_name(path.name + ".partial")
    if not partial.exists() or partial.stat().st_size != 2 * n:
        with atomic_path(partial) as tmp:
            np.full(n, UNSET, np.uint16).tofile(tmp)
    table = np.memmap(partial, np.uint16, "r+", shape=(n,))
    move_xor, line_reward = K.tables()
    done = int(np.count_nonzero(table != UNSET))
    with progress_bar(progress, total=n, initial=done, unit="entry", unit_scale=True,
                      desc=f"{FORMATION} ranks {MIN_RANK}..{rank}") as bar:
        for r in range(rank, MIN_RANK - 1, -1):
            region = table[offsets[r]: offsets[r] + entries(r)]
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


def load(rank: int, directory: str | Path = "") -> np.ndarray:
    """The tables of ranks MIN_RANK..rank (u16 entries in one array, see `layout`;
    memory-mapped read-only, checked once per process); a one-line UserError saying how to
    build them if the file is missing or corrupt."""
    path = table_path(directory, rank)
    if path in _loaded:
        return _loaded[path]
    how = (f"build it with `lab2048 teacher build-tables --rank {rank}"
           + (f" --out {directory}`" if directory else "`"))
    if not path.exists():
        raise UserError(f"{path}: no formation table of rank {rank} ({how})")
    n = layout(rank)[2]
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
    for j in range(len(LOCKED_CELLS)):
        if nibble(x, LOCKED_CELLS[j]) <= shape[0, 0]:
            return False
    for k in range(len(NEIGHBOURS)):
        if nibble(x, NEIGHBOURS[k, 0]) == nibble(x, NEIGHBOURS[k, 1]):
            return False
    for j in range(len(FREE_CELLS)):  # noqa: SIM110 (numba compiles no all() of a generator)
        if nibble(x, FREE_CELLS[j]) > shape[0, j]:
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
def table_rank(x, top):
    """The rank whose goal merges into a locked tile: one less than the smaller of the locked
    target's neighbours (1,1) and (0,2), at most top (the largest rank loaded)."""
    return min(top, min(nibble(x, 5), nibble(x, 2)) - 1)


@_jit
def formation_values(b, m, top, shapes, offsets, table, move_xor, line_reward, values):
    """When board (b, m) qualifies (either orientation) for the table of its rank
    (`table_rank`, at least MIN_RANK) and its best Q reaches MIN_PROB: Q of each move into
    values (0.0 where illegal), returning True; else False (values untouched)."""
    if m != 0 or len(table) == 0:
        return False
    q = np.zeros(4)
    best = -1.0
    flip = False
    for orientation in range(2):
        x = b if orientation == 0 else K.transpose(b)
        r = table_rank(x, top)
        if r >= MIN_RANK and qualifies(x, shapes[r]):
            p = move_probs(x, shapes[r], table[offsets[r]:], move_xor, line_reward, q)
            if p > best:
                best = p
                flip = orientation == 1
    if best < MIN_PROB:
        return False
    x = K.transpose(b) if flip else b
    r = table_rank(x, top)
    move_probs(x, shapes[r], table[offsets[r]:], move_xor, line_reward, q)
    for d in range(4):
        values[d ^ 2 if flip else d] = max(q[d], 0.0)
    return True
