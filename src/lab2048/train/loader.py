"""Training data: a packed dataset joined with its value sidecar, held as tensors on the
training device, batched there.

    source = open_source(cfg.data)                          # runs, split, verified sidecar
    cols = read_columns(source, source.train_rows, spec)    # CPU tensors, 19+ bytes a row
    batches = Batches(cols, batch_size, seed, device)       # placed on the device (or pinned)
    batch = batches.get(step)                               # a pure function of (seed, step)

Choices
- Runs are chosen with SQL over metadata.db (`data.where`); validation runs either by their
  own SQL (`data.val_where`) or as a seeded random `val_fraction` of the selected runs. The
  split is by run, never by step, so no game leaks into both sides.
- The sidecar is opened with `open_sidecar` (values.json against the dataset: shard names, row
  counts, fingerprints, and (run_id, step_index) row by row); the columns are read once, in
  chunks, checking the join again.
- `data.max_tile` keeps only the steps whose largest tile is at most that (training and
  validation alike): a model meant for the opening and middle game spends its samples there
  instead of on the long endgames of an expert's games.
- Device-resident: what a step needs is read once into tensors: board (int64, the u64's
  bits), the 65536 mask (int16), move (uint8), the value head's h-space target and the return
  in points (float32): 19 bytes a row, + 16 for binned_ev's branch_evs, + 10 for afterstate
  boards. A step gathers its rows by index and decodes, checks and augments them with tensor
  operations on the same device: no host work per step, the same code on CPU tensors.
  `data.placement = "host"` (or "auto" when the columns need more than half the free device
  memory) keeps them in pinned host memory: a step's rows are gathered there into one of two
  pinned buffers and copied asynchronously, the next batch's copy running while a step trains.
- Order: epoch e = step // batches_per_epoch is a permutation of the training rows and a
  symmetry per position, both drawn on the CPU from a generator seeded by (seed, e), so they
  are the same on every device; batch `step` is the permutation's slice `pos * B .. + B`. A
  batch is a pure function of (seed, step), and resuming needs nothing but the step. Under
  DistributedDataParallel rank r of W takes the r-th of W equal slices of each global batch.
- Decoding: exponent of cell i = nibble (60 - 4i) of the board, + 1 where mask bit i is set;
  done as two table lookups per row (its 16 board bits, its 4 mask bits).
- Legality, recomputed from the exponents (design.md asks for the board's, not the stored
  ev_legal): a move changes a line when, looking from the side it moves toward, a cell is
  empty and the next one is not, or two neighbours are equal and non-empty (two 2^16 tiles
  count: the engine calls that merge legal). A table over all 17^4 lines of 4 exponents holds
  both directions; each row and column is one lookup. Bit i is move i (engine/conventions.py).
- Symmetries (engine/symmetry.py): one permutation of cells and moves per sample; labels and
  branch_evs are permuted by the same move map, legal bits are recomputed from the permuted
  board; returns are invariant.
- Afterstates (`objective.value_state = "afterstate"`): the board after the recorded move,
  before its spawn (engine.batch.apply_moves, once at load), with target G_{t+1} =
  (G_t - r_t) / γ in float64 from the sidecar's return_raw and reward, then h(reward_scale
  G_{t+1}). The policy keeps the board before the move. With `Spec.siblings` (the ranking
  loss, and validation) the afterstates and rewards of all four moves (engine.batch.move_all,
  once at load: 56 bytes a row), permuted by the symmetries like per-move values; the
  recorded move's afterstate is then one of them.
- binned_ev classes of each move (design.md): ILLEGAL; FAILURE (a legal move valued at most
  `failure_value`); WINNER (a legal move as good as the best); else BIN_i of its disadvantage
  (best value - its value) with quantile edges fitted on training rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lab2048.data.dataset import Dataset, default_dataset, select_runs, teacher_moves
from lab2048.data.sidecar import open_sidecar
from lab2048.engine.batch import apply_moves, move_all
from lab2048.engine.conventions import (
    EV_FAILURE,
    EV_FIRST_BIN,
    EV_ILLEGAL,
    MOVE_BITS,
    Move,
    ev_winner,
)
from lab2048.engine.symmetry import CELL_PERMS, MOVE_INVERSE, MOVE_MAPS
from lab2048.errors import UserError
from lab2048.model import legal_moves
from lab2048.train.config import DataConfig
from lab2048.train.objectives import value_target

READ_CHUNK = 1 << 20  # rows read from the shards at a time


# -- the sources: dataset, sidecar, split -------------------------------------------------------


@dataclass
class Source:
    ds: Dataset
    meta: dict  # the sidecar's values.json
    values: list[np.ndarray]  # memory-mapped values shards
    offsets: np.ndarray  # global row of each shard's first row
    train_runs: np.ndarray
    val_runs: np.ndarray
    train_rows: np.ndarray  # global row indices, sorted
    val_rows: np.ndarray


def open_source(cfg: DataConfig) -> Source:
    root = Path(cfg.dataset) if cfg.dataset else default_dataset()
    ds = Dataset(root)
    sidecar = Path(cfg.sidecar) if cfg.sidecar else None
    if sidecar is None and root == default_dataset() and not (root / "values.json").exists():
        raise UserError("the embedded dataset has no sidecar: build one with `lab2048 "
                        "value-sidecar --output DIR` and set data.sidecar = DIR")
    meta, values = open_sidecar(ds, sidecar)
    selected = select_runs(root, cfg.where)
    if cfg.val_where:
        val = np.intersect1d(selected, select_runs(root, cfg.val_where))
    elif cfg.val_fraction > 0 and len(selected) > 1:
        n_val = min(max(1, round(cfg.val_fraction * len(selected))), len(selected) - 1)
        val = np.sort(np.random.default_rng(cfg.split_seed).choice(selected, n_val,
                                                                    replace=False))
    else:
        val = np.zeros(0, np.int64)
    train = np.setdiff1d(selected, val)
    if len(train) == 0:
        raise UserError(f"{root}: no training runs (data.where = {cfg.where!r}, "
                        f"data.val_where = {cfg.val_where!r})")
    run_ids = np.concatenate([np.asarray(s["run_id"]) for s in ds.shards])
    kept = _within_max_tile(ds, cfg.max_tile)
    val_rows = np.flatnonzero(np.isin(run_ids, val) & kept)
    if len(val_rows) > cfg.val_rows:
        val_rows = val_rows[np.linspace(0, len(val_rows) - 1, cfg.val_rows).astype(np.int64)]
    train_rows = np.flatnonzero(np.isin(run_ids, train) & kept)
    if len(train_rows) == 0:
        raise UserError(f"{root}: no training steps with data.max_tile = {cfg.max_tile}")
    return Source(ds, meta, values, np.cumsum([0] + [len(s) for s in ds.shards]), train, val,
                  train_rows, val_rows)


def _within_max_tile(ds: Dataset, max_tile: int) -> np.ndarray:
    """bool [rows]: the step's largest tile is at most max_tile (all True for 0)."""
    if max_tile == 0:
        return np.ones(sum(len(s) for s in ds.shards), bool)
    limit = max_tile.bit_length() - 1  # the exponent of max_tile
    kept = []
    for s in ds.shards:
        board = np.asarray(s["board"]).astype(np.uint64)
        top = np.zeros(len(board), np.uint64)
        for shift in range(0, 64, 4):
            np.maximum(top, (board >> np.uint64(shift)) & np.uint64(15), out=top)
        # a 2^16 tile keeps nibble 15 and sets its mask bit: exponent 16
        top[np.asarray(s["tile_65536_mask"]) != 0] = 16
        kept.append(top <= limit)
    return np.concatenate(kept)


