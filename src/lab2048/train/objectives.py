"""Losses and validation metrics, on the model's outputs, always in float32.

- Policy, action_policy: cross-entropy of the masked move logits (`mask_illegal`, the one mask
  training, evaluation and serving share) against the teacher's move.
- Policy, binned_ev: cross-entropy of each move's head against its class (loader.ev_classes),
  averaged over the 4 moves.
- Value targets live in h-space: `return_scaled` is already h(reward_scale G) (used as is, never
  transformed twice; its reward_scale and eps must be the model's); `return_raw` (and an
  afterstate's return) is transformed once with value_transform.h, in float64 when the loader
  reads the columns (`value_target`). mse: squared error of the h-space scalar; cross_entropy:
  cross-entropy against value_transform.two_hot over the head's support.
- Ranking (afterstate heads): the 1-ply Q(s, a) = r(s, a) + γ V(a's afterstate) of the four
  moves, and the cross-entropy of softmax(Q / T) over the legal moves against the teacher's
  move. Q is in points, so T (points) says how large a difference in value counts as sure.
- Metrics: policy agreement (argmax over legal moves == teacher move), the losses, the
  decoded value (points, per-atom decoding via the head) against return_raw: MAE and R^2, and
  for afterstate heads the agreement of argmax Q with the teacher's move.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lab2048.model import mask_illegal, move_logits
from lab2048.value_transform import h, two_hot


def policy_loss(policy_out: torch.Tensor, kind: str, legal: torch.Tensor,
                move: torch.Tensor, ev_class: torch.Tensor | None) -> torch.Tensor:
    if kind == "action_policy":
        return F.cross_entropy(mask_illegal(policy_out.float(), legal), move)
    return F.cross_entropy(policy_out.float().reshape(-1, policy_out.shape[-1]),
                           ev_class.reshape(-1))


def value_target(head_cfg, target: str, return_raw, return_scaled):
    """The h-space target of the value head: the sidecar's return_scaled as it is, or
    h(reward_scale G) of a return G in points (NumPy arrays or tensors, their precision).
    `head_cfg` has the head's reward_scale and epsilon."""
    if target == "return_scaled":
        return return_scaled
    return h(return_raw * head_cfg.reward_scale, head_cfg.epsilon)


def value_loss(value_out: torch.Tensor, head_cfg, target_h: torch.Tensor) -> torch.Tensor:
    if head_cfg.objective == "mse":
        return F.mse_loss(value_out.float(), target_h)
    probs = two_hot(target_h, head_cfg.support)
    return -(probs * F.log_softmax(value_out.float(), -1)).sum(-1).mean()


def one_ply_q(rewards: torch.Tensor, afterstate_values: torch.Tensor,
              gamma: float) -> torch.Tensor:
    """Q [B, 4] = r(s, a) + γ V(afterstate of a): the value a 1-ply search on an afterstate head
    gives each move (rewards and values in points; illegal moves are masked by the callers)."""
    return rewards.float() + gamma * afterstate_values.float()


def rank_loss(q: torch.Tensor, legal: torch.Tensor, move: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """-log softmax(Q / T)[move] over the legal moves (mask_illegal), averaged over the batch:
    the listwise ranking loss that asks the recorded move to have the largest Q."""
    return F.cross_entropy(mask_illegal(q / temperature, legal), move)


def q_agreement(q: torch.Tensor, legal: torch.Tensor, move: torch.Tensor) -> torch.Tensor:
    """Per-sample 1.0 where the legal move of largest Q is the teacher's move."""
    return (mask_illegal(q.float(), legal).argmax(-1) == move).float()


def agreement(policy_out: torch.Tensor, kind: str, legal: torch.Tensor,
              move: torch.Tensor) -> torch.Tensor:
    """Per-sample 1.0 where the argmax legal move is the teacher's move."""
    scores = mask_illegal(move_logits(policy_out, kind).float(), legal)
    return (scores.argmax(-1) == move).float()


class ValueStats:
    """Streaming MAE and R^2 of predicted points against return_raw (float64 sums)."""

    def __init__(self) -> None:
        self.n, self.abs_err, self.sq_err, self.sum_y, self.sum_y2 = 0, 0.0, 0.0, 0.0, 0.0

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        p, y = pred.double().cpu(), target.double().cpu()
        self.n += len(y)
        self.abs_err += float((p - y).abs().sum())
        self.sq_err += float(((p - y) ** 2).sum())
        self.sum_y += float(y.sum())
        self.sum_y2 += float((y * y).sum())

    def result(self) -> dict[str, float]:
        if self.n == 0:
            return {}
        var = self.sum_y2 - self.sum_y ** 2 / self.n
        return {"value_mae": self.abs_err / self.n,
                "value_r2": 1 - self.sq_err / var if var > 0 else float("nan")}
