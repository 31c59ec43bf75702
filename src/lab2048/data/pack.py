"""`lab2048 pack`: import Macroxue games into a packed dataset (docs/design.md).

Input formats, one game per file (or file pair), in a directory searched non-recursively and
taken in file-name order:
- "macroxue-jsonl": NAME.jsonl.gz (a JSON object per move) with NAME.meta.json beside it;
- "macroxue-text": NAME.txt or NAME.txt.gz, the macroxue/2048-ai player's `-v` output (a single
  file is accepted too). Read and replayed with `lab2048.data.macroxue_text`.

Choices
- Games are read and checked in worker processes (`spawn`, one game per task, a bounded window
  of tasks in flight; workers=1 stays in-process) and come back in file order: the dataset is
  byte-identical for any worker count. Only the parent writes, through DatasetWriter (atomic
  publish; run ids 1, 2, ... over the packed games in file order; runs.source = file name).
  Workers die with the parent (`workers.process_pool`). --overwrite replaces only a dataset,
  never the input directory or one that contains it (`io.claim_dir`); a full disk is one line
  and leaves no output.
- A game that cannot be read or does not add up is skipped and reported as (file name, one-line
  reason, with the line number where there is one); the others are packed. Packing nothing is
  a UserError, so an existing dataset is never replaced by an empty one.
- Each game is checked whole and vectorised with the batch engine: step_index 0..n-1, one seed,
  max_rank = the board's highest exponent, the chosen move legal on its board, each board the
  previous one after its move plus one spawned 2 or 4 (a 2^17 merge may only end the game).
- The score is the exact sum of the engine's rewards (DESIGN.md): runs.max_score is that sum,
  and a log whose meta score (or printed final score) differs is skipped as inconsistent, since
  either the moves or the score are wrong. highest_tile covers every board of the game and the
  board the last move leads to (before its unknown spawn).
- jsonl values: a null branch is 0.0 with its legal bit cleared. Search rows keep ev_legal as
  the bits of their non-null branches, as existing packs do; tuple rows (probabilities, where
  0.0 on a legal move is a real value) take ev_legal from the board, and a non-zero value on a
  move the board forbids is set to 0.0. Rows whose logged values disagree with the board's
  legality are counted (PackReport.ev_legal_differs), not skipped. meta.json must hold its
  eight DESIGN.md fields; num_moves, seed and score are checked, max_tile, max_rank and
  sum_tile describe a final board the log does not hold and are not. end_reason is
  "tile-limit" after a 2^17 merge, "no-moves" when the game can be over after the last move
  (`engine.can_end_after`: some spawn leaves no legal move), else "" (cut short or not
  recorded).
- text: no per-move values (branch_evs 0.0); ev_legal from the board; valuation_type from the
  move's source; every printed score must agree with the replay and the final board must have
  no legal move (`replay().agrees`).
- board_eval is the teacher's static evaluation (`lab2048.teacher.board_evals`).
- With --ray ADDRESS each game is a Ray task (`lab2048.scale`) fed the bytes of its files, in
  the same window and order, so the dataset is the same bytes as a local pack.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import math
import os
import time
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lab2048.data.check import follows_by_one_spawn
from lab2048.data.dataset import DEFAULT_SHARD_ROWS, VALUATION_TYPES, DatasetWriter, Run, make_rows
from lab2048.data.macroxue_text import read_text_game, replay
from lab2048.data.workers import process_pool
from lab2048.engine.batch import (
    apply_moves,
    can_end_after,
    from_exponents,
    highest_exponents,
    legal_masks,
)
from lab2048.engine.conventions import MOVES, EndReason
from lab2048.engine.kernels import TILE_OVERFLOW
from lab2048.errors import UserError
from lab2048.io import progress_bar
from lab2048.teacher import board_evals

FORMATS = ("macroxue-jsonl", "macroxue-text")
_SUFFIXES = {"macroxue-jsonl": (".jsonl.gz", ".meta.json"), "macroxue-text": (".txt", ".txt.gz")}
_LOG, _META = ".jsonl.gz", ".meta.json"
_BRANCHES = tuple(move.name.lower() for move in MOVES)  # UDLR: the jsonl keys
_MOVES = {name: i for i, name in enumerate(_BRANCHES)}
_BITS = np.array([move.bit for move in MOVES], np.uint8)
_LINE_KEYS = ("seed", "step_index", "max_rank", "move", "valuation", "board", "branch_evs")
_META_KEYS = ("seed", "depth", "num_moves", "score", "max_tile", "max_rank", "sum_tile",
              "seconds")
_SEED_LIMIT = 1 << 63  # runs.seed is a signed 64-bit SQLite integer
_SEARCH = VALUATION_TYPES["search"]


@dataclass
class PackReport:
    games: int  # games packed
    steps: int  # rows written
    skipped: list[tuple[str, str]]  # (file name, one-line reason) per skipped game
    out: Path
    ev_legal_differs: int = 0  # rows whose logged values disagree with the board's legal moves
    seconds: float = 0.0


@dataclass
class _Packed:
    """A worker's finished game: rows and run carry id 0, the parent numbers them."""

    rows: np.ndarray
    run: Run
    ev_legal_differs: int = 0


