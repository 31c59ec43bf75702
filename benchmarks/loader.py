"""The training data pipeline alone against the reference model's training step, on this machine.

    python benchmarks/loader.py [--dataset DIR --sidecar DIR] [--batch-size 256]

Loader: `Loader.train_batch` (gather from the memory-mapped shards and sidecar, board decoding,
legality, a random symmetry per sample) at steps spread over an epoch. Training: forward,
backward and AdamW step of the reference small model (ModelConfig(), value head on, two-hot
cross-entropy) at the same batch size, float32 on CPU (bf16 autocast on CUDA). Prints both
rates and their ratio; the target is >= 10, so the loader never starves training. Without
--dataset it uses the embedded dataset with a sidecar built in a temporary directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from lab2048.data.dataset import default_dataset
from lab2048.data.sidecar import SidecarConfig, build_sidecar
from lab2048.model import Model, ModelConfig, ValueHeadConfig
from lab2048.train.config import DataConfig
from lab2048.train.loader import Loader
from lab2048.train.objectives import policy_loss, value_loss, value_target


def loader_rate(loader: Loader, seconds: float) -> float:
    loader.train_batch(0)  # numba compilation, first permutation
    n, start = 0, time.perf_counter()
    stride = max(1, loader.batches_per_epoch // 7)
    while time.perf_counter() - start < seconds:
        loader.train_batch(1 + n * stride)
        n += 1
    return n / (time.perf_counter() - start)


def train_rate(loader: Loader, steps: int, device: torch.device) -> float:
    cfg = ModelConfig(value_head=ValueHeadConfig(enabled=True))
    model = Model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [loader.train_batch(s) for s in range(steps + 1)]

    def step(b):
        tokens = torch.from_numpy(b.tokens).to(device, torch.long)
        legal = torch.from_numpy(b.legal).to(device)
        with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
            _, p, v = model(tokens)
        target = value_target(cfg.value_head, "return_scaled", None,
                              torch.from_numpy(b.return_scaled).to(device))
        loss = (policy_loss(p, "action_policy", legal, torch.from_numpy(b.move).to(device), None)
                + value_loss(v, cfg.value_head, target))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for b in batches[1:]:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path)
    ap.add_argument("--sidecar", type=Path)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=3.0, help="loader timing window")
    ap.add_argument("--steps", type=int, default=8, help="timed training steps")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = args.sidecar
        if args.dataset is None:
            sidecar = Path(tmp)
            build_sidecar(default_dataset(), SidecarConfig(), output=sidecar)
        data = DataConfig(dataset=str(args.dataset or ""), sidecar=str(sidecar or ""))
        loader = Loader(data, args.batch_size, seed=0)
        lr = loader_rate(loader, args.seconds)
        tr = train_rate(loader, args.steps, device)
    print(f"dataset {loader.ds.root} ({len(loader.train_rows):,} training steps), batch "
          f"{args.batch_size}, torch threads {torch.get_num_threads()}, {device}")
    print(f"loader: {lr:,.1f} batches/s ({lr * args.batch_size:,.0f} samples/s)")
    print(f"training step, reference model: {tr:,.2f} steps/s ({tr * args.batch_size:,.0f} "
          f"samples/s)")
    print(f"ratio loader / training: {lr / tr:,.1f} (target >= 10)")


if __name__ == "__main__":
    main()
