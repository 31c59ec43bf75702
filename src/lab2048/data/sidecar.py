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
  128-bit content fingerprint of every steps shard and every values shard (mixed 64-bit words,
  hashed at memory speed; not cryptographic, it guards against stale or mixed files).
  `open_sidecar` refuses a sidecar that does not match its dataset and checks (run_id,
  step_index) row by row.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from lab2048.data.check import BAD_CHAIN, BAD_MASK, BAD_ORDER, ILLEGAL_MOVE, check_rows
from lab2048.data.dataset import STEP_DTYPE, Dataset, read_runs
from lab2048.engine import kernels as K
from lab2048.errors import UserError
from lab2048.io import progress_bar, read_json
from lab2048.value_transform import DEFAULT_EPSILON, h_scalar

FORMAT_VERSION = 1
VALUES_DTYPE = np.dtype([("run_id", "<u4"), ("step_index", "<u4"), ("reward", "<f4"),
                         ("reward_scaled", "<f4"), ("return_raw", "<f4"),
                         ("return_scaled", "<f4")])
CHUNK_ROWS = 1 << 20


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
def _reward_columns(run_id, step_index, rewards, scale, out_run, out_step, out_scaled):
    """Copy the row keys and scale the rewards; returns the count of non-finite scaled ones."""
    bad = 0
    for i in range(len(run_id)):
        out_run[i] = run_id[i]
        out_step[i] = step_index[i]
        scaled = np.float32(rewards[i] * scale)
        out_scaled[i] = scaled
        bad += not np.isfinite(scaled)
    return bad


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


@njit(cache=True, nogil=True)
def _ends_games(boards, masks, moves, rows, move_xor, line_reward, out):
    for j in range(len(rows)):
        i = rows[j]
        out[j] = K.can_end_after(boards[i], np.int64(masks[i]), np.int64(moves[i]), move_xor,
                                 line_reward)


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
    """What pass 1 learns about a chunk; the sequential link step needs only this."""

    head: float  # return at the first row from the chunk's rows of its first run
    head_len: int  # rows of the first run in the chunk
    rows: int
    first: np.void  # first and last step rows
    last: np.void
    seg_ids: np.ndarray  # run id of each run segment in the chunk, in order
    seg_sums: np.ndarray  # reward sum of each segment
    seg_ended: np.ndarray  # whether the game can be over after the segment's last move


@njit(cache=True, nogil=True)
def _hash_words(words, lanes):
    """Two 64-bit lanes of sum_i f_lane(word_i, i), each term an odd multiply and a rotation:
    position-dependent, order of summation free, about a nanosecond a word."""
    h1, h2 = np.uint64(0), np.uint64(0)
    for i in range(len(words)):
        x = (words[i] + np.uint64(i) * lanes[0]) * lanes[1]
        h1 += (x << np.uint64(31)) | (x >> np.uint64(33))
        y = (words[i] ^ lanes[1]) * (np.uint64(2 * i + 1))
        h2 += (y << np.uint64(27)) | (y >> np.uint64(37))
    return h1, h2


_LANES = np.array([0x2545F4914F6CDD1D, 0x9E6C63D0676A9A99], np.uint64)