class _Skip(Exception):
    """A game that cannot be packed; the message is the reason."""


# ---------------------------------------------------------------------------------------------
# The parent: list the games, farm them out, write in order


def pack(input: Path, out: Path, *, fmt: str = "macroxue-jsonl", workers: int = 0,
         shard_rows: int = DEFAULT_SHARD_ROWS, overwrite: bool = False,
         progress: bool = True, ray: str = "") -> PackReport:
    """Pack the games under `input` into the dataset directory `out` (on the Ray cluster at
    `ray` when given, else in `workers` local processes)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown input format {fmt!r} (expected {' or '.join(FORMATS)})")
    if workers < 0:
        raise UserError(f"workers must be 0 (all cores) or more, got {workers}")
    input, out = Path(input), Path(out)
    games = _game_files(input, fmt)
    in_flight, workers = workers, min(workers or os.cpu_count() or 1, len(games))
    report = PackReport(games=0, steps=0, skipped=[], out=out)
    start = time.perf_counter()
    session = {"source": fmt, "input": input.resolve().name}
    with DatasetWriter(out, session=session, overwrite=overwrite, shard_rows=shard_rows,
                       valuation_types=VALUATION_TYPES, inputs=(input,)) as writer, \
            contextlib.closing(_results_on_ray(fmt, games, ray, in_flight) if ray
                               else _results(fmt, games, workers)) as results, \
            progress_bar(progress, total=len(games), unit="game", desc="pack") as bar:
        for path, result in zip(games, results, strict=True):
            if isinstance(result, str):
                report.skipped.append((path.name, result))
            else:
                _add(writer, report, result)
            bar.update(1)
            rate = report.steps / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{report.steps:,} steps, {rate:,.0f} steps/s", refresh=False)
        if report.games == 0:
            name, reason = report.skipped[0]
            raise UserError(f"{input}: none of its {len(games)} game(s) could be packed "
                            f"(first: {name}: {reason})")
        writer.session.update(games=str(report.games), skipped=str(len(report.skipped)),
                              ev_legal_differs=str(report.ev_legal_differs))
    report.seconds = time.perf_counter() - start
    return report


def _add(writer: DatasetWriter, report: PackReport, packed: _Packed) -> None:
    report.games += 1
    packed.rows["run_id"] = report.games
    writer.add_run(replace(packed.run, id=report.games), packed.rows)
    report.steps += len(packed.rows)
    report.ev_legal_differs += packed.ev_legal_differs


def _game_files(input: Path, fmt: str) -> list[Path]:
    """The games in run order; for jsonl, NAME.jsonl.gz for every NAME with a log or a meta."""
    if not input.exists():
        raise UserError(f"{input}: no such file or directory")
    if input.is_file() and fmt == "macroxue-text":
        return [input]
    if not input.is_dir():
        raise UserError(f"{input}: not a directory (expected a directory of {fmt} games)")
    try:
        names = [p.name for p in input.iterdir()
                 if p.name.endswith(_SUFFIXES[fmt]) and p.is_file()]
    except OSError as e:
        raise UserError(f"{input}: cannot list ({e.strerror})") from None
    if fmt == "macroxue-jsonl":
        names = {n.removesuffix(_LOG).removesuffix(_META) + _LOG for n in names}
    if not names:
        patterns = " or ".join(f"*{s}" for s in _SUFFIXES[fmt])
        raise UserError(f"{input}: holds no {fmt} game files ({patterns})")
    return [input / n for n in sorted(names)]


def _results(fmt: str, paths: list[Path], workers: int) -> Iterator[_Packed | str]:
    """Each game's result (a skip reason as a str) in the order of `paths`."""
    if workers <= 1:
        for path in paths:
            yield _pack_one(fmt, path)
        return
    todo = iter(paths)
    pool = process_pool(workers)
    try:
        window = deque(pool.submit(_pack_one, fmt, p) for p in itertools.islice(todo, 2 * workers))
        while window:
            future = window.popleft()
            if (path := next(todo, None)) is not None:
                window.append(pool.submit(_pack_one, fmt, path))
            try:
                result = future.result()
            except BrokenProcessPool:
                raise UserError("a worker process stopped unexpectedly (killed, out of memory, "
                                "or failed to start); try fewer workers") from None
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- Ray (lab2048.scale): one task per game; the driver reads the files and sends their bytes,
# so the nodes need no shared filesystem; results come back in file order as above
def _results_on_ray(fmt: str, paths: list[Path], address: str,
                    in_flight: int) -> Iterator[_Packed | str]:
    from lab2048.scale import cluster, task_map

    def shipped():
        for path in paths:
            names = ([path.name, path.name.removesuffix(_LOG) + _META]
                     if fmt == "macroxue-jsonl" else [path.name])
            files = {}
            for name in names:
                try:
                    files[name] = (path.parent / name).read_bytes()
                except FileNotFoundError:
                    pass  # the worker reports it as the local path does
                except OSError as e:
                    files[name] = OSError(e.errno, e.strerror)
            yield fmt, path.name, files

    with cluster(address) as ray:
        for _, result in task_map(ray, _pack_shipped, shipped(), ordered=True, in_flight=in_flight,
                                  what=lambda i: str(paths[i])):
            if isinstance(result, _Packed):  # rows from Ray's object store are read-only
                result = replace(result, rows=result.rows.copy())
            yield result


