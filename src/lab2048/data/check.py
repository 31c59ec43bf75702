"""`lab2048 check`: validate a packed dataset and summarise it.

Checks, streamed shard by shard (a dataset never has to fit in RAM):
- the shards load with the exact 46-byte dtype (Dataset does this);
- each run's rows are contiguous with step_index 0..n-1, and `runs.steps` matches;
- each recorded move is legal on its board;
- consecutive boards follow: board[t+1] is move_dir applied to board[t] plus exactly one new
  2 or 4 on a cell the move left empty (the 65536 mask follows the move too);
- max_rank is the board's highest exponent, 65536 mask bits sit on nibble-15 cells, valuation
  types are registered, and the sum of a run's rewards equals `runs.max_score`;
- every row of a run holds the run's seed (`runs.seed` truncated to 32 bits), branch_evs are
  finite, a shard holds no bytes after its array, and the session table is readable;
- legality recomputed from the board is compared with `ev_legal`: disagreements are counted
  and reported, not failed (some existing packs derive ev_legal from non-null teacher values).

Problems are collected per run; `run` prints up to a few per run and returns 1 if any.

Choices
- The rules that `value-sidecar` must enforce too live here once: `check_rows` (legality,
  move plus one spawn, step order), `is_one_spawn` (also `pack`'s), `runs_table_problems`
  and `file_problems`; the sidecar builder refuses a dataset they reject.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from lab2048.data.dataset import Dataset
from lab2048.engine import kernels as K
from lab2048.errors import UserError

# per-row problem bits
BAD_MASK, ILLEGAL_MOVE, BAD_CHAIN, BAD_MAX_RANK, EV_LEGAL_DIFFERS, BAD_ORDER = 1, 2, 4, 8, 16, 32
_ROW_PROBLEMS = {
    BAD_MASK: "tile_65536_mask marks a cell that is not 15",
    ILLEGAL_MOVE: "recorded move is illegal",
    BAD_CHAIN: "next board is not the move plus one spawn",
    BAD_MAX_RANK: "max_rank is not the highest exponent",
}


_LOW_BITS = np.uint64(0x1111_1111_1111_1111)


@njit(cache=True, nogil=True)
def is_one_spawn(after, after_mask, nxt, nxt_mask):
    """nxt equals `after` with exactly one empty cell now holding exponent 1 or 2: the rule
    that links a board after its move to the next recorded board."""
    if after_mask != nxt_mask:
        return False
    diff = after ^ nxt
    one = np.uint64(1)
    # the lowest bit of each nibble that differs; exactly one such bit may be set
    marks = (diff | (diff >> one) | (diff >> np.uint64(2)) | (diff >> np.uint64(3))) & _LOW_BITS
    if marks == 0 or marks & (marks - one) != 0:
        return False
    cell = marks * K.NIBBLE
    new = nxt & cell
    return after & cell == 0 and (new == marks or new == marks * np.uint64(2))


@njit(cache=True, nogil=True)
def follows_by_one_spawn(after, after_masks, nxt, nxt_masks):
    """Per row: is_one_spawn(after[i], after_masks[i], nxt[i], nxt_masks[i]) (bool [N])."""
    out = np.empty(len(after), np.bool_)
    for i in range(len(after)):
        out[i] = is_one_spawn(after[i], np.int64(after_masks[i]), nxt[i], np.int64(nxt_masks[i]))
    return out


@njit(cache=True, nogil=True)
def row_checks_kernel(run_id, step_index, board, mask, move_dir, ev_legal, max_rank,
                      move_xor, line_reward, full, flags, rewards):
    """Per-row problem bits and rewards of one chunk; the chain check links row i to row i+1
    when both belong to the same run with consecutive steps (the caller links chunks).

    With full=False only what rewards need is checked (mask, legality of the move, chain);
    ev_legal and max_rank are not looked at. BAD_ORDER marks a row whose step_index does not
    follow the row before it in the chunk (previous + 1 in the same run, 0 in a new one).
    `rewards` may be any numeric array (a float32 column of an output, for instance)."""
    n = len(board)
    for i in range(n):
        b = board[i]
        m = np.int64(mask[i])
        d = np.int64(move_dir[i])
        f = 0
        if i > 0:
            first = run_id[i] != run_id[i - 1]
            if (first and step_index[i] != 0) or (
                    not first and step_index[i] != step_index[i - 1] + 1):
                f = BAD_ORDER
        reward = np.int64(0)
        if not K.mask_is_valid(b, m):
            f |= BAD_MASK
        elif d > 3:
            f |= ILLEGAL_MOVE
        else:
            if full:
                legal = K.legal_mask(b, m, move_xor, line_reward)
                if legal != np.int64(ev_legal[i]):
                    f |= EV_LEGAL_DIFFERS
                if K.highest_exponent(b, m) != np.int64(max_rank[i]):
                    f |= BAD_MAX_RANK
            nb, nm, reward = K.move(b, m, d, move_xor, line_reward)
            if not K.is_legal(b, m, nb, nm, reward):
                f |= ILLEGAL_MOVE
            elif reward == K.TILE_OVERFLOW:
                reward = 0
                if i + 1 < n and run_id[i + 1] == run_id[i]:
                    f |= BAD_CHAIN  # a 2^17 move ends the game: nothing may follow
            elif (i + 1 < n and run_id[i + 1] == run_id[i]
                  and step_index[i + 1] == step_index[i] + 1
                  and not is_one_spawn(nb, nm, board[i + 1], np.int64(mask[i + 1]))):
                f |= BAD_CHAIN
        flags[i] = f
        rewards[i] = reward


@dataclass
class CheckReport:
    path: Path
    rows: int = 0
    shards: int = 0
    runs: int = 0
    problems: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    ev_legal_differs: int = 0
    valuation_counts: Counter = field(default_factory=Counter)
    scores: np.ndarray | None = None
    highest_tiles: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _segments(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and values of the maximal runs of equal ids."""
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1]))) if len(ids) else \
        np.zeros(0, np.int64)
    return starts, ids[starts]