# -- columns ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What the columns hold: the value target's definition and the optional columns."""

    value_target: str = "return_scaled"  # sidecar column used for board values
    reward_scale: float = 1.0  # of the head's h-space
    epsilon: float = 1e-3
    gamma: float = 0.997  # the sidecar's (afterstate targets)
    afterstate: bool = False
    siblings: bool = False  # afterstate: those of all four moves, with their rewards
    branch_evs: bool = False  # binned_ev
    teacher_label: bool = False  # a `label` column: the teacher's move (teacher_moves)


def read_columns(src: Source, rows: np.ndarray, spec: Spec) -> dict[str, torch.Tensor]:
    """CPU tensors of the given global rows (sorted): board int64, mask int16, move uint8,
    target and points float32, and after_board/after_mask, branch_evs when the spec asks."""
    parts: dict[str, list[np.ndarray]] = {}
    shard = np.searchsorted(src.offsets, rows, "right") - 1
    for s in np.unique(shard):
        local_all = rows[shard == s] - src.offsets[s]
        for a in range(0, len(local_all), READ_CHUNK):
            local = local_all[a:a + READ_CHUNK]
            for k, v in _read_chunk(src.ds.shards[s][local], src.values[s][local], spec).items():
                parts.setdefault(k, []).append(v)
    if not parts:  # no rows (no validation runs): empty columns of the right types
        parts = {k: [v] for k, v in _read_chunk(src.ds.shards[0][:0], src.values[0][:0],
                                                spec).items()}
    return {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}


