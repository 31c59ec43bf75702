"""Packed datasets: the 46-byte step rows, `metadata.db` and `valuation_types.json`.

A dataset is a directory (docs/design.md, "Packed dataset"):
- `steps-00000.npy`, ... (or one `steps.npy`): structured arrays of `STEP_DTYPE`, packed
  (itemsize 46, no padding), little-endian, byte for byte the layout of existing Macroxue packs.
  A run's rows are contiguous and in step order; a run may continue into the next shard.
- `metadata.db` (SQLite): `runs(id, seed, steps, max_score, highest_tile, ...)` and
  `session(meta_key, meta_value)`. Readers need only the five fixed columns; lab2048 adds
  `end_reason` and `source` (the game's origin: a file name, or "" for generated games).
- `valuation_types.json`: name -> id.

Choices
- Readers memory-map the shards (`np.load(mmap_mode="r")`) and check the dtype exactly; a
  dataset never has to fit in RAM. Every format problem is a one-line UserError naming the file.
- `DatasetWriter` fills shards of `shard_rows` rows in a hidden temporary directory beside the
  target and renames it into place at `close()`: an interrupted write (or a full disk: one line)
  leaves any earlier dataset untouched. An existing output is replaced only with overwrite=True
  and only when it is a dataset (it holds metadata.db), never when it is or contains an input
  (`io.claim_dir`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab2048 import __version__
from lab2048.engine.arrays import legal_bools
from lab2048.errors import UserError
from lab2048.io import claim_dir, publish_dir, read_json, temp_dir_beside

FORMAT_VERSION = 1
STEP_DTYPE = np.dtype([
    ("run_id", "<u4"),
    ("step_index", "<u4"),
    ("board", "<u8"),
    ("board_eval", "<i4"),
    ("tile_65536_mask", "<u2"),
    ("move_dir", "u1"),
    ("valuation_type", "u1"),
    ("ev_legal", "u1"),
    ("max_rank", "u1"),
    ("seed", "<u4"),
    ("branch_evs", "<f4", (4,)),
])
assert STEP_DTYPE.itemsize == 46
VALUATION_TYPES = {"search": 0, "tuple11": 1, "tuple10": 2}
DEFAULT_SHARD_ROWS = 1 << 20

_RUNS_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    seed BIGINT NOT NULL,
    steps INT NOT NULL,
    max_score INT NOT NULL,
    highest_tile INT NOT NULL,
    end_reason TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE session (meta_key TEXT PRIMARY KEY, meta_value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Run:
    """One row of `runs`."""

    id: int
    seed: int
    steps: int
    max_score: int
    highest_tile: int
    end_reason: str = ""
    source: str = ""


# ---------------------------------------------------------------------------------------------
# Writing


class DatasetWriter:
    """Append whole runs; `close()` publishes the directory atomically.

    Use as a context manager: an exception (or Ctrl-C) inside the block discards the temporary
    directory and leaves `out` as it was.
    """

    def __init__(self, out: Path, *, session: dict[str, str], overwrite: bool = False,
                 shard_rows: int = DEFAULT_SHARD_ROWS,
                 valuation_types: dict[str, int] | None = None,
                 inputs: tuple[Path, ...] = ()) -> None:
        if shard_rows < 1:
            raise UserError(f"shard rows must be at least 1, got {shard_rows}")
        self.out = Path(out)
        claim_dir(self.out, overwrite, marker="metadata.db", kind="dataset", inputs=inputs)
        self.tmp = temp_dir_beside(self.out)
        self.shard_rows = shard_rows
        self.valuation_types = dict(valuation_types or VALUATION_TYPES)
        self.session = {"format_version": str(FORMAT_VERSION), "writer": f"lab2048 {__version__}",
                        **session}
        self._buffer = np.empty(shard_rows, STEP_DTYPE)
        self._filled = 0
        self._shards = 0
        self.rows = 0
        try:
            with self._writing():
                self._db = sqlite3.connect(self.tmp / "metadata.db")
                self._db.executescript(_RUNS_SCHEMA)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    @contextlib.contextmanager
    def _writing(self):
        """A failed write (a full disk) is one line naming the output; the caller's `with`
        then discards the temporary directory."""
        try:
            yield
        except (OSError, sqlite3.Error) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise UserError(f"{self.out}: cannot write the dataset ({reason})") from None

    def add_run(self, run: Run, rows: np.ndarray) -> None:
        """Append a run: `rows` (STEP_DTYPE, in step order) must carry run.id and 0..n-1."""
        if rows.dtype != STEP_DTYPE:
            raise ValueError(f"rows must have STEP_DTYPE, got {rows.dtype}")
        if len(rows) != run.steps:
            raise ValueError(f"run {run.id}: {len(rows)} rows but steps = {run.steps}")
        with self._writing():
            self._db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (int(run.id), int(run.seed), int(run.steps), int(run.max_score),
                              int(run.highest_tile), str(run.end_reason), str(run.source)))
            start = 0
            while start < len(rows):
                take = min(len(rows) - start, self.shard_rows - self._filled)
                self._buffer[self._filled:self._filled + take] = rows[start:start + take]
                self._filled += take
                start += take
                if self._filled == self.shard_rows:
                    self._flush()
        self.rows += len(rows)

    def _flush(self) -> None:
        if self._filled:
            np.save(self.tmp / f"steps-{self._shards:05d}.npy", self._buffer[:self._filled])
            self._shards += 1
            self._filled = 0

    def close(self) -> None:
        try:
            with self._writing():
                self._flush()
                if self._shards == 0:  # an empty dataset still has one (empty) shard (dtype)
                    np.save(self.tmp / "steps-00000.npy", self._buffer[:0])
                self._db.executemany("INSERT INTO session VALUES (?, ?)",
                                     sorted(self.session.items()))
                self._db.commit()
                self._db.close()
                (self.tmp / "valuation_types.json").write_text(
                    json.dumps(self.valuation_types, indent=2) + "\n")
                publish_dir(self.tmp, self.out)  # an existing one only with overwrite (claimed)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def make_rows(*, run_id: int, seed: int, boards: np.ndarray, masks: np.ndarray,
              moves: np.ndarray, ev_legal: np.ndarray, max_rank: np.ndarray,
              board_eval: np.ndarray, branch_evs: np.ndarray | None = None,
              valuation_type: int | np.ndarray = 0) -> np.ndarray:
    """The STEP_DTYPE rows of one run (one row per move, the board before it).

    `branch_evs` None leaves them 0.0 (data without per-move values); `seed` is stored
    truncated to 32 bits, as the format has it.
    """
    rows = np.zeros(len(boards), STEP_DTYPE)
    rows["run_id"] = run_id
    rows["step_index"] = np.arange(len(boards), dtype=np.uint32)
    rows["board"] = boards
    rows["board_eval"] = board_eval
    rows["tile_65536_mask"] = masks
    rows["move_dir"] = moves
    rows["valuation_type"] = valuation_type
    rows["ev_legal"] = ev_legal
    rows["max_rank"] = max_rank
    rows["seed"] = seed & 0xFFFFFFFF
    if branch_evs is not None:
        rows["branch_evs"] = branch_evs
    return rows


def teacher_moves(rows: np.ndarray) -> np.ndarray:
    """uint8 [N]: the teacher's move of each STEP_DTYPE row, the argmax over ev_legal of
    branch_evs; the recorded move_dir where its value equals the best (ties, the teacher's own
    games, rows without per-move values). On student rows (`generate --agent`) move_dir is the
    student's move and this the teacher's."""
    evs = np.where(legal_bools(rows["ev_legal"]), rows["branch_evs"].astype(np.float64), -np.inf)
    move = rows["move_dir"].astype(np.int64)
    recorded = evs[np.arange(len(move)), np.minimum(move, 3)]
    return np.where(recorded >= evs.max(1), move, evs.argmax(1)).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Reading


def load_npy(path: Path, missing: str = "no such file") -> np.ndarray:
    """A memory-mapped .npy file; a one-line UserError naming it if it is missing (`missing`
    says what to tell), truncated or not an array file."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: {missing}") from None
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy file (truncated or corrupt: {e})") from None


