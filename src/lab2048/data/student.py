"""Student games (DAgger): an agent plays, the teacher labels every state it visits.

    lab2048 generate --agent value:depth=1 --init DIR --label teacher --games 300 \
        --out STUDENT [--include EXPERT]

Choices
- The agent plays seeds seed..seed+games-1 through the one lockstep loop (play/games.py): its
  games are the ones `lab2048 evaluate` plays for it on those seeds.
- A row is the board before a move the agent made and `move_dir` is that move, so a dataset
  is the agent's trajectory: `lab2048 check` verifies it, and the sidecar's rewards and returns
  are those the agent realised. The teacher (the `generate` teacher settings) searches every
  such board: `branch_evs`, `ev_legal`, `board_eval` and the valuation type are the teacher's,
  so the teacher's move is the argmax of branch_evs over the legal moves; training imitates
  it with `objective.policy_label = "teacher"` (the recorded move where it is as good).
- A game is labelled and staged (generate.py's staging: one file a game, renamed into place)
  as it ends; running the command again plays only the missing games. The staging settings
  hold the agent, the model's weights, the teacher and --include, so a changed model is never
  mixed into an interrupted run. Staged games that cannot be read back are played again.
- `runs.source` is "agent:SPEC". --include copies another dataset's runs first (ids, sources
  and rows unchanged; the agent's runs are numbered after its largest id), so one dataset
  holds expert and student games and `data.where` chooses the mix, e.g.
  `source = '' OR source LIKE 'agent:%'`. The included dataset is read into memory.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from pathlib import Path

import numpy as np

from lab2048.data.config import GenerateConfig
from lab2048.data.dataset import (
    VALUATION_TYPES,
    Dataset,
    DatasetWriter,
    make_rows,
    read_run_table,
    select_runs,
)
from lab2048.engine.batch import highest_exponents
from lab2048.errors import UserError

SOURCE_PREFIX = "agent:"


class Recorder:
    """Wraps an agent: keeps, per game, the boards it was asked about and the moves it made."""

    def __init__(self, agent, seeds: np.ndarray) -> None:
        self.agent, self.name, self.seeds = agent, agent.name, seeds
        self.boards: list[list] = [[] for _ in seeds]
        self.masks: list[list] = [[] for _ in seeds]
        self.moves: list[list] = [[] for _ in seeds]

    @property
    def boards_evaluated(self) -> int:
        return self.agent.boards_evaluated

    def choose(self, boards, masks, legal, seeds, move_numbers):
        moves = np.asarray(self.agent.choose(boards, masks, legal, seeds, move_numbers))
        for j, g in enumerate(np.searchsorted(self.seeds, seeds)):
            self.boards[g].append(boards[j])
            self.masks[g].append(masks[j])
            self.moves[g].append(moves[j])
        return moves

    def game(self, g: int, moves_made: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Game g's boards, masks and moves, the moves it made only (a move refused at the
        tile limit is asked for but not made)."""
        n = moves_made
        out = (np.array(self.boards[g][:n], np.uint64), np.array(self.masks[g][:n], np.uint16),
               np.array(self.moves[g][:n], np.uint8))
        self.boards[g], self.masks[g], self.moves[g] = [], [], []
        return out


def label_rows(run_id: int, seed: int, boards: np.ndarray, masks: np.ndarray,
               moves: np.ndarray, cfg: GenerateConfig) -> tuple[np.ndarray, int]:
    """(STEP_DTYPE rows of one agent game with the teacher's labels, search nodes)."""
    from lab2048.teacher import search_boards
    from lab2048.teacher.search import static_value

    found = search_boards(boards, masks, cfg.teacher)
    corner = cfg.teacher.evaluation == "corner"
    evals = np.array([static_value(b, np.int64(m), corner) for b, m in zip(boards, masks,
                                                                           strict=True)])
    rows = make_rows(run_id=run_id, seed=seed, boards=boards, masks=masks, moves=moves,
                     ev_legal=found["ev_legal"], max_rank=highest_exponents(boards, masks),
                     board_eval=np.round(evals).astype(np.int32),
                     branch_evs=found["branch_evs"], valuation_type=found["valuation"])
    return rows, int(found["nodes"].sum())


def included(cfg: GenerateConfig) -> tuple[Dataset | None, int]:
    """The --include dataset (None without one) and the largest run id in it (0 without).
    Its valuation types must agree with lab2048's: a name keeps its id, an id its name."""
    if not cfg.include:
        return None, 0
    ds = Dataset(Path(cfg.include))
    names = {v: k for k, v in VALUATION_TYPES.items()}
    if any(VALUATION_TYPES.get(k, v) != v or names.get(v, k) != k
           for k, v in ds.valuation_types.items()):
        raise UserError(f"{ds.root / 'valuation_types.json'}: valuation type ids differ from "
                        f"lab2048's {VALUATION_TYPES}")
    ids = ds.runs["id"]
    return ds, int(ids.max()) if len(ids) else 0


def copy_runs(ds: Dataset, writer: DatasetWriter, where: str = "") -> None:
    """The runs of `ds` chosen by SQL `where` ('': all), rows and runs-table facts unchanged,
    into `writer`, in id order."""
    rows = np.concatenate([np.asarray(s) for s in ds.shards])
    rows = rows[np.isin(rows["run_id"], select_runs(ds.root, where))]
    order = np.argsort(rows["run_id"], kind="stable")
    rows = rows[order]
    bounds = np.append(np.searchsorted(rows["run_id"], np.unique(rows["run_id"])), len(rows))
    facts = {run.id: run for run in read_run_table(ds.root / "metadata.db")}
    for a, b in itertools.pairwise(bounds):
        run_id = int(rows["run_id"][a])
        if run_id not in facts:
            raise UserError(f"{ds.root / 'metadata.db'}: run {run_id} has rows but no entry")
        writer.add_run(facts[run_id], rows[a:b])


def play_students(cfg: GenerateConfig, todo: list[int], first_id: int, stage, on_game) -> None:
    """Play games `todo` (indices) with the agent, label each as it ends, `stage(index,
    arrays)` it and call `on_game(moves)`."""
    from lab2048.play.agents import make_agent
    from lab2048.play.config import parse_agent
    from lab2048.play.games import play_lockstep
    from lab2048.play.predictor import open_predictor, value_definition

    spec = parse_agent(cfg.agent)
    seeds = np.array([cfg.seed + i for i in todo], np.uint64)
    model = (open_predictor(cfg.init, device=cfg.device, threads=cfg.threads)
             if spec.uses_model else contextlib.nullcontext())
    with model as pred:
        gamma, afterstate = (value_definition(pred, None) if spec.uses_value
                             else (0.0, False))
        recorder = Recorder(make_agent(spec, pred, gamma, afterstate), seeds)

        def ended(g: int, res) -> None:
            index = todo[g]
            boards, masks, moves = recorder.game(g, int(res.moves[g]))
            start = time.perf_counter()
            rows, nodes = label_rows(first_id + index + 1, cfg.seed + index, boards, masks, moves,
                                     cfg)
            meta = np.array([cfg.seed + index, res.scores[g], 1 << int(res.highest[g]),
                             res.ends[g]], np.int64)
            stage(index, {"rows": rows, "meta": meta,
                          "seconds": np.float64(time.perf_counter() - start),
                          "nodes": np.int64(nodes)})
            on_game(len(rows))

        play_lockstep(recorder, seeds, cfg.max_moves, on_end=ended)

