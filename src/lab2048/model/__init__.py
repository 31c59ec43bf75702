"""The 2048 transformer: config, encoder and heads, init directories (see docs/design.md, Model).

    from lab2048.model import Model, ModelConfig, load_init, save_init
    model = Model(ModelConfig())                     # the reference small model, policy-only
    hidden, policy_out, value_out = model(tokens)    # tokens: exponents, int64 [B, 16]
    pred = model.predict(tokens, legal_bits)         # masked move probs, value in points
    save_init(model, "runs/init"); model = load_init("runs/init")
"""

from lab2048.model.config import ModelConfig, ValueHeadConfig
from lab2048.model.heads import ILLEGAL_LOGIT, legal_moves, mask_illegal, move_logits, move_probs
from lab2048.model.init_dir import load_init, save_init, torch_device
from lab2048.model.model import Model, Prediction
from lab2048.model.tokenizer import EvBins

__all__ = ["ILLEGAL_LOGIT", "EvBins", "Model", "ModelConfig", "Prediction", "ValueHeadConfig",
           "legal_moves", "load_init", "mask_illegal", "move_logits", "move_probs", "save_init",
           "torch_device"]