def _read_chunk(st: np.ndarray, va: np.ndarray, spec: Spec) -> dict[str, np.ndarray]:
    bad = (st["run_id"] != va["run_id"]) | (st["step_index"] != va["step_index"])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UserError(f"sidecar row of run {int(va['run_id'][i])} step "
                        f"{int(va['step_index'][i])} is joined to run {int(st['run_id'][i])} "
                        f"step {int(st['step_index'][i])}")
    boards, masks = np.ascontiguousarray(st["board"]), np.ascontiguousarray(st["tile_65536_mask"])
    out = {"board": boards.view(np.int64), "mask": masks.view(np.int16),
           "move": np.ascontiguousarray(st["move_dir"])}
    g = va["return_raw"].astype(np.float64)
    if spec.afterstate and spec.siblings:
        moves = move_all(boards, masks)
        out["sib_board"], out["sib_mask"] = moves.boards.view(np.int64), moves.masks.view(np.int16)
        out["sib_reward"] = np.maximum(moves.rewards, 0).astype(np.float32)  # 2^17: no reward
    elif spec.afterstate:
        after, after_masks, _ = apply_moves(boards, out["move"].astype(np.int64), masks)
        out["after_board"], out["after_mask"] = after.view(np.int64), after_masks.view(np.int16)
    if spec.afterstate:
        g = (g - va["reward"].astype(np.float64)) / spec.gamma  # G_{t+1}
    kind = "return_raw" if spec.afterstate else spec.value_target
    target = value_target(spec, kind, g, va["return_scaled"])
    out["target"], out["points"] = target.astype(np.float32), g.astype(np.float32)
    if spec.branch_evs:
        out["branch_evs"] = np.ascontiguousarray(st["branch_evs"], np.float32)
    if spec.teacher_label:
        out["label"] = teacher_moves(st)
    return out



def nbytes(cols: dict[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in cols.values())


# -- decoding, legality, symmetries (tensor operations, any device) -------------------------------


def _tables() -> dict[str, torch.Tensor]:
    """The lookup tables of decoding and legality (see the functions below)."""
    x = np.arange(1 << 16)
    nibbles = np.stack([(x >> (12 - 4 * j)) & 15 for j in range(4)], 1)  # a row's 16 bits
    mask_bits = np.stack([(np.arange(16) >> j) & 1 for j in range(4)], 1)  # its mask nibble
    e = np.stack(np.unravel_index(np.arange(17 ** 4), (17,) * 4), 1)  # lines of 4 exponents

    def slides(to, frm):  # a tile can go from cell frm into its neighbour `to`
        return (((to == 0) & (frm != 0)) | ((to != 0) & (to == frm))).any(1).astype(np.int64)

    first, last = slides(e[:, :-1], e[:, 1:]), slides(e[:, 1:], e[:, :-1])
    # a line's contribution: a 1 in the 3-bit count field of each move that changes it; rows
    # (cells left to right) then columns (top down). Up and Left move toward the first cell.
    field = {m: 3 * int(m) for m in Move}
    rows = (first << field[Move.LEFT]) | (last << field[Move.RIGHT])
    cols = (first << field[Move.UP]) | (last << field[Move.DOWN])
    counts = np.arange(1 << 12)
    bits = sum((((counts >> field[m]) & 7) != 0).astype(np.int64) * MOVE_BITS[m] for m in Move)
    base = 17 ** np.arange(3, -1, -1)
    line_index = np.zeros((16, 8), np.float64)  # tokens @ line_index = base-17 line indices
    for r in range(4):
        for j in range(4):
            line_index[4 * r + j, r] = base[j]  # row r, cell j from the left
            line_index[4 * j + r, 4 + r] = base[j]  # column r, cell j from the top
    t = {"nibbles": nibbles.astype(np.uint8), "mask_bits": mask_bits.astype(np.uint8),
         "lines": np.concatenate([rows, cols]), "bits": bits, "line_index": line_index,
         "line_offset": np.repeat([0, 17 ** 4], 4),
         "row_shifts": np.array([48, 32, 16, 0]),  # row r: board bits 48 - 16r ..
         "mask_shifts": np.array([0, 4, 8, 12], np.int32),  # row r: mask bits 4r ..
         "cell_perms": np.array(CELL_PERMS), "move_maps": np.array(MOVE_MAPS),
         "move_inverse": np.array(MOVE_INVERSE)}
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items()}