def check_dataset(root: Path, chunk_rows: int = 1 << 20, progress=None) -> CheckReport:
    ds = Dataset(root)
    report = CheckReport(path=Path(root), rows=ds.num_rows, shards=len(ds.shards),
                         runs=len(ds.runs["id"]))
    report.problems[-1].extend(file_problems(ds))
    move_xor, line_reward = K.tables()
    known_types = set(ds.valuation_types.values())
    names = {v: k for k, v in ds.valuation_types.items()}
    table_ids = ds.runs["id"]
    table_seeds = ds.runs["seed"] & 0xFFFFFFFF
    seen: dict[int, list[int]] = {}  # run id -> [rows, reward sum]
    order: list[int] = []  # run ids in order of appearance
    prev = None  # last row of the previous chunk, to link chunks
    for _, chunk in ds.iter_chunks(chunk_rows):
        if progress is not None:
            progress(len(chunk))
        chunk = np.ascontiguousarray(chunk)
        if prev is not None:  # link the chunk boundary with a two-row check
            pair = np.concatenate((prev, chunk[:1]))
            pair_flags, _ = check_rows(pair, move_xor, line_reward)
            if pair_flags[0] & BAD_CHAIN:
                report.problems[int(pair[0]["run_id"])].append(
                    f"step {int(pair[0]['step_index'])}: {_ROW_PROBLEMS[BAD_CHAIN]}")
        flags, rewards = check_rows(chunk, move_xor, line_reward)
        ids = chunk["run_id"].astype(np.int64)
        steps = chunk["step_index"].astype(np.int64)
        starts, values = _segments(ids)
        ends = np.append(starts[1:], len(ids))
        for s, e, rid in zip(starts, ends, values, strict=True):
            rid = int(rid)
            expect = 0
            if rid in seen:
                if order[-1] != rid:
                    report.problems[rid].append("rows are not contiguous")
                    continue
                expect = seen[rid][0]
            else:
                seen[rid] = [0, 0]
                order.append(rid)
            want = np.arange(expect, expect + (e - s))
            if not np.array_equal(steps[s:e], want):
                bad = int(np.flatnonzero(steps[s:e] != want)[0])
                report.problems[rid].append(
                    f"step_index {int(steps[s + bad])} where {int(want[bad])} was expected")
            seen[rid][0] += e - s
            seen[rid][1] += int(rewards[s:e].sum())
        report.ev_legal_differs += int(np.count_nonzero(flags & EV_LEGAL_DIFFERS))
        for bit, text in _ROW_PROBLEMS.items():
            for i in np.flatnonzero(flags & bit):
                report.problems[int(ids[i])].append(f"step {int(steps[i])}: {text}")
        if len(table_ids):  # every row holds its run's seed (unlisted runs are reported below)
            at = np.minimum(np.searchsorted(table_ids, ids), len(table_ids) - 1)
            for i in np.flatnonzero((table_ids[at] == ids) & (chunk["seed"] != table_seeds[at])):
                report.problems[int(ids[i])].append(
                    f"step {int(steps[i])}: seed {int(chunk['seed'][i])}, runs.seed says "
                    f"{int(table_seeds[at[i]])}")
        for i in np.flatnonzero(~np.isfinite(chunk["branch_evs"]).all(axis=1)):
            report.problems[int(ids[i])].append(f"step {int(steps[i])}: branch_evs "
                                                f"{chunk['branch_evs'][i].tolist()} are not "
                                                "finite")
        vt = chunk["valuation_type"]
        for t, count in zip(*np.unique(vt, return_counts=True), strict=True):
            report.valuation_counts[names.get(int(t), f"unregistered id {int(t)}")] += int(count)
            if int(t) not in known_types:
                report.problems[-1].append(
                    f"valuation_type {int(t)} is not in valuation_types.json")
        prev = chunk[-1:].copy() if len(chunk) else prev
    ids = np.array(order, np.int64)
    problems, mismatched = runs_table_problems(ds, ids, np.array([seen[r][0] for r in order]),
                                               np.array([seen[r][1] for r in order]))
    for rid, text in problems:
        report.problems[rid].append(text)
    table = dict(zip(ds.runs["id"].tolist(), ds.runs["max_score"].tolist(), strict=True))
    for rid in mismatched:
        report.problems[rid].append(f"runs.max_score = {table[rid]:,} but the moves earn "
                                    f"{seen[rid][1]:,}")
    if not report.problems[-1]:
        del report.problems[-1]
    report.scores = ds.runs["max_score"]
    report.highest_tiles = ds.runs["highest_tile"]
    return report