def check_keys(steps: np.ndarray, rows: np.ndarray, path: Path, chunk: int = 1 << 18) -> None:
    """A one-line UserError naming `path` at the first row whose (run_id, step_index) is not
    the steps' (a sidecar or annotation file aligned 1:1 with a steps shard)."""
    for a in range(0, len(steps), chunk):
        s, v = steps[a:a + chunk], rows[a:a + chunk]
        bad = (s["run_id"] != v["run_id"]) | (s["step_index"] != v["step_index"])
        if bad.any():
            i = a + int(np.flatnonzero(bad)[0])
            raise UserError(f"{path}: row {i} is run {int(rows['run_id'][i])} step "
                            f"{int(rows['step_index'][i])}, the dataset has run "
                            f"{int(steps['run_id'][i])} step {int(steps['step_index'][i])}")


def _load_shard(path: Path) -> np.ndarray:
    arr = load_npy(path)
    if not isinstance(arr, np.ndarray) or arr.ndim != 1:
        raise UserError(f"{path}: expected a 1-D array of step rows")
    if arr.dtype != STEP_DTYPE or arr.dtype.names != STEP_DTYPE.names:
        raise UserError(f"{path}: dtype {arr.dtype} is not the 46-byte packed step dtype "
                        f"({STEP_DTYPE})")
    return arr


