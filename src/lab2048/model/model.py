"""The model: encoder, policy head, optional value head.

forward(tokens int64 [B, 16]) -> (hidden_states [B, 16, hidden], policy_out, value_out)
  policy_out: move logits [B, 4] (action_policy) or [B, 4, classes] (binned_ev), unmasked;
  value_out: h-space values [B] (mse) or atom logits [B, n] (cross_entropy); None without a
  value head.
`predict` is the inference convenience: masked move probabilities and the decoded value.
Float32 on CPU; on CUDA `predict` runs under bf16 autocast (so should training). The module
is plain enough for `torch.compile(model)`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from lab2048.model.config import ModelConfig
from lab2048.model.heads import PolicyHead, ValueHead, move_logits, move_probs
from lab2048.model.tokenizer import EvBins
from lab2048.model.transformer import Encoder, init_weights


class Prediction(NamedTuple):
    move_probs: torch.Tensor  # float32 [B, 4], UDLR, illegal moves 0 (all 0 if none legal)
    value: torch.Tensor | None  # float32 [B], points
    value_xform: torch.Tensor | None  # float32 [B], h-space


class Model(nn.Module):
    def __init__(self, cfg: ModelConfig, bins: EvBins | None = None):
        super().__init__()
        if bins is not None and bins.bins != cfg.ev_bins:
            raise ValueError(f"{bins.bins} bins given, the config says ev_bins = {cfg.ev_bins}")
        self.cfg = cfg
        self.bins = bins  # binned_ev's class edges (tokenizer.json), once fitted
        self.encoder = Encoder(cfg)
        self.policy = PolicyHead(cfg)
        self.value = ValueHead(cfg) if cfg.value_head.enabled else None
        init_weights(self, cfg.layers)
        if self.value is not None:
            self.value.reset_output(cfg.value_head.prior)

    def forward(self, tokens: torch.Tensor, with_value: bool = True):
        hidden = self.encoder(tokens)
        value = self.value(hidden) if self.value is not None and with_value else None
        return hidden, self.policy(hidden), value

    @torch.no_grad()
    def predict(self, tokens, legal_bits, with_value: bool = True) -> Prediction:
        """Move probabilities and, with a value head, the value in points (eval mode assumed).

        `tokens` exponents [B, 16] and `legal_bits` uint8 [B] (tensors or NumPy arrays)."""
        device = next(self.parameters()).device
        tokens = torch.as_tensor(tokens, device=device).long()
        with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
            _, policy_out, value_out = self(tokens, with_value)
        probs = move_probs(move_logits(policy_out, self.cfg.policy_head), legal_bits)
        if value_out is None:
            return Prediction(probs, None, None)
        xform, points = self.value.decode(value_out)
        return Prediction(probs, points, xform)

    def num_parameters(self, value_head: bool = True) -> int:
        return sum(p.numel() for name, p in self.named_parameters()
                   if value_head or not name.startswith("value."))