def file_problems(ds: Dataset) -> list[str]:
    """Problems of the files themselves: bytes after a shard's array; an unreadable session
    table is a UserError (raised by `ds.session`)."""
    _ = ds.session
    problems = []
    for path, shard in zip(ds.shard_paths, ds.shards, strict=True):
        size = path.stat().st_size
        end = getattr(shard, "offset", 0) + shard.nbytes
        if size != end:
            problems.append(f"{path.name}: {size - end:,} bytes after the array")
    return problems


def runs_table_problems(ds: Dataset, ids: np.ndarray, rows: np.ndarray,
                        sums: np.ndarray) -> tuple[list[tuple[int, str]], list[int]]:
    """The runs found in the shards (ids in order of appearance, their row counts and reward
    sums) against metadata.db's runs table: ([(run id, problem)], ids whose reward sum is not
    runs.max_score). Problems: a listed run without rows, runs.steps not the row count, rows
    of an unlisted run."""
    table = ds.runs
    problems = []
    listed = np.isin(table["id"], ids)
    for rid in table["id"][~listed]:
        problems.append((int(rid), "listed in metadata.db but has no rows"))
    known = np.isin(ids, table["id"])
    for rid in ids[~known]:
        problems.append((int(rid), "has rows but no entry in metadata.db runs"))
    at = np.searchsorted(table["id"], ids[known])
    steps, score = table["steps"][at], table["max_score"][at]
    for rid, want, got in zip(ids[known][steps != rows[known]], steps[steps != rows[known]],
                              rows[known][steps != rows[known]], strict=True):
        problems.append((int(rid), f"runs.steps = {int(want)} but {int(got)} rows"))
    return problems, sorted(ids[known][score != sums[known]].tolist())


def refuse_problems(path: Path, problems: list[tuple[int, str]]) -> None:
    """A UserError naming the first problem (and how many there are), if any."""
    if problems:
        rid, text = problems[0]
        more = f" (and {len(problems) - 1} more; see `lab2048 check`)" if len(problems) > 1 else ""
        where = "" if rid < 0 else f"run {rid}: "
        raise UserError(f"{path}: {where}{text}{more}")


def check_rows(rows: np.ndarray, move_xor, line_reward, full: bool = True,
               rewards: np.ndarray | None = None,
               flags: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(problem bits, rewards) of consecutive step rows (see row_checks_kernel); rewards go
    to `rewards` when given (any numeric array, e.g. an output column), else to a new int64,
    and the bits to `flags` when given (int64), else to a new array."""
    flags = np.zeros(len(rows), np.int64) if flags is None else flags
    rewards = np.zeros(len(rows), np.int64) if rewards is None else rewards
    row_checks_kernel(rows["run_id"], rows["step_index"], rows["board"],
                      rows["tile_65536_mask"], rows["move_dir"], rows["ev_legal"],
                      rows["max_rank"], move_xor, line_reward, full, flags, rewards)
    return flags, rewards


def format_report(report: CheckReport, max_per_run: int = 5) -> str:
    lines = [f"{report.path}: {report.runs:,} runs, {report.rows:,} steps in "
             f"{report.shards} shard{'s' * (report.shards != 1)}"]
    if report.scores is not None and len(report.scores):
        s = report.scores
        q = np.percentile(s, [0, 10, 50, 90, 100])
        lines.append(f"score: mean {s.mean():,.0f}, min {q[0]:,.0f}, p10 {q[1]:,.0f}, "
                     f"median {q[2]:,.0f}, p90 {q[3]:,.0f}, max {q[4]:,.0f}")
        tiles, counts = np.unique(report.highest_tiles, return_counts=True)
        lines.append("highest tile: " + ", ".join(
            f"{int(t)}: {c} ({100 * c / len(s):.1f}%)" for t, c in zip(tiles, counts,
                                                                       strict=True)))
    if report.valuation_counts:
        lines.append("valuation types: " + ", ".join(
            f"{k}: {v:,} steps" for k, v in sorted(report.valuation_counts.items())))
    lines.append(f"ev_legal differs from the board's legal moves on "
                 f"{report.ev_legal_differs:,} steps")
    if report.ok:
        lines.append("OK: no problems found")
        return "\n".join(lines)
    total = sum(len(v) for v in report.problems.values())
    lines.append(f"PROBLEMS: {total:,} in {len(report.problems):,} runs")
    for rid in sorted(report.problems):
        items = report.problems[rid]
        where = "dataset" if rid < 0 else f"run {rid}"
        for text in items[:max_per_run]:
            lines.append(f"  {where}: {text}")
        if len(items) > max_per_run:
            lines.append(f"  {where}: ... and {len(items) - max_per_run:,} more")
    return "\n".join(lines)