def shard_paths(root: Path) -> list[Path]:
    """The steps shards of a dataset directory, in order."""
    shards = sorted(root.glob("steps-*.npy"))
    single = root / "steps.npy"
    if single.exists():
        if shards:
            raise UserError(f"{root}: holds both steps.npy and steps-NNNNN.npy shards")
        return [single]
    for i, path in enumerate(shards):
        if path.name != f"steps-{i:05d}.npy":
            raise UserError(f"{root}: shard {path.name} out of sequence (expected "
                            f"steps-{i:05d}.npy)")
    if not shards:
        raise UserError(f"{root}: no steps shards (steps-NNNNN.npy)")
    return shards


class Dataset:
    """A packed dataset opened for reading: memory-mapped shards, runs and session facts."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: no such dataset directory")
        self.shard_paths = shard_paths(self.root)
        self.shards = [_load_shard(p) for p in self.shard_paths]
        self.valuation_types = _read_valuation_types(self.root / "valuation_types.json")
        if not (self.root / "metadata.db").is_file():
            raise UserError(f"{self.root / 'metadata.db'}: no such file")

    @functools.cached_property
    def _metadata(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        return _read_metadata(self.root / "metadata.db")

    @property
    def runs(self) -> dict[str, np.ndarray]:
        """The runs table as column arrays (id, seed, steps, max_score, highest_tile), by id;
        read on first use."""
        return self._metadata[0]

    @property
    def session(self) -> dict[str, str]:
        return self._metadata[1]

    @property
    def num_rows(self) -> int:
        return sum(len(s) for s in self.shards)

    def iter_chunks(self, rows: int = DEFAULT_SHARD_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """(global offset, rows) over the whole dataset, at most `rows` at a time."""
        offset = 0
        for shard in self.shards:
            for start in range(0, len(shard), rows):
                chunk = shard[start:start + rows]
                yield offset + start, chunk
            offset += len(shard)


def _read_valuation_types(path: Path) -> dict[str, int]:
    data = read_json(path)
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and 0 <= v < 256 for k, v in data.items()):
        raise UserError(f"{path}: expected an object of name -> id (0..255)")
    if len(set(data.values())) != len(data):
        raise UserError(f"{path}: two valuation types share an id")
    return data


RUN_COLUMNS = ("id", "seed", "steps", "max_score", "highest_tile")


def _query(path: Path, sql: str) -> list[tuple]:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise UserError(f"{path}: not a readable metadata database ({e})") from None


def read_runs(path: Path, columns: tuple[str, ...] = RUN_COLUMNS) -> dict[str, np.ndarray]:
    """Columns of the runs table as int64 arrays, sorted by id."""
    rows = _query(path, f"SELECT {', '.join(columns)} FROM runs ORDER BY id")
    try:
        flat = np.fromiter(itertools.chain.from_iterable(rows), np.int64,
                           len(columns) * len(rows))
    except (TypeError, ValueError, OverflowError) as e:
        raise UserError(f"{path}: runs table holds a value that is not an integer ({e})") from None
    arr = flat.reshape(-1, len(columns))
    return {name: arr[:, i].copy() for i, name in enumerate(columns)}


def read_run_table(path: Path) -> list[Run]:
    """Every row of the runs table, sorted by id."""
    return [Run(*row) for row in _query(path, "SELECT id, seed, steps, max_score, highest_tile, "
                                              "end_reason, source FROM runs ORDER BY id")]


def _read_metadata(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(runs as column arrays sorted by id, session dict)."""
    runs = read_runs(path)
    return runs, dict(_query(path, "SELECT meta_key, meta_value FROM session"))


def default_dataset() -> Path:
    """The small teacher-generated dataset shipped in the package (`make default-dataset`)."""
    return Path(__file__).parent / "default"


def select_runs(root: Path, where: str = "") -> np.ndarray:
    """Run ids chosen with SQL over metadata.db, e.g. where="highest_tile >= 8192"."""
    path = Path(root) / "metadata.db"
    query = "SELECT id FROM runs" + (f" WHERE {where}" if where else "") + " ORDER BY id"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            ids = [r[0] for r in db.execute(query)]
        finally:
            db.close()
    except sqlite3.Error as e:
        raise UserError(f"{path}: run selection {where!r} failed ({e})") from None
    return np.array(ids, dtype=np.int64)
