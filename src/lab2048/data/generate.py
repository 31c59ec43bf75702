"""`lab2048 generate`: play seeded teacher games in worker processes into a packed dataset.

Choices
- Game i (0-based) plays seed + i and becomes run i + 1; the teacher is deterministic, so the
  dataset depends only on the settings, never on the number of workers or on interruptions.
- Resumable: each finished game is saved at once (temporary file + rename) in a staging
  directory `.NAME.partial` beside the output, with the settings it was played with. Running
  the same command again keeps the finished games and plays only the missing ones; different
  settings are refused unless --overwrite (which then starts over). When every game is in,
  the shards are written through DatasetWriter (renamed into place) and the staging removed.
- A staged game that cannot be read back (damaged by a kill, a full disk or a hand) is
  discarded and played again; the teacher is deterministic, so the dataset is the same.
- Workers are processes (`workers.process_pool`: one game per task, `spawn` start method so no
  numba state is forked, and they die with the parent); the parent only counts: a progress bar
  with games, moves/s and ETA.
- --overwrite replaces only a dataset (a directory holding metadata.db, `io.claim_dir`),
  checked before any game is played; a full disk is one line, and the games staged so far stay
  for the next run.
- With --ray ADDRESS the games are Ray tasks (`lab2048.scale`): each returns its arrays, and
  the driver stages them as a local worker would, so resuming and the dataset's bytes are the
  same for any cluster; --workers then caps the games in flight (0: twice the cluster's CPUs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
import zipfile
import zlib
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

import numpy as np

from lab2048.data.config import GenerateConfig
from lab2048.data.dataset import (
    STEP_DTYPE,
    VALUATION_TYPES,
    Dataset,
    DatasetWriter,
    Run,
    make_rows,
)
from lab2048.data.fingerprint import weights_fingerprint
from lab2048.data.student import SOURCE_PREFIX, copy_runs, included, play_students
from lab2048.data.workers import process_pool
from lab2048.engine.conventions import EndReason
from lab2048.errors import UserError
from lab2048.io import claim_dir, disk_errors, progress_bar
from lab2048.teacher.config import TeacherConfig

STAGING_VERSION = 1


def staging_dir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _settings(cfg: GenerateConfig) -> dict:
    """What makes the games what they are (not where they go or how many processes play)."""
    settings = {"staging_version": STAGING_VERSION, "seed": cfg.seed, "games": cfg.games,
                "max_moves": cfg.max_moves, "teacher": dataclasses.asdict(cfg.teacher)}
    if cfg.agent:
        settings |= {"agent": cfg.agent, "label": cfg.label,
                     "weights": weights_fingerprint(cfg.init) if cfg.init else "",
                     "include": str(Path(cfg.include).resolve()) if cfg.include else "",
                     "include_where": cfg.include_where}
    return settings


def _game_path(staging: Path, index: int) -> Path:
    return staging / f"game-{index:07d}.npz"


def play_one(index: int, seed: int, teacher: TeacherConfig, max_moves: int,
             staging: Path) -> tuple[int, int]:
    """Worker: play game `index`, save it atomically; return (index, moves)."""
    return index, stage_game(staging, index, play_arrays(index, seed, teacher, max_moves))


def play_arrays(index: int, seed: int, teacher: TeacherConfig, max_moves: int) -> dict:
    """Play game `index` (seeded `seed`): what its staged file holds, as arrays."""
    from lab2048.teacher import play_game

    game = play_game(seed, teacher, max_moves=max_moves)
    rows = make_rows(run_id=index + 1, seed=seed, boards=game.boards, masks=game.masks,
                     moves=game.moves, ev_legal=game.ev_legal, max_rank=game.max_rank,
                     board_eval=game.board_eval, branch_evs=game.branch_evs,
                     valuation_type=game.valuation)
    meta = np.array([seed, game.score, game.highest_tile, int(game.end_reason)], np.int64)
    return {"rows": rows, "meta": meta, "seconds": np.float64(game.seconds),
            "nodes": np.int64(game.nodes)}


def stage_game(staging: Path, index: int, arrays: dict) -> int:
    """Save a played game atomically in the staging directory; return its moves."""
    path = _game_path(staging, index)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with disk_errors(staging, f"game {index}"), open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(arrays["rows"])


def _load_game(staging: Path, index: int, first_id: int = 0
               ) -> tuple[np.ndarray, np.ndarray, float, int] | None:
    """(rows, meta, seconds, nodes) of a staged game (run id first_id + index + 1), or None
    if it is damaged."""
    try:
        with np.load(_game_path(staging, index)) as z:
            rows, meta = z["rows"], z["meta"]
            seconds, nodes = float(z["seconds"]), int(z["nodes"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    ok = (rows.dtype == STEP_DTYPE and rows.ndim == 1 and meta.shape == (4,)
          and (rows["run_id"] == first_id + index + 1).all() and int(meta[3]) in set(EndReason))
    return (rows, meta, seconds, nodes) if ok else None


def _prepare_staging(cfg: GenerateConfig, out: Path, overwrite: bool,
                     first_id: int = 0) -> tuple[Path, set[int]]:
    """The staging directory (created or resumed) and the indices of games already finished."""
    staging = staging_dir(out)
    settings = _settings(cfg)
    marker = staging / "settings.json"
    if staging.exists():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != settings:
            if not overwrite:
                raise UserError(f"{staging}: an interrupted run with other settings is there "
                                "(pass --overwrite to discard it and start over)")
            shutil.rmtree(staging)
    if not staging.exists():
        staging.mkdir(parents=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(settings, indent=2) + "\n")
        os.replace(tmp, marker)
    for stale in staging.glob(".game-*.tmp"):
        stale.unlink()
    done = {int(p.stem.split("-")[1]) for p in staging.glob("game-*.npz")}
    if cfg.agent:  # a damaged student game is played again now (teacher games: at assembly)
        done = {i for i in done if _load_game(staging, i, first_id) is not None}
    return staging, {i for i in done if i < cfg.games}


def generate(cfg: GenerateConfig, overwrite: bool = False, progress: bool = True) -> dict:
    """Play the games (resuming), write the dataset; return a summary dict."""
    out = Path(cfg.out)
    if cfg.workers < 0:
        raise UserError(f"workers must be 0 (all cores) or more, got {cfg.workers}")
    if cfg.agent and cfg.ray:
        raise UserError("--ray plays teacher games only (not --agent)")
    claim_dir(out, overwrite, marker="metadata.db", kind="dataset",
              inputs=(Path(cfg.include),) if cfg.include else ())
    include, first_id = included(cfg)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging, done = _prepare_staging(cfg, out, overwrite, first_id)
    except OSError as e:
        raise UserError(f"{out}: cannot prepare the staging directory ({e})") from None
    todo = [i for i in range(cfg.games) if i not in done]
    workers = min(cfg.workers or os.cpu_count() or 1, max(1, len(todo)))
    start = time.perf_counter()
    moves = 0
    if done and todo:
        print(f"resuming: {len(done)} of {cfg.games} games already played", file=sys.stderr)
    with progress_bar(progress, total=cfg.games, initial=len(done), unit="game",
                      desc="generate") as bar:
        def counted(n: int) -> None:
            nonlocal moves
            moves += n
            bar.update(1)
            bar.set_postfix(moves_per_s=f"{moves / (time.perf_counter() - start):,.0f}",
                            refresh=False)

        if todo and cfg.agent:
            play_students(cfg, todo, first_id, lambda i, arrays: stage_game(staging, i, arrays),
                          counted)
        elif todo and cfg.ray:  # --- Ray
            with contextlib.closing(_played_on_ray(cfg, todo, staging)) as finished:
                for n in finished:
                    counted(n)
        elif todo:
            with process_pool(workers) as pool:
                pending = set()
                queue = iter(todo)
                for index in queue:  # keep 2 tasks per worker in flight
                    pending.add(pool.submit(play_one, index, cfg.seed + index, cfg.teacher,
                                            cfg.max_moves, staging))
                    if len(pending) >= 2 * workers:
                        break
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        counted(future.result()[1])
                        index = next(queue, None)
                        if index is not None:
                            pending.add(pool.submit(play_one, index, cfg.seed + index,
                                                    cfg.teacher, cfg.max_moves, staging))
    return _assemble(cfg, out, staging, overwrite, include, first_id, played=len(todo),
                     seconds=time.perf_counter() - start, moves_played=moves)


# --- Ray (lab2048.scale): each game is a task; the driver stages what comes back, as above
def _played_on_ray(cfg: GenerateConfig, todo: list[int], staging: Path):
    """Each finished game's moves, as the cluster's tasks finish."""
    from lab2048.scale import cluster, task_map

    with cluster(cfg.ray) as ray:
        games = [(i, cfg.seed + i, cfg.teacher, cfg.max_moves) for i in todo]
        for position, arrays in task_map(ray, play_arrays, games, in_flight=cfg.workers,
                                         what=lambda p: f"game {todo[p]}"):
            yield stage_game(staging, todo[position], arrays)
# --- end Ray


def _assemble(cfg: GenerateConfig, out: Path, staging: Path, overwrite: bool,
              include: Dataset | None, first_id: int, played: int, seconds: float,
              moves_played: int) -> dict:
    session = {"source": "lab2048 generate", "teacher": json.dumps(dataclasses.asdict(cfg.teacher)),
               "seed": str(cfg.seed), "games": str(cfg.games), "max_moves": str(cfg.max_moves)}
    if cfg.agent:
        session |= {"agent": cfg.agent, "init": cfg.init, "label": cfg.label,
                    "include": cfg.include}
    scores, highest, search_seconds, nodes, searched = [], [], 0.0, 0, 0
    with DatasetWriter(out, session=session, overwrite=overwrite, shard_rows=cfg.shard_rows,
                       valuation_types={**VALUATION_TYPES,
                                        **(include.valuation_types if include else {})},
                       inputs=(include.root,) if include else ()) as writer:
        if include is not None:
            copy_runs(include, writer, cfg.include_where)
        for index in range(cfg.games):
            game = _load_game(staging, index, first_id)
            if game is None and cfg.agent:
                raise UserError(f"{_game_path(staging, index)}: damaged after it was played; "
                                "run the command again to play it again")
            if game is None:
                print(f"{_game_path(staging, index)}: damaged; playing game {index} again",
                      file=sys.stderr)
                play_one(index, cfg.seed + index, cfg.teacher, cfg.max_moves, staging)
                game = _load_game(staging, index)
                if game is None:
                    raise UserError(f"{_game_path(staging, index)}: cannot be read back after "
                                    "it was written")
            rows, meta, seconds_, nodes_ = game
            search_seconds += seconds_
            nodes += nodes_
            searched += len(rows)
            seed, score, tile, end = (int(x) for x in meta)
            source = f"{SOURCE_PREFIX}{cfg.agent}" if cfg.agent else ""
            writer.add_run(Run(id=first_id + index + 1, seed=seed, steps=len(rows),
                               max_score=score, highest_tile=tile,
                               end_reason=EndReason(end).label, source=source), rows)
            scores.append(score)
            highest.append(tile)
        steps = writer.rows
    shutil.rmtree(staging, ignore_errors=True)
    return {"out": str(out), "games": cfg.games, "played_now": played, "steps": steps,
            "seconds": seconds, "moves_per_s_now": moves_played / seconds if seconds else 0.0,
            "search_seconds": search_seconds, "nodes": nodes, "searched_steps": searched,
            "mean_score": float(np.mean(scores)), "highest_tiles": highest}


def format_summary(summary: dict) -> str:
    tiles, counts = np.unique(summary["highest_tiles"], return_counts=True)
    reach = ", ".join(f"{int(t)}: {c}" for t, c in zip(tiles, counts, strict=True))
    seconds = summary["search_seconds"]
    speed = summary["searched_steps"] / seconds if seconds else 0.0
    return (f"{summary['out']}: {summary['games']} games ({summary['played_now']} played now), "
            f"{summary['steps']:,} steps; mean score {summary['mean_score']:,.0f}; "
            f"highest tiles {reach}; teacher {speed:,.0f} moves/s per worker")
