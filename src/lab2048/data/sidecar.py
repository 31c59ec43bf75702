"""Value sidecar: per-step rewards and value targets aligned 1:1 with a packed dataset.

For every step row t of a run (docs/design.md, "Value sidecar"):

    reward[t]        = merge reward of move_dir[t] on board[t]          (exact, 65536 included)
    reward_scaled[t] = reward[t] * reward_scale
    return_raw[t]    = G[t], the value target of values.json's "kind" (`data.returns`):
                       monte_carlo  G[t] = Σ_k γ^k reward[t+k]   (to the run's last step)
                       n_step       n rewards, then γ^n V(board[t+n])
                       lambda       G[t] = r[t] + γ ((1−λ) V(board[t+1]) + λ G[t+1])
    return_scaled[t] = h(reward_scale * G[t])

V is a bootstrapping model's value in points (`bootstrap.py`); past a run's last row, G and V
are 0 (the board after the last move is not recorded).

Choices
- Chunks of whole runs: the rows are cut on a grid of `chunk_rows`, and a chunk owns the runs
  that start inside its cell (it reads on past the cell's end to finish its last run). So
  every run is computed in one piece by the pure functions of `returns.py`, chunks are
  independent (threads, numba without the GIL), and the result is bit for bit the same for
  any sharding or chunk size.
- Rewards are recomputed from the packed board and move with the engine while checking the
  rows with `check.check_rows` (legal moves, each next board the move plus one spawn, step
  order); the runs found are compared with metadata.db with `check.runs_table_problems`, and
  `check.file_problems` looks at the files: a dataset `lab2048 check` rejects is refused.
- Truncated episodes: a run counts as finished when the game can be over after its last move
  (`kernels.can_end_after`); otherwise it was cut short and is listed in values.json.
- values.json records the format version, the target (kind, n, lam, bootstrap: the
  bootstrapping model's weight fingerprint), γ, reward scale, ε, per-shard row counts and the
  data128 fingerprints (`fingerprint.py`) of every steps and values shard, and a SHA-256 of all
  of that: `open_sidecar` refuses a sidecar whose values.json was edited, or that does not match
  its dataset, and checks (run_id, step_index) row by row.
- Safe output: shards are written into a temporary `.values.<pid>-*.tmp` in the output
  directory (stale ones of killed runs are removed by the next run); the old values.json is
  removed first, the new shards renamed into place and values.json written last. A failed or
  killed run leaves the previous sidecar intact; a full disk is one line.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from lab2048.data.check import (
    BAD_CHAIN,
    BAD_MASK,
    BAD_ORDER,
    ILLEGAL_MOVE,
    check_rows,
    file_problems,
    refuse_problems,
    runs_table_problems,
)
from lab2048.data.dataset import STEP_DTYPE, Dataset, check_keys, load_npy
from lab2048.data.fingerprint import Hash, fingerprint, hash_piece, json_sha256
from lab2048.data.returns import discounted_returns, lambda_returns, n_step_returns
from lab2048.engine import kernels as K
from lab2048.errors import UserError
from lab2048.io import disk_errors, progress_bar, read_json, temp_dir_beside
from lab2048.value_target import ValueTarget
from lab2048.value_transform import h_scalar

FORMAT_VERSION = 3  # 3: kind, n, lam, bootstrap and a checksum of values.json
VALUES_DTYPE = np.dtype([("run_id", "<u4"), ("step_index", "<u4"), ("reward", "<f4"),
                         ("reward_scaled", "<f4"), ("return_raw", "<f4"),
                         ("return_scaled", "<f4")])
CHUNK_ROWS = 1 << 18  # 12 MB of steps: a thread's chunk stays in the cache between passes
KINDS = ("monte_carlo", "n_step", "lambda")


@dataclass(frozen=True)
class SidecarConfig(ValueTarget):
    """The target a sidecar holds: a value target (value_target.ValueTarget) of boards, its
    kind one of KINDS; invalid settings are one-line UserErrors."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        try:
            super().__post_init__()
        except ValueError as e:
            raise UserError(str(e)) from None

    @property
    def bootstrapped(self) -> bool:
        return self.kind != "monte_carlo"


# ---------------------------------------------------------------------------------------------
# Kernels of one chunk (whole runs)


