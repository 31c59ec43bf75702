"""The encoder over a board's 16 cell tokens, nanoGPT-style.

token embedding + position (one learned vector per cell, or a row vector plus a column vector)
-> `layers` pre-norm blocks x + Attention(RMSNorm(x)), x + SwiGLU(RMSNorm(x)) -> final RMSNorm.
Attention is bidirectional (no mask) with grouped-query key/value heads and runs through
F.scaled_dot_product_attention. No biases. Weights start N(0, 0.02); the projections that
write into the residual stream start with std 0.02 / sqrt(2 layers) (GPT-2).
RMSNorm computes in float32, so bf16 autocast on CUDA keeps the norms exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lab2048.model.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).type_as(x)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x), with w1 and w3 in one matrix."""

    def __init__(self, dim: int, inner: int, dropout: float):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * inner, bias=False)
        self.w2 = nn.Linear(inner, dim, bias=False)
        self.w2.residual = True
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, -1)
        return self.dropout(self.w2(F.silu(gate) * up))


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads = cfg.heads, cfg.kv_heads
        self.head_dim = cfg.hidden // cfg.heads
        self.qkv = nn.Linear(cfg.hidden, (cfg.heads + 2 * cfg.kv_heads) * self.head_dim,
                             bias=False)
        self.out = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.out.residual = True
        self.p_drop = cfg.dropout
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, -1, self.head_dim).transpose(1, 2).split(
            [self.heads, self.kv_heads, self.kv_heads], dim=1)
        group = self.heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p_drop if self.training else 0)
        return self.dropout(self.out(y.transpose(1, 2).reshape(b, t, d)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = RMSNorm(cfg.hidden, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.hidden, cfg.mlp, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
    """tokens int64 [B, 16] (exponents) -> hidden states [B, 16, hidden], final-normed."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        n_pos = 16 if cfg.position == "learned" else 8  # row_col: 4 rows, then 4 columns
        self.positions = nn.Parameter(torch.zeros(n_pos, cfg.hidden))
        cell = torch.arange(16)
        index = cell[:, None] if cfg.position == "learned" else torch.stack(
            [cell // 4, 4 + cell % 4], 1)
        self.register_buffer("position_index", index, persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden, cfg.norm_eps)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = self.positions[self.position_index].sum(1)  # [16, hidden]
        x = self.dropout(self.tokens(tokens.long()) + pos)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def init_weights(module: nn.Module, layers: int) -> None:
    """GPT-2 init for every Linear/Embedding/position table under `module`."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            std = 0.02 / math.sqrt(2 * layers) if getattr(m, "residual", False) else 0.02
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, Encoder):
            nn.init.normal_(m.positions, std=0.02)
