"""Formation tables: exact success probabilities for the endgame formations the corner search
steers into, computed once by exhaustive expectimax and looked up during play.

Choices
- A formation (`FORMATIONS`) is a set of locked cells holding big tiles in the top-left
  corner; every other cell is free. Two formations, named by their dataset valuation types
  (for their 11 and 10 free cells), the two of the public macroxue/2048-ai player's
  "perimeter defense" play (its tuple11 and tuple10 tables, studied as facts; this is an
  independent implementation). Cells are (row, column), row 0 on top; for a table of rank r
  each free cell holds at most the exponent r − k of its letter k (never below 2, so a spawned
  4 fits):

      tuple11             tuple10             L  locked
      L L L 1             L L L 1             0..3  free, capped at r − k
      L L 0 1             L L L 2
      1 1 1 1             1 2 3 3
      2 2 2 2             3 3 3 3

  tuple11 builds the sixth tile of the corner in cell (1, 2); its rank is one less than the
  smaller of that cell's locked neighbours (0, 2) and (1, 1), at most the file's rank R. Its
  goal: an r in (1, 2) with a ready pair of r − 1 tiles beside it ((1, 3) with (0, 3) or (2, 3);
  (2, 2) with (2, 1), (2, 3) or (3, 2)), or the chain r − 1, r − 2, r − 2 down column 3, so
  that a few merges bring r + 1 next to the locked corner.
  tuple10 builds under the six locked tiles: its rank is the smallest tile of the second row;
  its goal is the chain r − 1, r − 2, r − 3 along row 2 from (2, 0) with a second r − 3
  beside its end ((2, 2) with (2, 3) or (3, 2); or (3, 1) with (3, 0) or (3, 2)), or down
  column 3 from (0, 3) with a second r − 3 beside (2, 3) ((2, 2) or (3, 3)).
  The table holds, for every filling of the free cells within their caps (0 = empty), the
  probability P that optimal play reaches the goal without ever moving a locked tile or making
  a free tile above its cap:

      P(s)    = max over moves d of Q(s, d)                    (0 if no move qualifies)
      Q(s, d) = 0                                          if move(s, d) moves a locked tile
                                                              or puts a free tile above its cap
              = 1                                          if move(s, d) is a goal
              = (1/n) Σ_{empty free i} [0.9·P(s' + 2@i) + 0.1·P(s' + 4@i)]  otherwise
                                                              (s' = move(s, d), n empties)

  The locked cells hold the distinct exponents 15, 14, 13, ... while the table is built, so
  they never merge; every move adds a spawn and merges keep the sum of the free tiles, so the
  recursion ends.
- Index of a state: the free cells' exponents as the digits of a mixed-radix number (radix
  cap + 1), in reading order, the first free cell the lowest digit. Entries are u16:
  round(P·65534); 65535 marks an entry not yet computed. The file of rank R holds the tables
  of ranks R, R − 1, ..., the formation's smallest rank one after the other (`layout`):
  2 bytes an entry (sizes in docs/teacher.md).
- The compiled functions see a rank of a formation as `shape(rank, formation)`, an int64
  array of the caps, place values, free cells, locked cells, anchor cells, scalars and goal
  patterns, so one set of functions serves every formation.
- Use during play (`formation_values`): a board qualifies for the table of its rank (see
  above; at least the formation's smallest rank), as it is or mirrored on its main diagonal
  (Up <-> Left, Down <-> Right), when its locked cells hold exponents above every cap with no
  two neighbours equal, every free cell is within its cap, and it is not already a goal. Each
  move's Q is then computed from the table; when the best Q reaches the formation's
  `MIN_PROB`, the table's move is played (branch_evs = Q), else the next formation or the
  search decides. With both orientations qualifying, the one with the higher best Q counts.
- Building (`build`): a depth-first pass over all indices, memoised in a u16 file mapped into
  memory (`.partial`): an entry is written once, when final, so a killed build resumes where
  it stopped. The ranks' tables are independent, and the file of rank R ends with the entries
  of the file of rank R − 1, so a build starts from the largest smaller file of its
  directory. The recursion reads every P back as stored (rounded to u16), so a resumed build
  gives the same table as one that ran through, and each entry is its recurrence of the
  stored entries, rounded. The finished tables are written as one file with a 64-byte header
  (magic, format, rank, entries, checksum) and renamed into place; loading checks all of
  them. The file name carries the formation and the format (`tuple10-r9-f3.bin`).
- Numba caches a caller with its callees compiled in: after editing this module, delete the
  `search.*.nbi/.nbc` cache files beside `search.py`, or the game loop keeps the old code.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from lab2048.engine import kernels as K
from lab2048.errors import UserError
from lab2048.teacher.config import TABLE_RANKS

U64 = np.uint64


@dataclass(frozen=True)
class Formation:
    """A formation: locked cells; {free cell: k}, its cap r − k; the anchor cells, whose
    smallest exponent less `anchor_less` is a board's rank; goal patterns, each {cell: k}
    asking for the exponent r − k; the probability from which its move is played. Its
    smallest and largest ranks are `config.TABLE_RANKS`."""

    locked: tuple[int, ...]
    cap_less: dict[int, int]
    anchors: tuple[int, ...]
    anchor_less: int
    goals: tuple[dict[int, int], ...]
    min_prob: float


SCALE = 65534.0
UNSET = np.uint16(65535)
FORMATIONS = {
    "tuple11": Formation(
        locked=(0, 1, 2, 4, 5),
        cap_less={3: 1, 6: 0, 7: 1, 8: 1, 9: 1, 10: 1, 11: 1, 12: 2, 13: 2, 14: 2, 15: 2},
        anchors=(2, 5), anchor_less=1,
        goals=({6: 0, 7: 1, 3: 1}, {6: 0, 7: 1, 11: 1}, {6: 0, 3: 1, 7: 2, 11: 2},
               {6: 0, 10: 1, 9: 1}, {6: 0, 10: 1, 11: 1}, {6: 0, 10: 1, 14: 1}),
        min_prob=0.9),
    # played whenever any move can reach its goal (1/SCALE: the smallest stored probability
    # above 0), as the public player plays its tuple10
    "tuple10": Formation(
        locked=(0, 1, 2, 4, 5, 6),
        cap_less={3: 1, 7: 2, 8: 1, 9: 2, 10: 3, 11: 3, 12: 3, 13: 3, 14: 3, 15: 3},
        anchors=(4, 5, 6), anchor_less=0,
        goals=({8: 1, 9: 2, 10: 3, 14: 3}, {8: 1, 9: 2, 10: 3, 11: 3},
               {8: 1, 9: 2, 13: 3, 12: 3}, {8: 1, 9: 2, 13: 3, 14: 3},
               {3: 1, 7: 2, 11: 3, 10: 3}, {3: 1, 7: 2, 11: 3, 15: 3}),
        min_prob=1 / SCALE),
}
FORMATION = "tuple11"
MIN_CAP = 2  # every free cell can take a spawned 4
MIN_PROB = {name: f.min_prob for name, f in FORMATIONS.items()}
MAGIC = b"L2048TBL"
FORMAT = 3  # 3: goal patterns
HEADER = struct.Struct("<8sIIQQ32x")  # magic, format, rank, entries, checksum: 64 bytes
GOAL_ROWS = max(len(f.goals) for f in FORMATIONS.values())
ROWS = 6 + GOAL_ROWS  # caps, places, free cells, locked cells, anchors, scalars, goals

_jit = njit(cache=True, nogil=True)


def min_rank(formation: str = FORMATION) -> int:
    return TABLE_RANKS[formation][0]


def free_cells(formation: str = FORMATION) -> np.ndarray:
    """The free cells in index order (reading order)."""
    return np.array(sorted(FORMATIONS[formation].cap_less), np.int64)


def caps(rank: int, formation: str = FORMATION) -> np.ndarray:
    """The largest exponent each free cell may hold: rank − k, at least MIN_CAP."""
    less = FORMATIONS[formation].cap_less
    return np.array([max(MIN_CAP, rank - less[c]) for c in free_cells(formation)], np.int64)


def places(rank: int, formation: str = FORMATION) -> np.ndarray:
    """The place value of each free cell's digit in an index (mixed radix cap + 1)."""
    radix = caps(rank, formation) + 1
    return np.concatenate([[1], np.cumprod(radix[:-1])]).astype(np.int64)