_TABLES = _tables()
_on: dict[tuple[str, torch.device], torch.Tensor] = {}


def _table(name: str, device: torch.device) -> torch.Tensor:
    """A lookup table on `device` (copied there once)."""
    key = (name, device)
    if key not in _on:
        _on[key] = _TABLES[name].to(device)
    return _on[key]


def decode(board: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 16] exponents of int64 boards [B] and int16 tile_65536 masks [B]: cell i is
    nibble (60 - 4i) of the board, + 1 where mask bit i is set (a 2^16 tile keeps nibble 15)."""
    d = board.device
    rows = (board[:, None] >> _table("row_shifts", d)) & 0xFFFF
    mask_rows = (mask.to(torch.int32)[:, None] >> _table("mask_shifts", d)) & 15
    cells = (_table("nibbles", d).index_select(0, rows.view(-1))
             + _table("mask_bits", d).index_select(0, mask_rows.view(-1)))
    return cells.view(-1, 16)


def exponent_legal_masks(tokens: torch.Tensor) -> torch.Tensor:
    """int64 [B] legal-move bitmask (MOVE_BITS) of exponents [B, 16], on their device: the
    tensor form of engine.arrays.exponent_legal_masks. Each row and column is looked up as a
    line of 4 (see the module docstring); the lines' move counts add up, and a move is legal
    where its count is not 0."""
    d = tokens.device
    # float64: exact for these integers, and never TF32 (which would round the indices)
    lines = (tokens.double() @ _table("line_index", d)).long() + _table("line_offset", d)
    counts = _table("lines", d).index_select(0, lines.view(-1)).view(-1, 8).sum(1)
    return _table("bits", d).index_select(0, counts)


def symmetry(cells: torch.Tensor, sym: torch.Tensor) -> torch.Tensor:
    """Cells [B, 16] with symmetry sym[i] (0..7) applied to row i."""
    return cells.gather(1, _table("cell_perms", cells.device).index_select(0, sym))


def symmetry_moves(move: torch.Tensor, sym: torch.Tensor) -> torch.Tensor:
    return _table("move_maps", move.device)[sym, move]


def symmetry_per_move(x: torch.Tensor, sym: torch.Tensor) -> torch.Tensor:
    """Per-move values [B, 4] under the symmetries: new move j holds old move inverse[j]'s."""
    return x.gather(1, _table("move_inverse", x.device).index_select(0, sym))


# -- batches ------------------------------------------------------------------------------------


@dataclass
class Batch:
    tokens: torch.Tensor  # int64 [B, 16] exponents of the board before the move
    legal: torch.Tensor  # int64 [B] legal-move bits, recomputed from tokens
    move: torch.Tensor  # int64 [B] the recorded move (its afterstate is the value's)
    label: torch.Tensor  # int64 [B] the policy's target move: `move`, or the teacher's
    target: torch.Tensor  # float32 [B] the value head's h-space target
    points: torch.Tensor  # float32 [B] the return it stands for, in points
    after: torch.Tensor | None = None  # int64 [B, 16] afterstate exponents
    branch_evs: torch.Tensor | None = None  # float32 [B, 4]
    siblings: torch.Tensor | None = None  # int64 [B, 4, 16] afterstates of the four moves
    sibling_rewards: torch.Tensor | None = None  # float32 [B, 4] their rewards (0: illegal)


