"""Training: policy and value heads from a packed dataset joined with its value sidecar.

    from lab2048.train import load_train_config, train
    cfg = load_train_config(Path("configs/train/demo.toml"), ["train.steps=100"])
    metrics = train(cfg)            # writes cfg.train.out: metrics.jsonl, curves.png, init/

config.py (the TOML schema, stdlib only), loader.py (runs, split, sidecar join, the columns
on the training device, batches decoded, checked and augmented there), objectives.py (losses
and metrics), trainer.py (the loop, checkpoints, resume, torchrun). Several processes:
`torchrun --nproc-per-node N -m lab2048 train --config FILE`.
"""

from lab2048.train.config import TrainConfig, load_train_config

__all__ = ["TrainConfig", "load_train_config", "train"]


def train(cfg, **kwargs):
    """lab2048.train.trainer.train (imported on first use: it needs torch)."""
    from lab2048.train.trainer import train as _train

    return _train(cfg, **kwargs)