def _fingerprint(path: Path) -> str:
    """A 128-bit content hash of a file (mixed 64-bit words; the size and tail bytes too)."""
    data = np.memmap(path, np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
    whole = len(data) // 8 * 8
    h1, h2 = _hash_words(data[:whole].view("<u8"), _LANES)
    tail = int.from_bytes(data[whole:].tobytes() + bytes(8 - len(data) + whole), "little")
    return f"mix128:{int(h1):016x}{int(h2):016x}:{len(data):x}:{tail:x}"


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
    if _reward_columns(rows["run_id"], rows["step_index"], rewards, cfg.reward_scale,
                       out["run_id"], out["step_index"], out["reward_scaled"]):
        raise UserError(f"{chunk.where(ds, 0)}: non-finite reward_scaled (reward scale "
                        f"{cfg.reward_scale})")
    ids = out["run_id"]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    ends = np.append(starts[1:], len(rows)) - 1
    ended = np.zeros(len(ends), np.bool_)
    _ends_games(rows["board"], rows["tile_65536_mask"], rows["move_dir"], ends, *tables, ended)
    head, head_len = head_return(rewards, ids, cfg.gamma)
    edge = rows[[0, -1]]  # a copy: the buffer is reused by the next chunk
    return _ChunkInfo(head, head_len, len(rows), edge[0], edge[1], ids[starts].astype(np.int64),
                      np.add.reduceat(rewards, starts, dtype=np.int64), ended)


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


def _link(ds: Dataset, chunks: list[_Chunk], infos: list[_ChunkInfo], tables) -> tuple[
        list[bool], dict[int, int], dict[int, bool]]:
    """Across chunk edges, in order: runs continue correctly and are contiguous.

    Returns (continues[c], reward sum per run, whether each run's game can be over)."""
    continues = [False] * len(chunks)
    sums: dict[int, int] = {}
    ended: dict[int, bool] = {}
    for c, (chunk, info) in enumerate(zip(chunks, infos, strict=True)):
        where = chunk.where(ds, 0)
        first_id = int(info.first["run_id"])
        prev = infos[c - 1].last if c else None
        if prev is not None and int(prev["run_id"]) == first_id:
            flags, _ = check_rows(np.stack([prev, info.first]), *tables)
            if info.first["step_index"] != prev["step_index"] + 1 or flags[0] & BAD_CHAIN:
                raise UserError(f"{where}: run {first_id} does not continue correctly (step "
                                f"{int(info.first['step_index'])} after "
                                f"{int(prev['step_index'])})")
            continues[c - 1] = True
            sums[first_id] += int(info.seg_sums[0])
            ended[first_id] = bool(info.seg_ended[0])
            new = slice(1, None)
        elif info.first["step_index"] != 0:
            raise UserError(f"{where}: run {first_id} starts at step "
                            f"{int(info.first['step_index'])}")
        else:
            new = slice(0, None)
        for rid, total, over in zip(info.seg_ids[new].tolist(), info.seg_sums[new].tolist(),
                                    info.seg_ended[new].tolist(), strict=True):
            if rid in sums:
                raise UserError(f"{where}: the rows of run {rid} are not contiguous")
            sums[rid], ended[rid] = total, over
    return continues, sums, ended


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
        with progress_bar(progress, total=ds.num_rows, unit="row", unit_scale=True,
                          desc="value-sidecar") as bar, \
                ThreadPoolExecutor(workers) as pool:

            board = _CarryBoard(len(chunks), cfg.gamma)

            def process(c: int) -> _ChunkInfo:
                try:
                    info = _summarise(ds, chunks[c], steps, cfg, tables, buffers)
                except BaseException as e:
                    board.post(c, e)
                    raise
                board.post(c, info)
                values.write(chunks[c], _returns(ds, chunks[c], board.carry(c), cfg, buffers))
                bar.update(info.rows)
                return info

            runs_table = pool.submit(read_runs, ds.root / "metadata.db", ("id", "max_score"))
            futures = [pool.submit(process, c) for c in reversed(range(len(chunks)))]
            wait(futures)
            errors = [f.exception() for f in futures if f.exception() is not None]
            real = [e for e in errors if not isinstance(e, _Aborted)]
            if errors:
                raise real[0] if real else errors[0]
            infos = [f.result() for f in reversed(futures)]
            _, sums, ended = _link(ds, chunks, infos, tables)
            for files in opened:
                files.close()
            opened = []
            steps_prints = list(pool.map(_fingerprint, ds.shard_paths))
            value_prints = list(pool.map(_fingerprint, paths))
        table = runs_table.result()
        runs = dict(zip(table["id"].tolist(), table["max_score"].tolist(), strict=True))
        orphans = sorted(set(sums) - set(runs))
        if orphans:
            raise UserError(f"{ds.root / 'metadata.db'}: runs {orphans[:5]} have rows but no "
                            "entry in the runs table")
        meta = {
            "format_version": FORMAT_VERSION, "gamma": cfg.gamma,
            "reward_scale": cfg.reward_scale, "epsilon": cfg.epsilon,
            "target": "discounted_return", "transform": "muzero_h",
            "shards": [{"steps": p.name, "values": f"values-{i:05d}.npy", "rows": len(s),
                        "steps_fingerprint": fs, "values_fingerprint": fv}
                       for i, (p, s, fs, fv) in enumerate(zip(
                           ds.shard_paths, ds.shards, steps_prints, value_prints, strict=True))],
            "rows": ds.num_rows, "runs": len(sums),
            "score_mismatches": sorted(r for r, total in sums.items() if runs[r] != total),
            "truncated_runs": sorted(r for r, over in ended.items() if not over),
            "seconds": round(time.perf_counter() - started, 3),
        }
        _publish(tmp, output, meta)
    finally:
        for files in opened:
            files.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _publish(tmp: Path, output: Path, meta: dict) -> None:
    target = output / "values.json"
    (tmp / "values.json").write_text(json.dumps(meta, indent=2) + "\n")
    target.unlink(missing_ok=True)  # from here on the old sidecar is invalid, never mixed
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
                        f"reads {FORMAT_VERSION}")
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
        if fingerprints and _fingerprint(steps_path) != entry["steps_fingerprint"]:
            raise UserError(f"{steps_path}: changed since the sidecar was made (fingerprint "
                            "differs); rebuild it with `lab2048 value-sidecar --overwrite`")
        try:
            if fingerprints and _fingerprint(vpath) != entry["values_fingerprint"]:
                raise UserError(f"{vpath}: does not match values.json (fingerprint differs)")
            arr = np.load(vpath, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise UserError(f"{vpath}: no such file") from None
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{vpath}: not a readable .npy shard ({e})") from None
        if arr.dtype != VALUES_DTYPE or arr.shape != (len(steps),):
            raise UserError(f"{vpath}: expected {len(steps)} rows of {VALUES_DTYPE}, got "
                            f"{arr.shape} of {arr.dtype}")
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