def make_batch(cols: dict[str, torch.Tensor], sym: torch.Tensor | None) -> Batch:
    """A Batch of gathered columns (all on one device), with symmetries applied if given."""
    tokens = decode(cols["board"], cols["mask"])
    move = cols["move"].to(torch.int64)
    label = cols["label"].to(torch.int64) if "label" in cols else move
    after = decode(cols["after_board"], cols["after_mask"]) if "after_board" in cols else None
    evs = cols.get("branch_evs")
    sib, sib_r = None, cols.get("sib_reward")
    if sib_r is not None:
        sib = decode(cols["sib_board"].reshape(-1), cols["sib_mask"].reshape(-1)).view(-1, 4, 16)
    if sym is not None:
        sym = sym.to(torch.int64)
        tokens, move, label = (symmetry(tokens, sym), symmetry_moves(move, sym),
                               symmetry_moves(label, sym))
        after = symmetry(after, sym) if after is not None else None
        evs = symmetry_per_move(evs, sym) if evs is not None else None
        if sib is not None:  # the cells of each afterstate, then the order of the moves
            sib = symmetry(sib.view(-1, 16), sym.repeat_interleave(4)).view(-1, 4, 16)
            order = _table("move_inverse", sib.device).index_select(0, sym)
            sib = sib.gather(1, order[:, :, None].expand(-1, -1, 16))
            sib_r = symmetry_per_move(sib_r, sym)
    if sib is not None:
        sib = sib.to(torch.int64)
        after = sib[torch.arange(len(move), device=sib.device), move]
    return Batch(tokens.to(torch.int64), exponent_legal_masks(tokens), move, label,
                 cols["target"],
                 cols["points"], after.to(torch.int64) if after is not None else None, evs,
                 sib, sib_r)


def _seed(*words: int) -> int:
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0] >> 1)