@njit(cache=True, nogil=True)
def _segments(run_id, step_index, rewards, boards, masks, moves, scale, move_xor, line_reward,
              out_run, out_step, out_scaled):
    """Copy the row keys and scale the rewards of a checked chunk, and summarise its runs:
    (first rows + the end, ids, reward sums, whether the game can be over after each run's last
    move, count of non-finite scaled rewards)."""
    n = len(run_id)
    runs = 1 if n else 0
    for i in range(1, n):
        runs += run_id[i] != run_id[i - 1]
    starts = np.empty(runs + 1, np.int64)
    ids = np.empty(runs, np.int64)
    sums = np.zeros(runs, np.int64)
    ended = np.zeros(runs, np.bool_)
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
    starts[runs] = n
    return starts, ids, sums, ended, bad


@njit(cache=True, nogil=True)
def _targets(rewards, starts, values, kind, gamma, n, lam, scale, eps, return_raw,
             return_scaled):
    """The return columns, run by run (kind 0 monte_carlo, 1 n_step, 2 lambda; `values` V of
    every row for the bootstrapped kinds); the count of non-finite results."""
    bad = 0
    for s in range(len(starts) - 1):
        a, b = starts[s], starts[s + 1]
        r = rewards[a:b]  # float32 in, float64 arithmetic
        if kind == 0:
            g = discounted_returns(r, gamma, 0.0)
        elif kind == 1:
            g = n_step_returns(r, values[a:b], gamma, n, 0.0)
        else:
            g = lambda_returns(r, values[a:b], gamma, lam, 0.0)
        for t in range(b - a):
            raw = np.float32(g[t])
            scaled = np.float32(h_scalar(g[t] * scale, eps))
            return_raw[a + t] = raw
            return_scaled[a + t] = scaled
            bad += not (np.isfinite(raw) and np.isfinite(scaled))
    return bad


# ---------------------------------------------------------------------------------------------
# Shards as one row range


