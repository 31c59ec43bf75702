"""Play seeded games with a model's policy, in process or through the inference server.

Choices:
- All games advance in lockstep: each round sends the boards of every unfinished game to the
  predictor as one batch (one forward pass, or one Infer call), then a compiled loop applies
  the chosen moves with the engine's `kernels.step` (same seed + same moves = same game).
- The move is the argmax of the masked move probabilities (illegal moves have probability 0;
  ties go to the lowest UDLR index). On CPU the model is deterministic, so the same seeds give
  the same games, in process or through a server.
- A `Predictor` maps (exponents uint8 [N, 16], legal uint8 [N], value?) to (move probs
  [N, 4], values [N] or None): `LocalPredictor` wraps `Model.predict` (chunks of at most
  `max_batch` boards), `RemotePredictor` an `InferenceClient`.
- Progress is printed as periodic lines (moves, games finished, mean and best score, highest
  tile, moves/s), so long runs are visible in logs as well as on terminals.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numba import njit

from lab2048.engine import kernels as K
from lab2048.engine.batch import to_exponents
from lab2048.engine.conventions import EndReason, tile_value
from lab2048.errors import UserError
from lab2048.play.agents import GameResults

_ONGOING = int(EndReason.ONGOING)
_MAX_MOVES = int(EndReason.MAX_MOVES)
_TILE_LIMIT = int(EndReason.TILE_LIMIT)


class LocalPredictor:
    """A model in this process (eval mode, no gradients)."""

    def __init__(self, model, max_batch: int = 1024):
        self.model = model.eval()
        self.max_batch = max_batch
        self.has_value = model.value is not None

    def __call__(self, exponents: np.ndarray, legal: np.ndarray, value: bool = False):
        probs, values = [], []
        for lo in range(0, len(exponents), self.max_batch):
            sl = slice(lo, lo + self.max_batch)
            p = self.model.predict(exponents[sl], legal[sl], with_value=value)
            probs.append(p.move_probs.cpu().numpy())
            if value and p.value is not None:
                values.append(p.value.float().cpu().numpy())
        return np.concatenate(probs), (np.concatenate(values) if values else None)

    def close(self) -> None:
        pass


class RemotePredictor:
    """The model behind an inference server (one channel for the whole run)."""

    def __init__(self, address: str):
        from lab2048.serve.client import InferenceClient

        self.client = InferenceClient(address)
        self.description = self.client.describe()
        self.has_value = self.description.has_value_head

    def __call__(self, exponents: np.ndarray, legal: np.ndarray, value: bool = False):
        out = self.client.infer(exponents, "both" if value else "policy")
        return out.move_probs, out.value

    def close(self) -> None:
        self.client.close()


@contextlib.contextmanager
def open_predictor(init: str = "", server: str = "", device: str = "cpu",
                   threads: int = 1) -> Iterator:
    """A predictor for --init DIR (in process, on `threads` torch CPU threads; 0 leaves
    torch's default) or --server ADDR (remote; an --init given too must hold the served
    model's config)."""
    if server:
        pred = RemotePredictor(server)
        if init:
            from lab2048.model.config import ModelConfig

            local = ModelConfig.from_json(f"{init}/config.json")
            served = ModelConfig.from_dict(
                __import__("json").loads(pred.description.config_json), server)
            if local != served:
                pred.close()
                raise UserError(f"{server}: serves a model whose config differs from {init}")
    else:
        import torch

        from lab2048.model import load_init

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available")
        if threads > 0:
            torch.set_num_threads(threads)
        pred = LocalPredictor(load_init(init, device=device))
    try:
        yield pred
    finally:
        pred.close()


@njit(cache=True, nogil=True)
def _step_games(idx, moves, seeds, boards, masks, spawns, legal, scores, counts, ends,
                rewards_out, move_xor, line_reward):
    """Play moves[j] in game idx[j]; rewards_out[j] gets its reward."""
    for j in range(len(idx)):
        g = idx[j]
        b, m, reward, s, lg, end = K.step(boards[g], np.int64(masks[g]), np.int64(moves[j]),
                                          seeds[g], spawns[g], move_xor, line_reward)
        rewards_out[j] = reward
        if end == _TILE_LIMIT:
            ends[g] = end
            legal[g] = 0
            continue
        boards[g], masks[g], spawns[g], legal[g] = b, m, s, lg
        scores[g] += reward
        counts[g] += 1
        ends[g] = end


@dataclass
class Trajectories:
    """Per game and step (NaN / 0 after a game's end): predicted values and rewards."""

    values: np.ndarray  # float64 [G, max_moves], the model's value of the board before move t
    rewards: np.ndarray  # float64 [G, max_moves], the reward of move t


def play_model_games(predict: Callable, seeds, max_moves: int = 1_000_000, *,
                     with_value: bool = False, report: Callable[[str], None] | None = print,
                     report_every_s: float = 5.0, agent: str = "model"
                     ) -> tuple[GameResults, Trajectories | None]:
    """Play one game per seed with the predictor's policy, all games in lockstep."""
    seeds = np.asarray(seeds, np.uint64)
    g = len(seeds)
    move_xor, line_reward = K.tables()
    boards = np.array([K.new_board(s) for s in seeds], np.uint64)
    masks = np.zeros(g, np.uint16)
    spawns = np.full(g, 2, np.int64)
    legal = np.array([K.legal_mask(b, 0, move_xor, line_reward) for b in boards], np.uint8)
    scores, counts = np.zeros(g, np.int64), np.zeros(g, np.int64)
    ends = np.zeros(g, np.uint8)
    traj = None
    if with_value:
        traj = Trajectories(np.full((g, max_moves), np.nan), np.zeros((g, max_moves)))
    start = last = time.perf_counter()
    step = 0
    while step < max_moves:
        idx = np.flatnonzero((legal != 0) & (ends == _ONGOING))
        if not len(idx):
            break
        probs, values = predict(to_exponents(boards[idx], masks[idx]), legal[idx], with_value)
        moves = np.argmax(probs, 1)  # first maximum: lowest UDLR index
        rewards = np.zeros(len(idx), np.int64)
        _step_games(idx, moves, seeds, boards, masks, spawns, legal, scores, counts, ends,
                    rewards, move_xor, line_reward)
        if traj is not None:
            if values is None:
                raise UserError("the model has no value head")
            traj.values[idx, step] = values
            traj.rewards[idx, step] = rewards
        step += 1
        now = time.perf_counter()
        if report is not None and now - last >= report_every_s:
            report(_progress_line(scores, counts, boards, masks, legal, ends, now - start))
            last = now
    ends[(ends == _ONGOING) & (legal != 0)] = _MAX_MOVES
    ends[(ends == _ONGOING) & (legal == 0)] = int(EndReason.NO_MOVES)
    highest = np.array([K.highest_exponent(b, np.int64(m)) for b, m in zip(boards, masks,
                                                                          strict=True)], np.uint8)
    seconds = time.perf_counter() - start
    if report is not None:
        report(_progress_line(scores, counts, boards, masks, legal, ends, seconds))
    return GameResults(agent, seeds, scores, counts, highest, ends, seconds), traj


def _progress_line(scores, counts, boards, masks, legal, ends, seconds) -> str:
    done = int(((legal == 0) | (ends != _ONGOING)).sum())
    highest = max(int(K.highest_exponent(b, np.int64(m))) for b, m in zip(boards, masks,
                                                                           strict=True))
    total = int(counts.sum())
    return (f"moves {total:,}   games done {done}/{len(scores)}   score mean "
            f"{scores.mean():,.0f} best {int(scores.max()):,}   highest tile "
            f"{tile_value(highest)}   {total / max(seconds, 1e-9):,.0f} moves/s")
