"""Training data: a packed dataset joined with its value sidecar, split by run, batched in NumPy.

Choices
- Runs are chosen with SQL over metadata.db (`data.where`); validation runs either by their
  own SQL (`data.val_where`) or as a seeded random `val_fraction` of the selected runs. The
  split is by run, never by step, so no game leaks into both sides.
- The sidecar is opened with `open_sidecar` (values.json against the dataset: shard names, row
  counts, fingerprints, and (run_id, step_index) row by row, vectorised); every batch checks
  (run_id, step_index) of its steps against its values once more.
- Row indices are global (shards concatenated). The data order is a pure function of
  (seed, step): epoch e = step // batches_per_epoch is a permutation seeded by (seed, e), and
  the batch's symmetries come from a generator seeded by (seed, step). Resuming needs nothing
  but the step. Indices are sorted within a batch, so the memory-mapped reads go forward.
- Batches are assembled without per-sample Python: a fancy-indexed gather per shard, numba's
  board decoder (to_exponents) and legality (legal_masks: recomputed from the board, as
  design.md asks, not the stored ev_legal), and take_along_axis for the symmetries.
- Symmetries: the 8 maps of the square (transpose? then mirror left-right? then up-down?).
  Each permutes the cells and the moves alike; labels, per-move values (branch_evs) and legal
  bits are permuted by the same move map, so a left-right mirror swaps Left and Right in all
  three. Returns are invariant.
- binned_ev classes of each move (design.md): ILLEGAL; FAILURE (a legal move valued at most
  `failure_value`); WINNER (a legal move as good as the best); else BIN_i of its disadvantage
  (best value - its value) with quantile edges fitted on training rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab2048.data.dataset import Dataset, default_dataset, select_runs
from lab2048.data.sidecar import open_sidecar
from lab2048.engine.batch import legal_masks, to_exponents
from lab2048.errors import UserError
from lab2048.train.config import DataConfig

MOVE_BITS = np.array([1, 2, 4, 8], np.uint8)  # UDLR
_DIRS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # (d_row, d_col) of Up, Down, Left, Right


def _symmetries() -> tuple[np.ndarray, np.ndarray]:
    """(cell permutations int64 [8, 16], move maps int64 [8, 4]) of the 8 symmetries.

    new_tokens = tokens[perm]; a move m on the old board is move_map[m] on the new one.
    Symmetry g applies: transpose if g & 4, then mirror left-right if g & 1, up-down if g & 2."""
    perms, maps = [], []
    for g in range(8):
        grid, dirs = np.arange(16).reshape(4, 4), _DIRS.copy()
        if g & 4:
            grid, dirs = grid.T, dirs[:, ::-1]
        if g & 1:
            grid, dirs = grid[:, ::-1], dirs * [1, -1]
        if g & 2:
            grid, dirs = grid[::-1, :], dirs * [-1, 1]
        perms.append(grid.ravel())
        maps.append([int(np.flatnonzero((d == _DIRS).all(1))[0]) for d in dirs])
    return np.array(perms), np.array(maps)


CELL_PERMS, MOVE_MAPS = _symmetries()
MOVE_INVERSE = np.argsort(MOVE_MAPS, axis=1)  # new move j came from old move MOVE_INVERSE[g, j]


@dataclass
class Batch:
    tokens: np.ndarray  # uint8 [B, 16] exponents
    legal: np.ndarray  # uint8 [B] legal-move bitmask, recomputed from the board
    move: np.ndarray  # int64 [B] teacher move, UDLR
    branch_evs: np.ndarray  # float32 [B, 4] teacher's per-move values (0.0 where illegal)
    return_raw: np.ndarray  # float32 [B]
    return_scaled: np.ndarray  # float32 [B]


def augment(batch: Batch, sym: np.ndarray) -> Batch:
    """The batch with symmetry sym[i] (0..7, 0 = identity) applied to sample i."""
    legal_bool = (batch.legal[:, None] & MOVE_BITS) != 0
    inv = MOVE_INVERSE[sym]
    legal = (np.take_along_axis(legal_bool, inv, 1) * MOVE_BITS).sum(1).astype(np.uint8)
    return Batch(
        tokens=np.take_along_axis(batch.tokens, CELL_PERMS[sym], 1),
        legal=legal,
        move=np.take_along_axis(MOVE_MAPS[sym], batch.move[:, None], 1)[:, 0],
        branch_evs=np.take_along_axis(batch.branch_evs, inv, 1),
        return_raw=batch.return_raw, return_scaled=batch.return_scaled)


def ev_classes(branch_evs: np.ndarray, legal: np.ndarray, edges: np.ndarray,
               failure_value: float) -> np.ndarray:
    """int64 [B, 4] binned_ev class of every move: 0 ILLEGAL, 1 FAILURE, 2 + i BIN_i,
    2 + bins WINNER (see the module docstring)."""
    legal_bool = (legal[:, None] & MOVE_BITS) != 0
    evs = np.where(legal_bool, branch_evs, -np.inf)
    gap = evs.max(1, keepdims=True) - evs
    bins = len(edges) - 1
    cls = 2 + np.clip(np.searchsorted(edges, gap, "right") - 1, 0, bins - 1)
    cls = np.where(gap <= 0, 2 + bins, cls)
    cls = np.where(branch_evs <= failure_value, 1, cls)
    return np.where(legal_bool, cls, 0).astype(np.int64)


def fit_edges(branch_evs: np.ndarray, legal: np.ndarray, bins: int,
              failure_value: float) -> np.ndarray:
    """k + 1 strictly increasing quantile edges of the disadvantage of legal, non-best,
    non-failing moves."""
    legal_bool = (legal[:, None] & MOVE_BITS) != 0
    evs = np.where(legal_bool, branch_evs, -np.inf)
    gap = evs.max(1, keepdims=True) - evs
    keep = legal_bool & (gap > 0) & (branch_evs > failure_value)
    d = gap[keep].astype(np.float64)
    if len(d) < bins:
        raise UserError(f"binned_ev: only {len(d)} moves with a disadvantage in the training "
                        f"runs, too few for {bins} bins (does the dataset hold per-move values?)")
    edges = np.quantile(d, np.linspace(0, 1, bins + 1))
    edges[0] = 0.0
    for i in range(1, len(edges)):  # ties (repeated values) -> nudge to strictly increasing
        edges[i] = max(edges[i], np.nextafter(edges[i - 1], np.inf) + 1e-9 * abs(edges[i - 1]))
    return edges


class Loader:
    """The training and validation rows of a dataset with its sidecar (see module docstring)."""

    def __init__(self, cfg: DataConfig, batch_size: int, seed: int) -> None:
        root = Path(cfg.dataset) if cfg.dataset else default_dataset()
        self.ds = Dataset(root)
        sidecar = Path(cfg.sidecar) if cfg.sidecar else None
        if sidecar is None and root == default_dataset() and not (root / "values.json").exists():
            raise UserError("the embedded dataset has no sidecar: build one with `lab2048 "
                            "value-sidecar --output DIR` and set data.sidecar = DIR")
        self.meta, self.values = open_sidecar(self.ds, sidecar)
        self.batch_size, self.seed = batch_size, seed
        self.offsets = np.cumsum([0] + [len(s) for s in self.ds.shards])

        selected = select_runs(root, cfg.where)
        if cfg.val_where:
            val = np.intersect1d(selected, select_runs(root, cfg.val_where))
        elif cfg.val_fraction > 0 and len(selected) > 1:
            n_val = min(max(1, round(cfg.val_fraction * len(selected))), len(selected) - 1)
            rng = np.random.default_rng(cfg.split_seed)
            val = np.sort(rng.choice(selected, n_val, replace=False))
        else:
            val = np.zeros(0, np.int64)
        train = np.setdiff1d(selected, val)
        if len(train) == 0:
            raise UserError(f"{root}: no training runs (data.where = {cfg.where!r}, "
                            f"data.val_where = {cfg.val_where!r})")
        self.train_runs, self.val_runs = train, val

        run_ids = np.concatenate([np.asarray(s["run_id"]) for s in self.ds.shards])
        self.train_rows = np.flatnonzero(np.isin(run_ids, train))
        val_rows = np.flatnonzero(np.isin(run_ids, val))
        if len(val_rows) > cfg.val_rows:
            val_rows = val_rows[np.linspace(0, len(val_rows) - 1, cfg.val_rows).astype(np.int64)]
        self.val_rows = val_rows
        if len(self.train_rows) < batch_size:
            raise UserError(f"{root}: {len(self.train_rows)} training steps, fewer than one "
                            f"batch of {batch_size}")
        self.augment = cfg.augment
        self.batches_per_epoch = len(self.train_rows) // batch_size
        self._perm_epoch, self._perm = -1, None

    # -- reading rows --------------------------------------------------------------------------

    def gather(self, rows: np.ndarray) -> Batch:
        """The batch of global row indices `rows` (sorted reads per shard), unaugmented."""
        steps, values = [], []
        shard = np.searchsorted(self.offsets, rows, "right") - 1
        for s in np.unique(shard):
            local = rows[shard == s] - self.offsets[s]
            steps.append(self.ds.shards[s][local])
            values.append(self.values[s][local])
        st, va = np.concatenate(steps), np.concatenate(values)
        bad = (st["run_id"] != va["run_id"]) | (st["step_index"] != va["step_index"])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UserError(f"sidecar row of run {int(va['run_id'][i])} step "
                            f"{int(va['step_index'][i])} is joined to run {int(st['run_id'][i])} "
                            f"step {int(st['step_index'][i])}")
        boards, masks = st["board"], st["tile_65536_mask"]
        return Batch(tokens=to_exponents(boards, masks), legal=legal_masks(boards, masks),
                     move=st["move_dir"].astype(np.int64),
                     branch_evs=np.ascontiguousarray(st["branch_evs"], np.float32),
                     return_raw=va["return_raw"].astype(np.float32),
                     return_scaled=va["return_scaled"].astype(np.float32))

    def batch_rows(self, step: int) -> np.ndarray:
        """Sorted global rows of training batch `step` (a pure function of seed and step)."""
        epoch, pos = divmod(step, self.batches_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(
                len(self.train_rows))
            self._perm_epoch = epoch
        b = self.batch_size
        return np.sort(self.train_rows[self._perm[pos * b:(pos + 1) * b]])

    def train_batch(self, step: int) -> Batch:
        batch = self.gather(self.batch_rows(step))
        if self.augment:
            sym = np.random.default_rng([self.seed, 1 << 32, step]).integers(
                0, 8, len(batch.move))
            batch = augment(batch, sym)
        return batch

    def val_batches(self, batch_size: int):
        for a in range(0, len(self.val_rows), batch_size):
            yield self.gather(self.val_rows[a:a + batch_size])

    def sample_train(self, n: int) -> Batch:
        """Up to n training rows evenly spaced over the training runs (for fitting bins)."""
        idx = np.linspace(0, len(self.train_rows) - 1, min(n, len(self.train_rows)))
        return self.gather(self.train_rows[idx.astype(np.int64)])