def entries(rank: int, formation: str = FORMATION) -> int:
    """The entries of the table of one rank."""
    return int(np.prod(caps(rank, formation) + 1))


def shape(rank: int, formation: str = FORMATION) -> np.ndarray:
    """int64[ROWS, 16], the compiled functions' view of a formation's rank: caps and place
    values of the free cells (rows 0, 1), the free cells (row 2), the locked cells (row 3),
    the anchor cells (row 4), the scalars anchor_less and min_rank (row 5), then one row per
    goal pattern, the exponent asked of each cell (0: any); rows padded with -1."""
    f = FORMATIONS[formation]
    out = np.full((ROWS, 16), -1, np.int64)
    free = free_cells(formation)
    out[0, :len(free)], out[1, :len(free)], out[2, :len(free)] = (
        caps(rank, formation), places(rank, formation), free)
    out[3, :len(f.locked)] = f.locked
    out[4, :len(f.anchors)] = f.anchors
    out[5, :2] = f.anchor_less, min_rank(formation)
    for p, goal in enumerate(f.goals):
        out[6 + p] = 0
        for cell, k in goal.items():
            assert rank - k >= 1, "a goal asks for a tile: rank below the formation's min_rank"
            out[6 + p, cell] = rank - k
    return out


def layout(rank: int, formation: str = FORMATION) -> tuple[np.ndarray, np.ndarray, int]:
    """The file of rank R holds the tables of ranks R, R − 1, ..., min_rank in that order:
    (shapes int64[R + 1, ROWS, 16] indexed by rank, offsets int64[R + 1] of each rank's first
    entry, total entries)."""
    low = min_rank(formation)
    shapes = np.full((rank + 1, ROWS, 16), -1, np.int64)
    shapes[:] = shape(low, formation)  # the cell rows and scalars, also for the unused ranks
    offsets = np.zeros(rank + 1, np.int64)
    total = 0
    for r in range(rank, low - 1, -1):
        shapes[r], offsets[r] = shape(r, formation), total
        total += entries(r, formation)
    return shapes, offsets, total


