"""Value sidecar: per-step rewards and discounted returns aligned 1:1 with a packed dataset.

For every step row t of a run (docs/design.md, "Value sidecar"):

    reward[t]        = merge reward of move_dir[t] on board[t]          (exact, 65536 included)
    reward_scaled[t] = reward[t] * reward_scale
    return_raw[t]    = G[t] = sum_k gamma^k reward[t+k]  (to the run's last step)
    return_scaled[t] = h(reward_scale * G[t])    (= h of the return of the scaled rewards)

Choices
- Rewards are recomputed from the packed board and move with the engine, while checking that
  every move is legal and every next board is the move plus one spawn (`check.check_rows`); a
  run that does not follow from its moves is refused, naming the shard and run.
- One pass, parallel even for one long run: the rows are cut into chunks on the global row
  grid (a chunk may span two shards, so sharding never changes the arithmetic), processed by
  threads (numba without the GIL) from the last chunk to the first. A chunk is read, checked
  and its rewards computed, and it posts a summary: the discounted return of its first run
  segment with a zero tail (`head_return`). From the summaries of the chunks after it, one
  scan (`chunk_carries`) gives the return flowing into its last row, and the backward
  recurrence G[t] = r[t] + gamma G[t+1] runs from there in float64, stored as float32. Each
  chunk is read once and written once. The result is bit for bit the same for any sharding
  (the tests re-shard a dataset to show it); another chunk size changes only float64 rounding.
  Checks that span chunks (run contiguity, step order at the edges) run at the end, before
  anything is published.
- Truncated episodes: the rows hold the board before each move, never the final board. A run
  counts as finished when the game can be over after its last move (`kernels.can_end_after`:
  a 2^17 merge, or a spawn that leaves no legal move); otherwise it was cut short (e.g. by a
  move limit) and is listed in values.json.
- values.json records the format version, gamma, reward_scale, eps, per-shard row counts and a
  128-bit content fingerprint of every steps shard and every values shard: a sum over the
  8-byte words of the shard's data of a position-dependent mix, so each chunk hashes its own
  rows while they are in memory and the sums add up (not cryptographic: it guards against
  stale or mixed files). `open_sidecar` refuses a sidecar that does not match its dataset and
  checks (run_id, step_index) row by row.
- Safe output: shards are written into a temporary directory; the old values.json is removed
  first, then the new shards are renamed into place and values.json written last. A run killed
  while computing leaves the previous sidecar intact; the millisecond swap at the end is guarded
  by the values fingerprints (a mixed set is refused, never silently used).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from lab2048.data.check import BAD_CHAIN, BAD_MASK, BAD_ORDER, ILLEGAL_MOVE, check_rows
from lab2048.data.dataset import STEP_DTYPE, Dataset, read_runs
from lab2048.engine import kernels as K
from lab2048.errors import UserError
from lab2048.io import progress_bar, read_json
from lab2048.value_transform import DEFAULT_EPSILON, h_scalar

FORMAT_VERSION = 2  # 2: fingerprints hash the shards' data (data128), not whole files
VALUES_DTYPE = np.dtype([("run_id", "<u4"), ("step_index", "<u4"), ("reward", "<f4"),
                         ("reward_scaled", "<f4"), ("return_raw", "<f4"),
                         ("return_scaled", "<f4")])
CHUNK_ROWS = 1 << 18  # 12 MB of steps: a thread's chunk stays in the cache between passes


@dataclass(frozen=True)
class SidecarConfig:
    gamma: float = 0.997
    reward_scale: float = 1.0
    epsilon: float = DEFAULT_EPSILON

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise UserError(f"gamma must be in [0, 1], got {self.gamma}")
        if not (np.isfinite(self.reward_scale) and self.reward_scale > 0):
            raise UserError(f"reward scale must be a positive number, got {self.reward_scale}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise UserError(f"epsilon must be in [0, 1], got {self.epsilon}")


# ---------------------------------------------------------------------------------------------
# The maths: one backward recurrence, restartable from a carry


@njit(cache=True, nogil=True)
def discounted_returns(rewards, run_ids, gamma, carry, out):
    """out[t] = rewards[t] + gamma * out[t+1] within a run, backwards; the last row continues
    `carry` (the return at the row after the chunk, 0.0 if the run ends here). float64."""
    n = len(rewards)
    g = carry
    for t in range(n - 1, -1, -1):
        if t < n - 1 and run_ids[t] != run_ids[t + 1]:
            g = 0.0
        g = rewards[t] + gamma * g
        out[t] = g


@njit(cache=True, nogil=True)
def _returns_columns(rewards, run_ids, gamma, carry, scale, eps, return_raw, return_scaled, g):
    """The sidecar's two return columns of a chunk; returns the count of non-finite values.

    return_raw[t] = G[t] (float64 accumulation in g, stored float32) and
    return_scaled[t] = h(scale G[t]) (the return of the scaled rewards)."""
    n = len(rewards)
    discounted_returns(rewards, run_ids, gamma, carry, g)
    bad = 0
    for t in range(n):
        raw = np.float32(g[t])
        scaled = np.float32(h_scalar(g[t] * scale, eps))
        return_raw[t] = raw
        return_scaled[t] = scaled
        bad += not (np.isfinite(raw) and np.isfinite(scaled))
    return bad


@njit(cache=True, nogil=True)
def _segment_columns(run_id, step_index, rewards, boards, masks, moves, scale, move_xor,
                     line_reward, out_run, out_step, out_scaled):
    """Copy the row keys and scale the rewards of a checked chunk, and summarise its run
    segments (maximal stretches of one run_id): (first rows, ids, reward sums, whether the game
    can be over after each segment's last move, count of non-finite scaled rewards)."""
    n = len(run_id)
    segments = 1 if n else 0
    for i in range(1, n):
        segments += run_id[i] != run_id[i - 1]
    starts = np.empty(segments, np.int64)
    ids = np.empty(segments, np.int64)
    sums = np.zeros(segments, np.int64)
    ended = np.zeros(segments, np.bool_)
    s, bad = -1, 0
    for i in range(n):
        if i == 0 or run_id[i] != run_id[i - 1]:
            s += 1
            starts[s] = i
            ids[s] = run_id[i]
        if i + 1 == n or run_id[i + 1] != run_id[i]:
            ended[s] = K.can_end_after(boards[i], np.int64(masks[i]), np.int64(moves[i]),
                                       move_xor, line_reward)
        out_run[i] = run_id[i]
        out_step[i] = step_index[i]
        sums[s] += np.int64(rewards[i])
        scaled = np.float32(rewards[i] * scale)
        out_scaled[i] = scaled
        bad += not np.isfinite(scaled)
    return starts, ids, sums, ended, bad


@njit(cache=True, nogil=True)
def head_return(rewards, run_ids, gamma):
    """(return at row 0 from this chunk's rows of its first run, length of that segment)."""
    n = 0
    while n < len(run_ids) and run_ids[n] == run_ids[0]:
        n += 1
    g = 0.0
    for t in range(n - 1, -1, -1):
        g = rewards[t] + gamma * g
    return g, n


def chunk_carries(heads: list[tuple[float, int]], lengths: list[int],
                  continues: list[bool], gamma: float) -> list[float]:
    """The return flowing into each chunk's last row from the chunks after it.

    heads[c] = (return at chunk c's first row counting only chunk c, length of its first run
    segment); continues[c]: chunk c's last run goes on in chunk c+1. Backwards over chunks:
    G(first row of c) = head_c + gamma^len_c * carry_c if chunk c is one run segment, and
    carry_c = G(first row of c+1) if continues[c] else 0.
    """
    carries = [0.0] * len(heads)
    next_first = 0.0  # G at the first row of chunk c+1
    for c in range(len(heads) - 1, -1, -1):
        carries[c] = next_first if continues[c] else 0.0
        g, seg = heads[c]
        whole = seg == lengths[c]
        next_first = g + (gamma ** seg) * carries[c] if whole else g
    return carries


# ---------------------------------------------------------------------------------------------
# Building


@dataclass
class _Chunk:
    """Global rows [start, stop), as pieces (shard, a, b) of shard rows; chunks are cut on the
    global row grid, so the arithmetic (and the result, bit for bit) ignores the sharding."""

    start: int
    stop: int
    pieces: list[tuple[int, int, int]]

    def where(self, ds: Dataset, i: int) -> str:
        """'SHARD: row R' for the chunk's i-th row."""
        for s, a, b in self.pieces:
            if i < b - a:
                return f"{ds.shard_paths[s]}: row {a + i}"
            i -= b - a
        raise IndexError(i)


class _Shards:
    """.npy shards read and written with pread/pwrite at row offsets: plain sequential I/O
    (no page faults of a memory map), memory bounded by the chunk, safe from several threads."""

    def __init__(self, dtype: np.dtype, fds: list[int], offsets: list[int]) -> None:
        self.dtype, self.fds, self.offsets = dtype, fds, offsets

    @classmethod
    def steps(cls, ds: Dataset) -> _Shards:
        return cls(ds.shards[0].dtype, [os.open(p, os.O_RDONLY) for p in ds.shard_paths],
                   [getattr(shard, "offset", 0) for shard in ds.shards])

    @classmethod
    def create(cls, paths: list[Path], lengths: list[int], dtype: np.dtype) -> _Shards:
        fds, offsets = [], []
        for path, n in zip(paths, lengths, strict=True):
            with open(path, "wb") as f:
                np.lib.format.write_array_header_1_0(f, {
                    "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                    "shape": (n,)})
                offsets.append(f.tell())
                f.truncate(f.tell() + n * dtype.itemsize)
            fds.append(os.open(path, os.O_RDWR))
        return cls(dtype, fds, offsets)

    def read(self, chunk: _Chunk, out: np.ndarray) -> np.ndarray:
        """The chunk's rows, read into out[:rows] (a reused buffer)."""
        out = out[:chunk.stop - chunk.start]
        view, size = memoryview(out.view(np.uint8)), self.dtype.itemsize
        at = 0
        for s, a, b in chunk.pieces:
            want, done = (b - a) * size, 0
            while done < want:
                got = os.preadv(self.fds[s], [view[at + done:at + want]],
                                self.offsets[s] + a * size + done)
                if got == 0:
                    raise UserError(f"shard {s}: ends before row {b} (truncated while reading)")
                done += got
            at += want
        return out

    def write(self, chunk: _Chunk, values: np.ndarray) -> None:
        view, size = memoryview(values.view(np.uint8)), self.dtype.itemsize
        at = 0
        for s, a, b in chunk.pieces:
            want, done = (b - a) * size, 0
            while done < want:
                done += os.pwritev(self.fds[s], [view[at + done:at + want]],
                                   self.offsets[s] + a * size + done)
            at += want

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def _cut(lengths: list[int], chunk_rows: int) -> list[_Chunk]:
    offsets = np.concatenate(([0], np.cumsum(lengths))).tolist()
    chunks = []
    for start in range(0, offsets[-1], chunk_rows):
        stop = min(start + chunk_rows, offsets[-1])
        pieces = [(s, max(start, lo) - lo, min(stop, hi) - lo)
                  for s, (lo, hi) in enumerate(itertools.pairwise(offsets))
                  if lo < stop and hi > start]
        chunks.append(_Chunk(start, stop, pieces))
    return chunks


@dataclass
class _ChunkInfo:
    """What a chunk's first half learns; the carries and the final link need only this."""

    head: float  # return at the first row from the chunk's rows of its first run
    head_len: int  # rows of the first run in the chunk
    rows: int
    first: np.void  # first and last step rows
    last: np.void
    seg_starts: np.ndarray  # first row (in the chunk) of each run segment, in order
    seg_ids: np.ndarray  # run id of each segment
    seg_sums: np.ndarray  # reward sum of each segment
    seg_ended: np.ndarray  # whether the game can be over after the segment's last move
    steps_hashes: list[tuple[int, _Hash]]  # (shard, hash) of the chunk's steps rows


# ---------------------------------------------------------------------------------------------
# Fingerprints: a 128-bit hash of a shard's data bytes, a sum over its 8-byte words, so that
# each chunk hashes its own rows while they are in memory and the sums add up


@njit(cache=True, nogil=True)
def _hash_words(words, first, lanes):
    """Two 64-bit lanes of sum_i f_lane(word_i, i), i = first + position: each term an odd
    multiply and a rotation, position-dependent and free of summation order (so pieces add
    up), vectorised to about a nanosecond a word."""
    h1, h2 = np.uint64(0), np.uint64(0)
    for k in range(len(words)):
        i = np.uint64(first + k)
        x = (words[k] + i * lanes[0]) * lanes[1]
        h1 += (x << np.uint64(31)) | (x >> np.uint64(33))
        y = (words[k] ^ lanes[1]) * (np.uint64(2) * i + np.uint64(1))
        h2 += (y << np.uint64(27)) | (y >> np.uint64(37))
    return h1, h2


_LANES = np.array([0x2545F4914F6CDD1D, 0x9E6C63D0676A9A99], np.uint64)
_MASK64 = (1 << 64) - 1


@dataclass
class _Hash:
    """A piece of a shard's hash: the sums over its whole words, and its bytes that share a
    word with a neighbouring piece (or end the shard), as {word index: [(byte position,
    bytes)]}."""

    h1: int = 0
    h2: int = 0
    edges: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)

    def add(self, other: _Hash) -> None:
        self.h1, self.h2 = self.h1 + other.h1, self.h2 + other.h2
        for word, parts in other.edges.items():
            self.edges.setdefault(word, []).extend(parts)

    def fingerprint(self, rows: int) -> str:
        h1, h2 = self.h1, self.h2
        for word, parts in self.edges.items():  # whole again once every piece is added
            buf = bytearray(8)
            for pos, data in parts:
                buf[pos:pos + len(data)] = data
            a, b = _hash_words(np.frombuffer(bytes(buf), "<u8"), word, _LANES)
            h1, h2 = h1 + int(a), h2 + int(b)
        return f"data128:{h1 & _MASK64:016x}{h2 & _MASK64:016x}:{rows}"


def _hash_piece(rows: np.ndarray, first_row: int) -> _Hash:
    """The _Hash of contiguous rows that sit at row `first_row` of their shard."""
    data = rows.view(np.uint8).reshape(-1)
    start = first_row * rows.dtype.itemsize  # byte offsets in the shard's data
    stop = start + len(data)
    lo, hi = -(-start // 8), stop // 8  # the whole words inside: lo .. hi - 1
    out = _Hash()
    if lo < hi:
        a, b = _hash_words(data[lo * 8 - start:hi * 8 - start].view("<u8"), lo, _LANES)
        out.h1, out.h2 = int(a), int(b)
    for a, b in ({(start, min(lo * 8, stop)), (max(hi * 8, start), stop)}):
        if a < b:
            out.edges.setdefault(a // 8, []).append((a % 8, data[a - start:b - start].tobytes()))
    return out


def _fingerprint(rows: np.ndarray) -> str:
    """The fingerprint of a whole shard's rows (a memory-mapped .npy, for instance)."""
    return _hash_piece(rows, 0).fingerprint(len(rows))


_FATAL = {BAD_MASK: "tile_65536_mask marks a cell that is not 15",
          ILLEGAL_MOVE: "its recorded move is illegal",
          BAD_CHAIN: "its next board is not the move plus one spawn"}


class _Buffers(threading.local):
    """Per-thread chunk buffers, allocated once: fresh large allocations would page-fault on
    every chunk, and page faults of one process serialise its threads."""

    def __init__(self, chunk_rows: int) -> None:
        self.rows = np.empty(chunk_rows, STEP_DTYPE)
        self.values = np.empty(chunk_rows, VALUES_DTYPE)
        self.flags = np.empty(chunk_rows, np.int64)
        self.returns = np.empty(chunk_rows, np.float64)


def _piece_hashes(chunk: _Chunk, rows: np.ndarray) -> list[tuple[int, _Hash]]:
    """(shard, hash) of each shard piece of a chunk's rows."""
    out, at = [], 0
    for s, a, b in chunk.pieces:
        out.append((s, _hash_piece(rows[at:at + b - a], a)))
        at += b - a
    return out


def _summarise(ds: Dataset, chunk: _Chunk, steps: _Shards, cfg: SidecarConfig, tables,
               buffers: _Buffers) -> _ChunkInfo:
    """Check the chunk's rows and fill the key and reward columns of buffers.values."""
    rows = steps.read(chunk, buffers.rows)
    out = buffers.values[:len(rows)]  # every column is written (the returns by _returns)
    rewards = out["reward"]
    flags, _ = check_rows(rows, *tables, full=False, rewards=rewards,
                          flags=buffers.flags[:len(rows)])
    if flags.any():
        i = int(np.flatnonzero(flags)[0])
        if flags[i] & BAD_ORDER:
            raise UserError(f"{chunk.where(ds, i)}: run {int(rows['run_id'][i])} has step "
                            f"{int(rows['step_index'][i])} (rows out of order)")
        what = next(text for bit, text in _FATAL.items() if flags[i] & bit)
        raise UserError(f"{chunk.where(ds, i)}: run {int(rows['run_id'][i])} step "
                        f"{int(rows['step_index'][i])}: {what}")
    starts, ids, sums, ended, bad = _segment_columns(
        rows["run_id"], rows["step_index"], rewards, rows["board"], rows["tile_65536_mask"],
        rows["move_dir"], cfg.reward_scale, *tables, out["run_id"], out["step_index"],
        out["reward_scaled"])
    if bad:
        raise UserError(f"{chunk.where(ds, 0)}: non-finite reward_scaled (reward scale "
                        f"{cfg.reward_scale})")
    head, head_len = head_return(rewards, out["run_id"], cfg.gamma)
    edge = rows[[0, -1]]  # a copy: the buffer is reused by the next chunk
    return _ChunkInfo(head, head_len, len(rows), edge[0], edge[1], starts, ids, sums, ended,
                      _piece_hashes(chunk, rows))


def _returns(ds: Dataset, chunk: _Chunk, carry: float, cfg: SidecarConfig,
             buffers: _Buffers) -> np.ndarray:
    """Fill the return columns of buffers.values (filled by _summarise) from the return
    flowing in from the next chunk; the chunk's finished rows."""
    out = buffers.values[:chunk.stop - chunk.start]
    if _returns_columns(out["reward"], out["run_id"], cfg.gamma, carry, cfg.reward_scale,
                        cfg.epsilon, out["return_raw"], out["return_scaled"],
                        buffers.returns[:len(out)]):
        raise UserError(f"{chunk.where(ds, 0)}: non-finite return (gamma {cfg.gamma}, "
                        f"reward scale {cfg.reward_scale})")
    return out


class _Aborted(Exception):
    """Another chunk failed: this one stops (the other's error is the one reported)."""


class _CarryBoard:
    """Chunk summaries as they arrive, and the return flowing into a chunk once every later
    chunk is summarised. Chunks are processed from the last to the first, so a chunk rarely
    waits: its successors were started before it."""

    def __init__(self, chunks: int, gamma: float) -> None:
        self.infos: list[_ChunkInfo | BaseException | None] = [None] * chunks
        self.gamma = gamma
        self.cond = threading.Condition()

    def post(self, c: int, info: _ChunkInfo | BaseException) -> None:
        with self.cond:
            self.infos[c] = info
            self.cond.notify_all()

    def carry(self, c: int) -> float:
        with self.cond:
            self.cond.wait_for(lambda: all(i is not None for i in self.infos[c + 1:]))
            later = self.infos[c:]
        if any(isinstance(i, BaseException) for i in later):
            raise _Aborted
        continues = [int(a.last["run_id"]) == int(b.first["run_id"])
                     for a, b in itertools.pairwise(later)] + [False]
        return chunk_carries([(i.head, i.head_len) for i in later], [i.rows for i in later],
                             continues, self.gamma)[0]


@dataclass
class _Runs:
    """Every run of the dataset in row order: id, reward sum, whether its game can be over."""

    ids: np.ndarray
    sums: np.ndarray
    ended: np.ndarray


def _link(ds: Dataset, chunks: list[_Chunk], infos: list[_ChunkInfo], tables) -> _Runs:
    """Across chunk edges, in order: runs continue correctly and are contiguous; the runs."""
    if not chunks:
        return _Runs(*(np.zeros(0, t) for t in (np.int64, np.int64, np.bool_)))
    new = []  # per chunk: whether each segment starts a run (else it continues the last one)
    for c, (chunk, info) in enumerate(zip(chunks, infos, strict=True)):
        where = chunk.where(ds, 0)
        first_id = int(info.first["run_id"])
        prev = infos[c - 1].last if c else None
        starts = np.ones(len(info.seg_ids), np.bool_)
        if prev is not None and int(prev["run_id"]) == first_id:
            flags, _ = check_rows(np.stack([prev, info.first]), *tables)
            if info.first["step_index"] != prev["step_index"] + 1 or flags[0] & BAD_CHAIN:
                raise UserError(f"{where}: run {first_id} does not continue correctly (step "
                                f"{int(info.first['step_index'])} after "
                                f"{int(prev['step_index'])})")
            starts[0] = False
        elif info.first["step_index"] != 0:
            raise UserError(f"{where}: run {first_id} starts at step "
                            f"{int(info.first['step_index'])}")
        new.append(starts)
    starts = np.concatenate(new)
    ids = np.concatenate([i.seg_ids for i in infos])
    first = np.flatnonzero(starts)
    runs = _Runs(ids[first], np.add.reduceat(np.concatenate([i.seg_sums for i in infos]),
                                             first),
                 np.concatenate([i.seg_ended for i in infos])[np.append(first[1:], len(ids)) - 1])
    order = np.argsort(runs.ids, kind="stable")
    twice = np.flatnonzero(runs.ids[order][1:] == runs.ids[order][:-1])
    if len(twice):  # the earliest place where a run shows up a second time
        segment = first[order[twice + 1].min()]
        ends = np.cumsum([len(i.seg_ids) for i in infos])
        c = int(np.searchsorted(ends, segment, "right"))
        row = int(infos[c].seg_starts[segment - (ends[c - 1] if c else 0)])
        raise UserError(f"{chunks[c].where(ds, row)}: the rows of run {int(ids[segment])} "
                        "are not contiguous")
    return runs


def build_sidecar(dataset: Path, cfg: SidecarConfig, output: Path | None = None,
                  workers: int = 0, overwrite: bool = False, chunk_rows: int = CHUNK_ROWS,
                  progress: bool = True) -> dict:
    """Compute and write the sidecar of `dataset` into `output` (default: the dataset itself).

    Returns the summary that values.json also holds."""
    ds = Dataset(dataset)
    output = Path(output) if output else ds.root
    target = output / "values.json"
    if target.exists() and not overwrite:
        raise UserError(f"{target}: a sidecar already exists (pass --overwrite to replace it)")
    workers = workers or os.cpu_count() or 1
    chunks = _cut([len(shard) for shard in ds.shards], chunk_rows)
    tables = K.tables()
    started = time.perf_counter()
    opened: list[_Shards] = []
    try:
        output.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".values.", suffix=".tmp", dir=output))
    except OSError as e:
        raise UserError(f"{output}: cannot write the sidecar here ({e.strerror})") from None
    try:
        paths = [tmp / f"values-{i:05d}.npy" for i in range(len(ds.shards))]
        steps = _Shards.steps(ds)
        values = _Shards.create(paths, [len(shard) for shard in ds.shards], VALUES_DTYPE)
        opened = [steps, values]
        buffers = _Buffers(min(chunk_rows, max(1, ds.num_rows)))
        board = _CarryBoard(len(chunks), cfg.gamma)

        def process(c: int) -> tuple[_ChunkInfo, list[tuple[int, _Hash]]]:
            """Check and summarise chunk c, then finish and write it; (its summary, the
            (shard, hash) of its values rows)."""
            try:
                info = _summarise(ds, chunks[c], steps, cfg, tables, buffers)
            except BaseException as e:
                board.post(c, e)
                raise
            board.post(c, info)
            rows = _returns(ds, chunks[c], board.carry(c), cfg, buffers)
            values.write(chunks[c], rows)
            bar.update(info.rows)
            return info, _piece_hashes(chunks[c], rows)

        with progress_bar(progress, total=ds.num_rows, unit="row", unit_scale=True,
                          desc="value-sidecar") as bar, \
                ThreadPoolExecutor(1) as side, ThreadPoolExecutor(workers) as pool:
            runs_table = side.submit(read_runs, ds.root / "metadata.db", ("id", "max_score"))
            futures = [pool.submit(process, c) for c in reversed(range(len(chunks)))]
            wait(futures)
            errors = [f.exception() for f in futures if f.exception() is not None]
            real = [e for e in errors if not isinstance(e, _Aborted)]
            if errors:
                raise real[0] if real else errors[0]
        done = [f.result() for f in reversed(futures)]
        infos = [info for info, _ in done]
        runs = _link(ds, chunks, infos, tables)
        for files in opened:
            files.close()
        opened = []
        table = runs_table.result()
        known = np.isin(runs.ids, table["id"])
        if not known.all():
            raise UserError(f"{ds.root / 'metadata.db'}: runs "
                            f"{sorted(runs.ids[~known].tolist())[:5]} have rows but no entry "
                            "in the runs table")
        max_score = table["max_score"][np.searchsorted(table["id"], runs.ids)]
        prints = {}
        for kind, hashes in (("steps", [i.steps_hashes for i in infos]),
                             ("values", [h for _, h in done])):
            sums = [_Hash() for _ in ds.shards]
            for s, piece in itertools.chain.from_iterable(hashes):
                sums[s].add(piece)
            prints[kind] = [h.fingerprint(len(shard))
                            for h, shard in zip(sums, ds.shards, strict=True)]
        meta = {
            "format_version": FORMAT_VERSION, "gamma": cfg.gamma,
            "reward_scale": cfg.reward_scale, "epsilon": cfg.epsilon,
            "target": "discounted_return", "transform": "muzero_h",
            "shards": [{"steps": p.name, "values": f"values-{i:05d}.npy", "rows": len(s),
                        "steps_fingerprint": fs, "values_fingerprint": fv}
                       for i, (p, s, fs, fv) in enumerate(zip(
                           ds.shard_paths, ds.shards, prints["steps"], prints["values"],
                           strict=True))],
            "rows": ds.num_rows, "runs": len(runs.ids),
            "score_mismatches": sorted(runs.ids[runs.sums != max_score].tolist()),
            "truncated_runs": sorted(runs.ids[~runs.ended].tolist()),
            "seconds": round(time.perf_counter() - started, 3),
        }
        _publish(tmp, output, meta)
    finally:
        for files in opened:
            files.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _publish(tmp: Path, output: Path, meta: dict) -> None:
    """Swap the new shards in: values.json goes first, so an interrupted swap leaves no
    values.json (refused), never a mixed sidecar."""
    target = output / "values.json"
    (tmp / "values.json").write_text(json.dumps(meta, indent=2) + "\n")
    target.unlink(missing_ok=True)
    for old in output.glob("values-*.npy"):
        if not (tmp / old.name).exists():
            old.unlink()
    for new in sorted(tmp.glob("values-*.npy")):
        os.replace(new, output / new.name)
    os.replace(tmp / "values.json", target)


# ---------------------------------------------------------------------------------------------
# Reading


def _read_meta(path: Path) -> dict:
    meta = read_json(path, "no such file (build it with `lab2048 value-sidecar`)")
    keys = {"format_version", "gamma", "reward_scale", "epsilon", "shards"}
    if not isinstance(meta, dict) or not keys <= set(meta):
        raise UserError(f"{path}: not a values.json (needs {', '.join(sorted(keys))})")
    if meta["format_version"] != FORMAT_VERSION:
        raise UserError(f"{path}: format version {meta['format_version']!r}, this lab2048 "
                        f"reads {FORMAT_VERSION} (rebuild it with `lab2048 value-sidecar "
                        "--overwrite`)")
    return meta


def open_sidecar(dataset: Path | Dataset, sidecar: Path | None = None,
                 fingerprints: bool = True) -> tuple[dict, list[np.ndarray]]:
    """(values.json, memory-mapped values shards) of a dataset's sidecar, verified.

    Refuses (UserError) a sidecar whose shards, row counts or fingerprints do not match the
    dataset, and checks (run_id, step_index) against the steps shards row by row.
    `fingerprints=False` skips hashing the files (a full read) but not the row-by-row check."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    root = Path(sidecar) if sidecar else ds.root
    path = root / "values.json"
    meta = _read_meta(path)
    names = [p.name for p in ds.shard_paths]
    if [s.get("steps") for s in meta["shards"]] != names:
        raise UserError(f"{path}: made for shards {[s.get('steps') for s in meta['shards']]}, "
                        f"the dataset has {names}")
    values = []
    for entry, steps_path, steps in zip(meta["shards"], ds.shard_paths, ds.shards, strict=True):
        vpath = root / entry["values"]
        if entry["rows"] != len(steps):
            raise UserError(f"{path}: {steps_path.name} has {len(steps)} rows, the sidecar was "
                            f"made for {entry['rows']} (stale sidecar)")
        if fingerprints and _fingerprint(steps) != entry["steps_fingerprint"]:
            raise UserError(f"{steps_path}: changed since the sidecar was made (fingerprint "
                            "differs); rebuild it with `lab2048 value-sidecar --overwrite`")
        try:
            arr = np.load(vpath, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise UserError(f"{vpath}: no such file") from None
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{vpath}: not a readable .npy shard ({e})") from None
        if arr.dtype != VALUES_DTYPE or arr.shape != (len(steps),):
            raise UserError(f"{vpath}: expected {len(steps)} rows of {VALUES_DTYPE}, got "
                            f"{arr.shape} of {arr.dtype}")
        if fingerprints and _fingerprint(arr) != entry["values_fingerprint"]:
            raise UserError(f"{vpath}: does not match values.json (fingerprint differs)")
        for a in range(0, len(steps), CHUNK_ROWS):
            s, v = steps[a:a + CHUNK_ROWS], arr[a:a + CHUNK_ROWS]
            bad = (s["run_id"] != v["run_id"]) | (s["step_index"] != v["step_index"])
            if bad.any():
                i = a + int(np.flatnonzero(bad)[0])
                raise UserError(f"{vpath}: row {i} is run {int(arr['run_id'][i])} step "
                                f"{int(arr['step_index'][i])}, the dataset has run "
                                f"{int(steps['run_id'][i])} step {int(steps['step_index'][i])}")
        values.append(arr)
    return meta, values


def format_summary(meta: dict, output: Path) -> str:
    truncated, mismatched = meta["truncated_runs"], meta["score_mismatches"]
    lines = [f"{output}: value sidecar for {meta['rows']:,} steps of {meta['runs']:,} runs in "
             f"{len(meta['shards'])} shard(s), gamma {meta['gamma']}, reward scale "
             f"{meta['reward_scale']}, eps {meta['epsilon']} ({meta['seconds']:.1f} s)",
             f"runs whose rewards sum to runs.max_score: {meta['runs'] - len(mismatched):,} of "
             f"{meta['runs']:,}" + (f" (differ: {mismatched[:10]})" if mismatched else ""),
             f"truncated runs (last move cannot end the game): {len(truncated):,}"
             + (f" {truncated[:10]}" if truncated else "")]
    return "\n".join(lines)