class Batches:
    """The training batches of a set of columns: `get(step)` (see the module docstring)."""

    def __init__(self, cols: dict[str, torch.Tensor], batch_size: int, seed: int,
                 device: torch.device, *, augment: bool = True, placement: str = "auto",
                 rank: int = 0, world: int = 1) -> None:
        n = len(cols["move"])
        if n < batch_size:
            raise UserError(f"{n} training steps, fewer than one batch of {batch_size}")
        if batch_size % world:
            raise UserError(f"train.batch_size {batch_size} must divide by the {world} "
                            "processes")
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.augment, self.rank, self.world = augment, rank, world
        self.batches_per_epoch = n // batch_size
        per_row = 9  # the epoch's permutation and symmetries
        need = nbytes(cols) + per_row * n
        if placement == "auto":
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else need * 2
            placement = "device" if need <= free // 2 else "host"
        self.placement = placement
        self.on_device = placement == "device"
        pinned = device.type == "cuda"
        if self.on_device:
            self.cols = {k: v.to(device) for k, v in cols.items()}
        else:
            self.cols = {k: v.pin_memory() if pinned else v for k, v in cols.items()}
        self._epoch, self._perm, self._sym = -1, None, None
        # host placement: two pinned buffers, filled alternately, copied on a side stream
        self._ahead: tuple[int, dict[str, torch.Tensor], torch.cuda.Event | None] | None = None
        b = batch_size // world
        self._buffers = [] if self.on_device else [
            {k: torch.empty((b, *v.shape[1:]), dtype=v.dtype, pin_memory=pinned)
             for k, v in {**cols, "sym": torch.zeros(0, dtype=torch.uint8)}.items()}
            for _ in range(2)]
        self._events: list[torch.cuda.Event | None] = [None, None]
        self._stream = torch.cuda.Stream(device) if pinned and not self.on_device else None

    def rows(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(row indices, symmetries) of this rank's slice of batch `step`, where the columns
        live (a pure function of seed and step)."""
        epoch, pos = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(_seed(self.seed, epoch))
            dtype = torch.int32 if self.n < 2 ** 31 else torch.int64
            perm = torch.randperm(self.n, generator=gen, dtype=dtype)
            sym = torch.randint(0, 8, (self.n,), generator=gen, dtype=torch.uint8)
            where = self.device if self.on_device else torch.device("cpu")
            self._perm, self._sym, self._epoch = perm.to(where), sym.to(where), epoch
        b = self.batch_size // self.world
        a = pos * self.batch_size + self.rank * b
        return self._perm[a:a + b].to(torch.int64), self._sym[a:a + b]

    def get(self, step: int) -> Batch:
        """Training batch `step` on the device."""
        if self.on_device:
            idx, sym = self.rows(step)
            cols = {k: v[idx] for k, v in self.cols.items()}
        else:
            ahead = self._ahead if self._ahead and self._ahead[0] == step else self._copy(step)
            _, cols, event = ahead
            if event is not None:  # this step's work waits for its copy, and owns its memory
                stream = torch.cuda.current_stream(self.device)
                stream.wait_event(event)
                for v in cols.values():
                    v.record_stream(stream)
            self._ahead = self._copy(step + 1)  # its copy overlaps this step's compute
            sym = cols.pop("sym")
        return make_batch(cols, sym if self.augment else None)

    def _copy(self, step: int):
        """Gather batch `step` into a pinned buffer; start its copy to the device (on CUDA, on
        a side stream, returning the event that marks its end)."""
        slot = step % 2
        if self._events[slot] is not None:
            self._events[slot].synchronize()  # the buffer's previous copy has landed
        idx, sym = self.rows(step)
        buf = self._buffers[slot]
        for k, v in self.cols.items():
            torch.index_select(v, 0, idx, out=buf[k])
        buf["sym"].copy_(sym)
        if self._stream is None:  # CPU: the same steps, the "copy" detached from the buffer
            return step, {k: v.clone() for k, v in buf.items()}, None
        with torch.cuda.stream(self._stream):
            out = {k: v.to(self.device, non_blocking=True) for k, v in buf.items()}
            event = torch.cuda.Event()
            event.record(self._stream)
        self._events[slot] = event
        return step, out, event


def val_batches(cols: dict[str, torch.Tensor], batch_size: int):
    """Unaugmented batches of the validation columns (already on the device), in order."""
    n = len(cols["move"])
    for a in range(0, n, batch_size):
        yield make_batch({k: v[a:a + batch_size] for k, v in cols.items()}, None)


def sample_rows(cols: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """Up to n rows evenly spaced over the columns (for the prior and for fitting bins)."""
    total = len(cols["move"])
    idx = torch.from_numpy(np.linspace(0, total - 1, min(n, total)).astype(np.int64))
    return {k: v[idx.to(v.device)] for k, v in cols.items()}


# -- binned_ev ----------------------------------------------------------------------------------


def _gaps(branch_evs: torch.Tensor, legal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ok = legal_moves(legal)
    evs = torch.where(ok, branch_evs, -torch.inf)
    return ok, evs.max(1, keepdim=True).values - evs


def ev_classes(branch_evs: torch.Tensor, legal: torch.Tensor, edges: torch.Tensor,
               failure_value: float) -> torch.Tensor:
    """int64 [B, 4] binned_ev class of every move (engine/conventions.py): EV_ILLEGAL,
    EV_FAILURE, EV_FIRST_BIN + i for BIN_i, ev_winner(bins) (see the module docstring)."""
    ok, gap = _gaps(branch_evs, legal)
    bins = len(edges) - 1
    edges = edges.to(gap.device, gap.dtype)
    cls = EV_FIRST_BIN + (torch.searchsorted(edges, gap.contiguous(), right=True) - 1).clamp(
        0, bins - 1)
    cls = torch.where(gap <= 0, ev_winner(bins), cls)
    cls = torch.where(branch_evs <= failure_value, EV_FAILURE, cls)
    return torch.where(ok, cls, EV_ILLEGAL)


def fit_edges(branch_evs: torch.Tensor, legal: torch.Tensor, bins: int,
              failure_value: float) -> np.ndarray:
    """k + 1 strictly increasing quantile edges of the disadvantage of legal, non-best,
    non-failing moves."""
    ok, gap = _gaps(branch_evs, legal)
    keep = ok & (gap > 0) & (branch_evs > failure_value)
    d = gap[keep].double().cpu().numpy()
    if len(d) < bins:
        raise UserError(f"binned_ev: only {len(d)} moves with a disadvantage in the training "
                        f"runs, too few for {bins} bins (does the dataset hold per-move values?)")
    edges = np.quantile(d, np.linspace(0, 1, bins + 1))
    edges[0] = 0.0
    for i in range(1, len(edges)):  # ties (repeated values) -> nudge to strictly increasing
        edges[i] = max(edges[i], np.nextafter(edges[i - 1], np.inf) + 1e-9 * abs(edges[i - 1]))
    return edges
