"""The whole training step against its device-resident synthetic bound, and the data path alone.

    python benchmarks/train_step.py --device cpu|cuda [--batch-size 4096] [--dataset DIR
        --sidecar DIR] [--model-batch N] [--rounds 3] [--threads N]

Whole step: what `lab2048 train` does per step: `Batches.get` (gather the rows on the device,
decode, legal bits, a random symmetry each) then the forward, losses, backward, clipping and
AdamW step of the reference model (ModelConfig() with its two-hot value head; bf16 autocast
and fused AdamW on CUDA, float32 on CPU). Bound: the same model, optimiser and losses on one
batch already on the device (no data work at all). Both are timed in the same run, in
alternating rounds; the ratio whole / bound says what the data costs (target: >= 0.9 on a GPU
at batch 4096, >= 0.8 on a CPU). Data path alone: `Batches.get` with no model, in samples/s
at batch 4096 (target on a CPU: >= 1,000,000 with 2 cores). Without --dataset it uses the
embedded dataset with a sidecar built in a temporary directory. `--model-batch` sets the
batch of the two model measurements (default: --batch-size; a CPU takes seconds a step).
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
from lab2048.train.config import DataConfig, from_dict
from lab2048.train.loader import Batches, Spec, open_source, read_columns
from lab2048.train.trainer import losses, outputs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data_rate(batches: Batches, seconds: float) -> float:
    """Samples/s of Batches.get alone, at steps spread over the epochs."""
    batches.get(0)
    sync(batches.device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batches.get(1 + n)
        n += 1
    sync(batches.device)
    return n * batches.batch_size / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--model-batch", type=int, default=0)
    p.add_argument("--dataset", type=Path)
    p.add_argument("--sidecar", type=Path)
    p.add_argument("--steps", type=int, default=3, help="timed steps a round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0, help="data path timing")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        sidecar = args.sidecar
        if args.dataset is None and sidecar is None:
            sidecar = Path(tmp)
            build_sidecar(default_dataset(), SidecarConfig(), output=sidecar, workers=1)
        source = open_source(DataConfig(dataset=str(args.dataset or ""),
                                        sidecar=str(sidecar or ""), val_rows=1))
        cols = read_columns(source, source.train_rows, Spec())
    print(f"{len(cols['move']):,} training rows on {device} "
          f"({torch.get_num_threads()} CPU threads)")

    batches = Batches(cols, args.batch_size, 0, device, placement="device")
    rate = data_rate(batches, args.seconds)
    print(f"data path alone (gather, decode, legal bits, symmetries), batch "
          f"{args.batch_size:,}: {rate:,.0f} samples/s")

    mb = args.model_batch or args.batch_size
    batches = Batches(cols, mb, 0, device, placement="device")
    mcfg = ModelConfig(value_head=ValueHeadConfig(enabled=True))
    cfg = from_dict({"model": {"value_head": {"enabled": True}}})
    torch.manual_seed(0)
    model = Model(mcfg).to(device).train()
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(model) if args.compile else model
    fixed = batches.get(0)  # the bound's batch: on the device before timing starts

    def step(batch) -> None:
        policy_out, value_out = outputs(forward, batch, policy=True, value=True,
                                        afterstate=False)
        out = losses(cfg, model, None, batch, policy_out, value_out, True, True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(get) -> float:
        sync(device)
        start = time.perf_counter()
        for s in range(args.steps):
            step(get(s))
        sync(device)
        return args.steps * mb / (time.perf_counter() - start)

    step(fixed)  # warm-up (and compilation)
    step(batches.get(1))
    whole, bound = [], []
    for r in range(args.rounds):
        whole.append(timed(lambda s, r=r: batches.get(2 + r * args.steps + s)))
        bound.append(timed(lambda s: fixed))
    best_w, best_b = max(whole), max(bound)
    print(f"model: {model.num_parameters():,} parameters, batch {mb:,}, "
          f"{args.rounds} rounds of {args.steps} steps")
    print(f"whole step (data on {device} included): {best_w:,.0f} samples/s")
    print(f"synthetic bound (batch already on {device}): {best_b:,.0f} samples/s")
    print(f"ratio whole / bound: {best_w / best_b:.3f} (best rounds; median "
          f"{sorted(whole)[len(whole) // 2] / sorted(bound)[len(bound) // 2]:.3f})")


if __name__ == "__main__":
    main()