def _pack_shipped(fmt: str, name: str, files: dict[str, bytes | OSError]) -> _Packed | str:
    """Ray task: _pack_one on the game's files, written to a temporary directory."""
    import tempfile

    for other, data in files.items():
        if isinstance(data, OSError):
            return f"{other}: cannot read ({data.strerror})"
    with tempfile.TemporaryDirectory(prefix="lab2048-pack-") as tmp:
        for other, data in files.items():
            (Path(tmp) / other).write_bytes(data)
        return _pack_one(fmt, Path(tmp) / name)
# --- end Ray


def _pack_one(fmt: str, path: Path) -> _Packed | str:
    """Worker: one game's rows and run, or the one-line reason it is skipped."""
    try:
        return _pack_jsonl(path) if fmt == "macroxue-jsonl" else _pack_text(path)
    except _Skip as e:
        return " ".join(str(e).split())


# ---------------------------------------------------------------------------------------------
# macroxue-jsonl


def _pack_jsonl(log: Path) -> _Packed:
    meta = _read_meta(log.with_name(log.name.removesuffix(_LOG) + _META))
    lines = _read_log(log)
    if meta["num_moves"] != len(lines):
        raise _Skip(f"meta num_moves is {meta['num_moves']} but the log holds {len(lines)} moves")
    seed, steps, ranks, moves, vtypes, cells, values, nulls = _columns(lines)
    n = len(lines)
    if seed != meta["seed"]:
        raise _Skip(f"the log's seed {seed} differs from the meta seed {meta['seed']}")
    _first_bad(steps != np.arange(n), lambda t: f"step_index {steps[t]} where {t} was expected")
    boards, masks = from_exponents(cells)
    top = highest_exponents(boards, masks)
    _first_bad(ranks != top, lambda t: f"max_rank {ranks[t]} but the board's highest exponent "
               f"is {top[t]}")
    legal = legal_masks(boards, masks)
    _first_bad(((legal >> moves) & 1) == 0,
               lambda t: f"move {_BRANCHES[moves[t]]} is illegal on its board")
    after, after_masks, rewards = apply_moves(boards, moves, masks)
    overflow = rewards == TILE_OVERFLOW
    _first_bad(overflow[:-1], lambda t: "the move would merge two 65536 tiles, yet the game "
               "goes on")
    follows = follows_by_one_spawn(after[:-1], after_masks[:-1], boards[1:], masks[1:])
    _first_bad(~np.append(True, follows), lambda t: f"the board is not line {t}'s board "
               "after its move plus one spawned 2 or 4")
    score = int(rewards[~overflow].sum())
    if score != meta["score"]:
        raise _Skip(f"meta score is {meta['score']:,} but the moves earn {score:,}")
    ev_legal, evs, differs = _ev_legal(values, nulls, vtypes, legal)
    rows = make_rows(run_id=0, seed=seed, boards=boards, masks=masks, moves=moves,
                     ev_legal=ev_legal, max_rank=top, board_eval=board_evals(boards, masks),
                     branch_evs=evs, valuation_type=vtypes)
    highest = max(int(top.max()), int(highest_exponents(after[-1:], after_masks[-1:])[0]))
    end = _end_reason(boards[-1], masks[-1], moves[-1], bool(overflow[-1]))
    run = Run(id=0, seed=seed, steps=n, max_score=score, highest_tile=1 << highest,
              end_reason=end, source=log.name)
    return _Packed(rows, run, differs)


