"""Heads on the encoder's hidden states, and the one legal-move mask everything uses.

- Masking: `mask_illegal` sets illegal moves' scores to ILLEGAL_LOGIT; `move_probs` is the
  softmax over the legal moves, exactly 0 for illegal moves, and 0 for all four moves of a
  board with no legal move (a finished game has nothing to choose; never a uniform 0.25).

- Policy: on the mean of the cells' hidden states. `action_policy` gives 4 move logits (UDLR);
  `binned_ev` gives 4 heads x classes (ILLEGAL, FAILURE, quantile bins, WINNER) of each move's
  disadvantage. Its move scores are log P(WINNER): how likely each move is the teacher's best.
- Value (optional): an optional residual SwiGLU block on the cells, then pooling (`mean`, or
  `attention`: one learned query per head, Perceiver-style), RMSNorm and a linear output: one
  h-space scalar (`mse`) or logits over the support's atoms (`cross_entropy`). The output
  layer starts with zero weights and a bias that decodes to the configured prior (in points),
  for example the dataset's mean return, rather than to the support's midpoint; a categorical
  head starts broad (half its mass on a Gaussian in h-space, `prior_probs`), not peaked.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lab2048.engine.conventions import MOVE_BITS
from lab2048.model.config import ModelConfig
from lab2048.model.transformer import RMSNorm, SwiGLU
from lab2048.value_transform import Decoded, decode, h, h_inverse

ILLEGAL_LOGIT = -1e9  # finite: masking never makes NaN (see `move_probs` for no legal move)
PRIOR_FLOOR = 1e-10  # added to every atom's initial probability (shifts the prior < 0.01 points)
PRIOR_SPREAD = 0.5  # share of a fresh cross_entropy head's mass on a broad Gaussian (prior_probs)
PRIOR_WIDTH = 1 / 40  # that Gaussian's std, as a share of the support's span in h-space


def legal_moves(legal_bits, device=None) -> torch.Tensor:
    """bool [B, 4] (UDLR) from legal-move bitmasks [B] (Up=1, Down=2, Left=4, Right=8)."""
    bits = torch.as_tensor(legal_bits, device=device).to(torch.int64)
    return (bits[..., None] & torch.tensor(MOVE_BITS, device=bits.device)) != 0


def mask_illegal(move_logits: torch.Tensor, legal_bits) -> torch.Tensor:
    """move_logits [B, 4] with illegal moves set to ILLEGAL_LOGIT (a new tensor).

    The single mask for training, evaluation and serving; `legal_bits` is a uint8 bitmask per
    board (a tensor or NumPy array)."""
    legal = legal_moves(legal_bits, move_logits.device)
    return move_logits.masked_fill(~legal, ILLEGAL_LOGIT)


def move_probs(scores: torch.Tensor, legal_bits) -> torch.Tensor:
    """float32 [B, 4] probabilities: softmax of scores [B, 4] over each board's legal moves,

        p_m = legal_m exp(s_m) / sum_k legal_k exp(s_k)     (all 0 when no move is legal)
    """
    legal = legal_moves(legal_bits, scores.device)
    return torch.softmax(scores.float().masked_fill(~legal, ILLEGAL_LOGIT), -1) * legal


def move_logits(policy_out: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-move scores [B, 4] from a policy head's output: the logits themselves for
    action_policy, log P(WINNER) of each move's head for binned_ev."""
    if kind == "action_policy":
        return policy_out
    return F.log_softmax(policy_out.float(), -1)[..., -1]  # WINNER: the last class


class PolicyHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.classes = cfg.ev_classes if cfg.policy_head == "binned_ev" else 0
        self.out = nn.Linear(cfg.hidden, 4 * max(self.classes, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        y = self.out(hidden.mean(1))
        return y.view(-1, 4, self.classes) if self.classes else y


class AttentionPool(nn.Module):
    """One learned query per head attends over the cells: [B, 16, D] -> [B, D]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.hidden // cfg.heads
        self.query = nn.Parameter(torch.zeros(1, self.heads, 1, self.head_dim))
        self.norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.kv = nn.Linear(cfg.hidden, 2 * cfg.hidden, bias=False)
        self.out = nn.Linear(cfg.hidden, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        k, v = self.kv(self.norm(x)).view(b, t, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = self.query.expand(b, -1, -1, -1).to(k.dtype)
        return self.out(F.scaled_dot_product_attention(q, k, v).reshape(b, d))


class ValueHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.value_head
        self.pre_norm = RMSNorm(cfg.hidden, cfg.norm_eps) if self.cfg.pre_pool_mlp else None
        self.pre_mlp = SwiGLU(cfg.hidden, cfg.mlp, cfg.dropout) if self.cfg.pre_pool_mlp else None
        self.pool = AttentionPool(cfg) if self.cfg.pooling == "attention" else None
        self.norm = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.out = nn.Linear(cfg.hidden, 1 if self.cfg.objective == "mse" else self.cfg.support.n)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """h-space values [B] (mse) or logits over the atoms [B, n] (cross_entropy)."""
        x = hidden
        if self.pre_mlp is not None:
            x = x + self.pre_mlp(self.pre_norm(x))
        x = self.pool(x) if self.pool is not None else x.mean(1)
        y = self.out(self.norm(x))
        return y.squeeze(-1) if self.cfg.objective == "mse" else y

    def decode(self, value_out: torch.Tensor) -> Decoded:
        """(h-space value, value in points) [B], float32, from `forward`'s output."""
        c = self.cfg
        if c.objective == "mse":
            xform = value_out.float()
            return Decoded(xform, h_inverse(xform, c.epsilon) / c.reward_scale)
        xform, raw = decode(torch.softmax(value_out.float(), -1), c.support, c.epsilon)
        return Decoded(xform, raw / c.reward_scale)

    @torch.no_grad()
    def reset_output(self, prior: float) -> None:
        """Zero output weights and a bias that decodes to `prior` points for every board:
        h(prior) for mse, log(prior_probs(...)) for cross_entropy."""
        c = self.cfg
        nn.init.zeros_(self.out.weight)
        if c.objective == "mse":
            self.out.bias.fill_(float(h(np.float64(prior * c.reward_scale), c.epsilon)))
            return
        p = prior_probs(c.support, c.epsilon, prior * c.reward_scale)
        self.out.bias.copy_(torch.from_numpy(np.log(p + PRIOR_FLOOR)))


def prior_probs(support, eps: float, x: float) -> np.ndarray:
    """A broad distribution over the atoms whose per-atom decode is exactly x (clipped to the
    support's range):

        p = (1 - a) T(x1) + a G,   G_i ~ exp(-(atom_i - h(x))^2 / (2 sigma^2)),
        sigma = PRIOR_WIDTH (max - min),   x1 = (x - a mean(G)) / (1 - a)

    with T(x1) the two atoms around x1 weighted to decode to x1 exactly (h^-1 interpolated
    linearly: a two-hot in h-space would overshoot where h^-1 curves), and a = PRIOR_SPREAD, or
    less where x1 would leave the support (x near its ends). The Gaussian half gives every
    plausible return a probability far above the floor, so the first targets cost a few nats,
    not -log(PRIOR_FLOOR) ~ 23, and the head learns to widen in tens of steps, not thousands."""
    atoms = support.atoms
    raw = h_inverse(atoms, eps)
    x = min(max(x, raw[0]), raw[-1])
    sigma = PRIOR_WIDTH * (support.max - support.min)
    g = np.exp(-0.5 * ((atoms - float(h(np.float64(x), eps))) / sigma) ** 2)
    g /= g.sum()
    mean_g = float(g @ raw)
    a = PRIOR_SPREAD
    if mean_g > x:
        a = min(a, (x - raw[0]) / (mean_g - raw[0]))
    elif mean_g < x:
        a = min(a, (raw[-1] - x) / (raw[-1] - mean_g))
    x1 = min(max((x - a * mean_g) / (1 - a), raw[0]), raw[-1])
    i = min(int(np.searchsorted(raw, x1, "right")) - 1, support.n - 2)
    t = (x1 - raw[i]) / (raw[i + 1] - raw[i])
    p = a * g
    p[i] += (1 - a) * (1 - t)
    p[i + 1] += (1 - a) * t
    return p