def default_dir() -> Path:
    """The user cache directory of the tables: $XDG_CACHE_HOME/lab2048/teacher-tables
    (~/.cache when XDG_CACHE_HOME is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "lab2048" / "teacher-tables"


def table_path(directory: str | Path, rank: int, formation: str = FORMATION) -> Path:
    return Path(directory or default_dir()) / f"{formation}-r{rank}-f{FORMAT}.bin"


def earlier_formats(directory: str | Path = "") -> list[Path]:
    """The table files of earlier formats in a directory: never read, kept until deleted."""
    root = Path(directory or default_dir())
    return sorted(p for name in FORMATIONS for p in root.glob(f"{name}-r*.bin")
                  if not p.name.endswith(f"-f{FORMAT}.bin"))


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
def is_goal(x, shape):
    """Whether board x matches one of the formation's goal patterns (shape rows 6..)."""
    for p in range(6, shape.shape[0]):
        if shape[p, 0] < 0:
            break
        match = True
        for c in range(16):
            if shape[p, c] > 0 and nibble(x, c) != shape[p, c]:
                match = False
                break
        if match:
            return True
    return False


@_jit
def outcome(b, nb, shape):
    """What a move from b to nb is for the formation: -1 illegal, 0 it fails (a locked tile
    moved or a free tile above its cap), 1 a goal, 2 play on (spawn a tile next)."""
    if nb == b:
        return -1
    for k in range(16):
        if shape[3, k] < 0:
            break
        if nibble(nb, shape[3, k]) != nibble(b, shape[3, k]):
            return 0
    for j in range(16):
        if shape[2, j] < 0:
            break
        if nibble(nb, shape[2, j]) > shape[0, j]:
            return 0
    return 1 if is_goal(nb, shape) else 2


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
                            if table[child] == UNSET:
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
    """Build the tables of this formation, ranks min_rank..rank, into `directory` (default:
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
        fresh = np.full(n, UNSET, np.uint16)
        for smaller in range(rank - 1, min_rank(formation) - 1, -1):  # its ranks are our tail
            if table_path(directory, smaller, formation).exists():
                tail = load(smaller, directory, formation)
                fresh[n - len(tail):] = tail
                break
        with atomic_path(partial) as tmp:
            fresh.tofile(tmp)
        del fresh
    table = np.memmap(partial, np.uint16, "r+", shape=(n,))
    move_xor, line_reward = K.tables()
    done = int(np.count_nonzero(table != UNSET))
    with progress_bar(progress, total=n, initial=done, unit="entry", unit_scale=True,
                      desc=f"{formation} ranks {min_rank(formation)}..{rank}") as bar:
        for r in range(rank, min_rank(formation) - 1, -1):
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
    """The tables of ranks min_rank..rank (u16 entries in one array, see `layout`;
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
    """Whether board x (no 2^16 tile) is in the formation, as it stands, and not yet at its
    goal (see the docstring)."""
    top = 0
    for j in range(16):
        if shape[2, j] < 0:
            break
        top = max(top, shape[0, j])
        if nibble(x, shape[2, j]) > shape[0, j]:
            return False
    for k in range(16):
        if shape[3, k] < 0:
            break
        if nibble(x, shape[3, k]) <= top:
            return False
        for j in range(k):
            a, c = shape[3, j], shape[3, k]
            if abs(a // 4 - c // 4) + abs(a % 4 - c % 4) == 1 and nibble(x, a) == nibble(x, c):
                return False
    return not is_goal(x, shape)


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
    """A board's rank: the smallest exponent of the anchor cells (shape row 4) less
    anchor_less (row 5), at most top (the largest rank loaded)."""
    low = 15
    for k in range(16):
        if shape[4, k] < 0:
            break
        low = min(low, nibble(x, shape[4, k]))
    return min(top, low - shape[5, 0])


@_jit
def formation_values(b, m, top, shapes, offsets, table, min_prob, move_xor, line_reward,
                     values):
    """When board (b, m) qualifies (either orientation) for the table of its rank
    (`table_rank`, at least the formation's min_rank) and its best Q reaches min_prob: Q of
    each move into values (0.0 where illegal), returning True; else False (values
    untouched)."""
    if m != 0 or len(table) == 0:
        return False
    q = np.zeros(4)
    best = -1.0
    flip = False
    for orientation in range(2):
        x = b if orientation == 0 else K.transpose(b)
        r = table_rank(x, top, shapes[top])
        if r >= shapes[top][5, 1] and qualifies(x, shapes[r]):
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