def _first_bad(bad: np.ndarray, reason) -> None:
    """_Skip naming the first line where `bad` holds (row t is line t + 1)."""
    idx = np.flatnonzero(bad)
    if idx.size:
        t = int(idx[0])
        raise _Skip(f"line {t + 1}: {reason(t)}")


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise _Skip(f"{path.name}: no such file") from None
    except OSError as e:
        raise _Skip(f"{path.name}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise _Skip(f"{path.name}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise _Skip(f"{path.name}: not a JSON object")
    if missing := [k for k in _META_KEYS if k not in meta]:
        raise _Skip(f"{path.name}: missing {', '.join(missing)}")
    for key in _META_KEYS:
        if not (_is_int(meta[key]) if key != "seconds" else _is_number(meta[key])):
            raise _Skip(f"{path.name}: {key} is not a number: {_short(meta[key])}")
    if not 0 <= meta["seed"] < _SEED_LIMIT:
        raise _Skip(f"{path.name}: seed {meta['seed']} is outside 0..2^63-1")
    return meta


def _read_log(path: Path) -> list[tuple]:
    """The checked fields of every line (see _line_fields)."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise _Skip("no such file (only its .meta.json is there)") from None
    except (OSError, EOFError, zlib.error) as e:
        raise _Skip(f"damaged or truncated gzip data ({e})") from None
    lines = []
    for lineno, text in enumerate(data.splitlines(), 1):
        try:
            lines.append(_line_fields(json.loads(text)))
        except json.JSONDecodeError as e:
            raise _Skip(f"line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        except UnicodeDecodeError:
            raise _Skip(f"line {lineno}: not UTF-8 text") from None
        except ValueError as e:  # _line_fields' own
            raise _Skip(f"line {lineno}: {e}") from None
    if not lines:
        raise _Skip("the log holds no moves")
    return lines


def _is_int(v) -> bool:
    return type(v) is int


def _is_number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line_fields(rec) -> tuple:
    """(seed, step_index, max_rank, move, valuation type id, board, 4 values, 4 null flags)."""
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    if missing := [k for k in _LINE_KEYS if k not in rec]:
        raise ValueError(f"missing {', '.join(missing)}")
    seed, step, rank, move = rec["seed"], rec["step_index"], rec["max_rank"], rec["move"]
    if not (_is_int(seed) and 0 <= seed < _SEED_LIMIT):
        raise ValueError(f"seed is not an integer in 0..2^63-1: {_short(seed)}")
    if not (_is_int(step) and _is_int(rank) and 0 <= step < 1 << 32 and 0 <= rank < 256):
        raise ValueError(f"step_index {_short(step)} or max_rank {_short(rank)} is not a small "
                         "integer")
    if not isinstance(move, str) or move not in _MOVES:
        raise ValueError(f"move {_short(move)} is not up, down, left or right")
    kind = rec.get("valuation_type")
    kind = "search" if kind is None else kind  # missing (or null) means search
    if not isinstance(kind, str) or kind not in VALUATION_TYPES:
        raise ValueError(f"valuation_type {_short(kind)} is not one of "
                         f"{', '.join(VALUATION_TYPES)}")
    if not _is_number(rec["valuation"]):
        raise ValueError(f"valuation {_short(rec['valuation'])} is not a number")
    board = rec["board"]
    if not (type(board) is list and len(board) == 16
            and all(_is_int(e) and 0 <= e <= 16 for e in board)):
        raise ValueError(f"board is not 16 exponents in 0..16: {_short(board)}")
    evs = rec["branch_evs"]
    if not isinstance(evs, dict) or any(k not in evs for k in _BRANCHES):
        raise ValueError("branch_evs is not an object of up, down, left, right")
    values = [evs[k] for k in _BRANCHES]
    if not all(v is None or _is_number(v) for v in values):
        raise ValueError(f"branch_evs holds a value that is not a number or null: {_short(evs)}")
    nulls = [v is None for v in values]
    return (seed, step, rank, _MOVES[move], VALUATION_TYPES[kind], board,
            [0.0 if v is None else v for v in values], nulls)


def _columns(lines: list[tuple]):
    """Per-field arrays of a log; the seed must be the same on every line."""
    seeds, steps, ranks, moves, kinds, boards, values, nulls = zip(*lines, strict=True)
    if (t := next((t for t, s in enumerate(seeds) if s != seeds[0]), None)) is not None:
        raise _Skip(f"line {t + 1}: seed {seeds[t]} differs from line 1's seed {seeds[0]}")
    return (seeds[0], np.array(steps, np.int64), np.array(ranks, np.int64),
            np.array(moves, np.uint8), np.array(kinds, np.uint8), np.array(boards, np.uint8),
            np.array(values, np.float64), np.array(nulls, bool))


def _ev_legal(values: np.ndarray, nulls: np.ndarray, kinds: np.ndarray, legal: np.ndarray):
    """(ev_legal, float32 branch_evs, rows whose logged values disagree with the board)."""
    search = kinds == _SEARCH
    valued = ((~nulls) * _BITS).sum(axis=1).astype(np.uint8)
    nonzero = ((values != 0) * _BITS).sum(axis=1).astype(np.uint8)
    stray = ~search & ((nonzero & ~legal) != 0)  # a tuple value on a move the board forbids
    forbidden = (legal[:, None] & _BITS) == 0
    values = np.where(~search[:, None] & forbidden, 0.0, values)
    ev_legal = np.where(search, valued, legal).astype(np.uint8)
    differs = int(np.count_nonzero(search & (valued != legal)) + np.count_nonzero(stray))
    return ev_legal, values.astype(np.float32), differs


def _end_reason(board: np.uint64, mask: np.uint16, move: np.uint8, overflow: bool) -> str:
    """How the logged game ended, as far as its last board and move tell."""
    if overflow:
        return EndReason.TILE_LIMIT.label
    ended = can_end_after(np.array([board]), np.array([move]), np.array([mask]))[0]
    return EndReason.NO_MOVES.label if ended else ""


# ---------------------------------------------------------------------------------------------
# macroxue-text


def _pack_text(path: Path) -> _Packed:
    try:
        game = read_text_game(path)
    except UserError as e:
        raise _Skip(str(e).removeprefix(f"{path}: ")) from None
    if game.num_moves == 0:
        raise _Skip("the game holds no moves")
    if game.scores[0] != 0:
        raise _Skip(f"the game starts at score {int(game.scores[0]):,}, not at 0")
    if not 0 <= game.seed < _SEED_LIMIT:
        raise _Skip(f"seed {game.seed} is outside 0..2^63-1")
    check = replay(game)
    if check.first_mismatch >= 0:
        raise _Skip(f"move #{check.first_mismatch + 1} does not replay: {check.mismatch}")
    if check.score != check.printed_score:
        raise _Skip(f"the printed final score {check.printed_score:,} is not the replayed "
                    f"{check.score:,}")
    if not check.final_is_game_over:
        raise _Skip("the final board still has a legal move")
    boards, masks = from_exponents(game.exponents[:-1])
    kinds = np.array([VALUATION_TYPES[k] for k in game.valuation_types], np.uint8)
    rows = make_rows(run_id=0, seed=game.seed, boards=boards, masks=masks, moves=game.moves,
                     ev_legal=legal_masks(boards, masks),
                     max_rank=highest_exponents(boards, masks),
                     board_eval=board_evals(boards, masks), valuation_type=kinds)
    end = EndReason.NO_MOVES.label if check.final_is_game_over else ""
    run = Run(id=0, seed=game.seed, steps=game.num_moves, max_score=check.score,
              highest_tile=check.highest_tile, end_reason=end, source=path.name)
    return _Packed(rows, run)