class _Shards:
    """.npy shards as one range of global rows, read and written with pread/pwrite: plain
    sequential I/O (no page faults of a memory map, which serialise threads), safe from
    several threads."""

    def __init__(self, dtype: np.dtype, fds: list[int], offsets: list[int],
                 lengths: list[int]) -> None:
        self.dtype, self.fds, self.offsets = dtype, fds, offsets
        self.bounds = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64).tolist()

    @classmethod
    def steps(cls, ds: Dataset) -> _Shards:
        return cls(STEP_DTYPE, [os.open(p, os.O_RDONLY) for p in ds.shard_paths],
                   [getattr(shard, "offset", 0) for shard in ds.shards],
                   [len(shard) for shard in ds.shards])

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
        return cls(dtype, fds, offsets, lengths)

    def pieces(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """Global rows [start, stop) as (shard, first row, end row) pieces."""
        return [(s, max(start, lo) - lo, min(stop, hi) - lo)
                for s, (lo, hi) in enumerate(itertools.pairwise(self.bounds))
                if lo < stop and hi > start]

    def read(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Global rows [start, stop), read into out[:rows] (a reused buffer)."""
        out = out[:stop - start]
        view, size, at = memoryview(out.view(np.uint8)), self.dtype.itemsize, 0
        for s, a, b in self.pieces(start, stop):
            want, done = (b - a) * size, 0
            while done < want:
                got = os.preadv(self.fds[s], [view[at + done:at + want]],
                                self.offsets[s] + a * size + done)
                if got == 0:
                    raise UserError(f"shard {s}: ends before row {b} (truncated while reading)")
                done += got
            at += want
        return out

    def write(self, start: int, values: np.ndarray) -> None:
        view, size, at = memoryview(values.view(np.uint8)), self.dtype.itemsize, 0
        for s, a, b in self.pieces(start, start + len(values)):
            want, done = (b - a) * size, 0
            while done < want:
                done += os.pwritev(self.fds[s], [view[at + done:at + want]],
                                   self.offsets[s] + a * size + done)
            at += want

    def hashes(self, start: int, rows: np.ndarray) -> list[tuple[int, Hash]]:
        """(shard, hash) of each shard piece of rows that sit at global row `start`."""
        out, at = [], 0
        for s, a, b in self.pieces(start, start + len(rows)):
            out.append((s, hash_piece(rows[at:at + b - a], a)))
            at += b - a
        return out

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def _where(ds: Dataset, row: int) -> str:
    """'SHARD: row R' for a global row."""
    bounds = np.cumsum([len(shard) for shard in ds.shards])
    s = int(np.searchsorted(bounds, row, "right"))
    return f"{ds.shard_paths[s]}: row {row - (int(bounds[s - 1]) if s else 0)}"


def _first_run_start(steps: _Shards, row: int, total: int) -> int:
    """The first global row >= `row` where a run starts (its run_id differs from the row
    before), or `total`. Reads a few hundred rows, more only while a long run goes on."""
    if row <= 0 or row >= total:
        return min(max(row, 0), total)
    at, block = row - 1, 256
    while at + 1 < total:
        ids = steps.read(at, min(at + block + 1, total), np.empty(block + 1, STEP_DTYPE))
        new = np.flatnonzero(ids["run_id"][1:] != ids["run_id"][:-1])
        if len(new):
            return at + 1 + int(new[0])
        at, block = at + block, min(2 * block, 1 << 16)
    return total


# ---------------------------------------------------------------------------------------------
# Building


@dataclass
class _Part:
    """What one chunk found: its runs and the hashes of the rows it wrote."""

    starts: np.ndarray  # global first row of each run
    ids: np.ndarray
    lengths: np.ndarray
    sums: np.ndarray  # reward sums
    ended: np.ndarray  # whether the game can be over after the run's last move
    steps_hashes: list[tuple[int, Hash]]
    values_hashes: list[tuple[int, Hash]]


_FATAL = {BAD_ORDER: "rows out of order",
          BAD_MASK: "tile_65536_mask marks a cell that is not 15",
          ILLEGAL_MOVE: "its recorded move is illegal",
          BAD_CHAIN: "its next board is not the move plus one spawn"}


class _Stopped(Exception):
    """A chunk not started because another one failed."""


class _Buffers(threading.local):
    """Per-thread chunk buffers, grown as needed and reused: fresh large allocations would
    page-fault on every chunk, and page faults of one process serialise its threads."""

    def get(self, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if getattr(self, "size", 0) < rows:  # with room for the next chunk's longer last run
            self.size = rows + rows // 4
            self.rows = np.empty(self.size, STEP_DTYPE)
            self.values = np.empty(self.size, VALUES_DTYPE)
            self.flags = np.empty(self.size, np.int64)
        return self.rows[:rows], self.values[:rows], self.flags[:rows]


def build_sidecar(dataset: Path, cfg: SidecarConfig, output: Path | None = None,
                  workers: int = 0, overwrite: bool = False, chunk_rows: int = CHUNK_ROWS,
                  progress: bool = True, bootstrap: Path | None = None) -> dict:
    """Compute and write the sidecar of `dataset` into `output` (default: the dataset itself).
    The bootstrapped kinds need `bootstrap`, an init directory with a value head.

    Returns the summary that values.json also holds."""
    if workers < 0:
        raise UserError(f"workers must be 0 (all cores) or more, got {workers}")
    if cfg.bootstrapped != (bootstrap is not None):
        raise UserError("--bootstrap INIT goes with --n-step N or --lambda L, and only with them")
    ds = Dataset(dataset)
    output = Path(output) if output else ds.root
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: not a directory")
    if (output / "values.json").exists() and not overwrite:
        raise UserError(f"{output / 'values.json'}: a sidecar already exists (pass "
                        "--overwrite to replace it)")
    refuse_problems(ds.root, [(-1, p) for p in file_problems(ds)])
    table = ds.runs  # read (and the session table checked) before the long work
    started = time.perf_counter()
    with disk_errors(output, "the sidecar"):
        values_of = None
        weights = ""
        if bootstrap is not None:
            from lab2048.data.bootstrap import bootstrap_values

            weights, values_of = bootstrap_values(ds, Path(bootstrap), cfg.gamma, output,
                                                 progress)
        tmp = temp_dir_beside(output / "values")
        try:
            parts = _compute(ds, cfg, tmp, workers or os.cpu_count() or 1, chunk_rows,
                             progress, values_of)
            meta = _summary(ds, cfg, parts, table, weights, started)
            _publish(tmp, output, meta)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if bootstrap is not None:
        from lab2048.data.bootstrap import forget_values

        forget_values(output, weights)
    return meta


def _compute(ds: Dataset, cfg: SidecarConfig, tmp: Path, workers: int, chunk_rows: int,
             progress: bool, values_of) -> list[_Part]:
    """Check, compute and write every chunk into tmp/values-NNNNN.npy; the chunks' parts."""
    lengths = [len(shard) for shard in ds.shards]
    total = sum(lengths)
    tables = K.tables()
    kind = KINDS.index(cfg.kind)
    buffers = _Buffers()
    steps = _Shards.steps(ds)
    out = _Shards.create([tmp / f"values-{i:05d}.npy" for i in range(len(lengths))], lengths,
                         VALUES_DTYPE)
    no_values = np.zeros(0, np.float32)

    stop = threading.Event()

    def process(cell: int) -> _Part:
        if stop.is_set():  # another chunk failed: its error is the one reported
            raise _Stopped
        try:
            return one_chunk(cell)
        except BaseException:
            stop.set()
            raise

    def one_chunk(cell: int) -> _Part:
        a = _first_run_start(steps, cell, total)
        b = _first_run_start(steps, cell + chunk_rows, total) if a < cell + chunk_rows else a
        if a == b:  # a run that started in an earlier cell fills this one
            empty = np.zeros(0, np.int64)
            return _Part(empty, empty, empty, empty, empty.astype(bool), [], [])
        rows, values, flags = buffers.get(b - a)
        steps.read(a, b, rows)
        rewards = values["reward"]
        check_rows(rows, *tables, full=False, rewards=rewards, flags=flags)
        if len(rows) and rows["step_index"][0] != 0:
            flags[0] |= BAD_ORDER
        if flags.any():
            i = int(np.flatnonzero(flags)[0])
            what = next(text for bit, text in _FATAL.items() if flags[i] & bit)
            raise UserError(f"{_where(ds, a + i)}: run "
                            f"{int(rows['run_id'][i])} step {int(rows['step_index'][i])}: "
                            f"{what}")
        starts, ids, sums, ended, bad = _segments(
            rows["run_id"], rows["step_index"], rewards, rows["board"], rows["tile_65536_mask"],
            rows["move_dir"], cfg.reward_scale, *tables, values["run_id"],
            values["step_index"], values["reward_scaled"])
        if bad:
            raise UserError(f"{_where(ds, a)}: non-finite reward_scaled "
                            f"(reward scale {cfg.reward_scale})")
        v = values_of(a, b) if values_of is not None else no_values
        if _targets(rewards, starts, v, kind, cfg.gamma, cfg.n, cfg.lam, cfg.reward_scale,
                    cfg.epsilon, values["return_raw"], values["return_scaled"]):
            raise UserError(f"{_where(ds, a)}: non-finite return (gamma "
                            f"{cfg.gamma}, reward scale {cfg.reward_scale})")
        out.write(a, values)
        bar.update(b - a)
        return _Part(starts[:-1] + a, ids, np.diff(starts), sums, ended,
                     steps.hashes(a, rows), out.hashes(a, values))

    try:
        with progress_bar(progress, total=total, unit="row", unit_scale=True,
                          desc="value-sidecar") as bar, ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(process, c) for c in range(0, total, chunk_rows)]
            try:
                return [f.result() for f in futures]  # the first failure in row order
            except BaseException:
                stop.set()
                for f in futures:
                    f.cancel()
                raise
    finally:
        steps.close()
        out.close()


def _summary(ds: Dataset, cfg: SidecarConfig, parts: list[_Part], table: dict,
             bootstrap: str, started: float) -> dict:
    """Cross-check the runs found against each other and metadata.db; values.json's fields."""
    cat = {k: np.concatenate([getattr(p, k) for p in parts]) if parts else np.zeros(0, np.int64)
           for k in ("starts", "ids", "lengths", "sums", "ended")}
    order = np.argsort(cat["ids"], kind="stable")
    twice = np.flatnonzero(cat["ids"][order][1:] == cat["ids"][order][:-1])
    if len(twice):  # the earliest place where a run shows up a second time
        i = order[twice + 1].min()
        raise UserError(f"{_where(ds, int(cat['starts'][i]))}: the rows of run "
                        f"{int(cat['ids'][i])} are not contiguous")
    problems, mismatched = runs_table_problems(ds, cat["ids"], cat["lengths"], cat["sums"])
    refuse_problems(ds.root / "metadata.db", problems)
    prints = {}
    for kind in ("steps", "values"):
        sums = [Hash() for _ in ds.shards]
        for part in parts:
            for s, piece in getattr(part, f"{kind}_hashes"):
                sums[s].add(piece)
        prints[kind] = [h.fingerprint(len(shard)) for h, shard in zip(sums, ds.shards,
                                                                       strict=True)]
    meta = {
        "format_version": FORMAT_VERSION, "kind": cfg.kind, "n": cfg.n, "lam": cfg.lam,
        "bootstrap": bootstrap, "gamma": cfg.gamma, "reward_scale": cfg.reward_scale,
        "epsilon": cfg.epsilon, "transform": "muzero_h",
        "shards": [{"steps": p.name, "values": f"values-{i:05d}.npy", "rows": len(s),
                    "steps_fingerprint": fs, "values_fingerprint": fv}
                   for i, (p, s, fs, fv) in enumerate(zip(
                       ds.shard_paths, ds.shards, prints["steps"], prints["values"],
                       strict=True))],
        "rows": ds.num_rows, "runs": len(cat["ids"]),
        "score_mismatches": mismatched,
        "truncated_runs": sorted(cat["ids"][~cat["ended"].astype(bool)].tolist()),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return seal(meta)


def seal(meta: dict) -> dict:
    """values.json's fields with their checksum (SHA-256 of the other fields), which
    `read_meta` verifies."""
    fields = {k: v for k, v in meta.items() if k != "checksum"}
    return {**fields, "checksum": json_sha256(fields)}


def _publish(tmp: Path, output: Path, meta: dict) -> None:
    """Swap the new shards in: values.json goes first, so an interrupted swap leaves no
    values.json (refused), never a mixed sidecar."""
    target = output / "values.json"
    (tmp / "values.json").write_text(json.dumps(meta, indent=2) + "\n")
    if target.exists():  # replacing a sidecar: its shards that the new one lacks go too
        target.unlink()
        for old in output.glob("values-*.npy"):
            if not (tmp / old.name).exists():
                old.unlink()
    for new in sorted(tmp.glob("values-*.npy")):
        os.replace(new, output / new.name)
    os.replace(tmp / "values.json", target)


# ---------------------------------------------------------------------------------------------
# Reading


def read_meta(path: Path) -> dict:
    """A values.json, checked: its format version, its keys, and that it was not edited."""
    meta = read_json(path, "no such file (build it with `lab2048 value-sidecar`)")
    keys = {"format_version", "gamma", "reward_scale", "epsilon", "shards"}
    if not isinstance(meta, dict) or not keys <= set(meta):
        raise UserError(f"{path}: not a values.json (needs {', '.join(sorted(keys))})")
    if meta["format_version"] != FORMAT_VERSION:
        raise UserError(f"{path}: format version {meta['format_version']!r}, this lab2048 "
                        f"reads {FORMAT_VERSION} (rebuild it with `lab2048 value-sidecar "
                        "--overwrite`)")
    if meta.get("checksum") != seal(meta)["checksum"]:
        raise UserError(f"{path}: edited after it was written (its checksum differs); rebuild "
                        "it with `lab2048 value-sidecar --overwrite`")
    meta.setdefault("kind", "monte_carlo")
    return meta


def open_sidecar(dataset: Path | Dataset, sidecar: Path | None = None,
                 fingerprints: bool = True) -> tuple[dict, list[np.ndarray]]:
    """(values.json, memory-mapped values shards) of a dataset's sidecar, verified.

    Refuses (UserError) an edited values.json, or a sidecar whose shards, row counts or
    fingerprints do not match the dataset, and checks (run_id, step_index) against the steps
    shards row by row. `fingerprints=False` skips hashing the files (a full read) but not the
    row-by-row check."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    root = Path(sidecar) if sidecar else ds.root
    path = root / "values.json"
    meta = read_meta(path)
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
        if fingerprints and fingerprint(steps) != entry["steps_fingerprint"]:
            raise UserError(f"{steps_path}: changed since the sidecar was made (fingerprint "
                            "differs); rebuild it with `lab2048 value-sidecar --overwrite`")
        arr = load_npy(vpath)
        if arr.dtype != VALUES_DTYPE or arr.shape != (len(steps),):
            raise UserError(f"{vpath}: expected {len(steps)} rows of {VALUES_DTYPE}, got "
                            f"{arr.shape} of {arr.dtype}")
        if fingerprints and fingerprint(arr) != entry["values_fingerprint"]:
            raise UserError(f"{vpath}: does not match values.json (fingerprint differs)")
        check_keys(steps, arr, vpath, CHUNK_ROWS)
        values.append(arr)
    return meta, values


def format_summary(meta: dict, output: Path) -> str:
    truncated, mismatched = meta["truncated_runs"], meta["score_mismatches"]
    target = {"monte_carlo": "Monte Carlo returns", "n_step": f"{meta['n']}-step returns",
              "lambda": f"TD(lambda = {meta['lam']}) returns"}[meta["kind"]]
    lines = [f"{output}: value sidecar ({target}) for {meta['rows']:,} steps of "
             f"{meta['runs']:,} runs in {len(meta['shards'])} shard(s), gamma {meta['gamma']}, "
             f"reward scale {meta['reward_scale']}, eps {meta['epsilon']} "
             f"({meta['seconds']:.1f} s)",
             f"runs whose rewards sum to runs.max_score: {meta['runs'] - len(mismatched):,} of "
             f"{meta['runs']:,}" + (f" (differ: {mismatched[:10]})" if mismatched else ""),
             f"truncated runs (last move cannot end the game): {len(truncated):,}"
             + (f" {truncated[:10]}" if truncated else "")]
    if meta["bootstrap"]:
        lines.append(f"bootstrapped on the model with weights {meta['bootstrap']}")
    return "\n".join(lines)
