"""Benchmark: forward throughput of the reference small model, against baselines measured in the
same run.

CPU, float32, eval mode, batch sizes 1, 64 and 1024:
- boards/s of `Model(ModelConfig())` (policy head; again with the default value head);
- ratio to a plain torch.nn.TransformerEncoder of the same width, depth, heads and MLP
  parameters (pre-norm, eval mode, so PyTorch may take its fused fast path);
- achieved GFLOP/s (matmuls and attention, 2 FLOPs a multiply-add) as a fraction of a
  float32 matmul measured on this CPU.
With a CUDA device: bf16-autocast forward+backward throughput at batch 4096, achieved TFLOP/s
as a fraction of a bf16 matmul measured on the device (and of its datasheet peak if known).

    python benchmarks/model.py [--seconds 1.0] [--compile]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch import nn

from lab2048.model import Model, ModelConfig, ValueHeadConfig

DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def forward_flops(cfg: ModelConfig) -> float:
    """FLOPs of the encoder's forward pass for one board (16 tokens)."""
    d, kv = cfg.hidden, 2 * cfg.kv_heads * (cfg.hidden // cfg.heads)
    per_token = 2 * (2 * d * d + d * kv + 3 * d * cfg.mlp)
    attention = 2 * 2 * 16 * d  # QK^T and AV, per query token
    return cfg.layers * 16 * (per_token + attention)


def timed(fn, seconds: float) -> float:
    """Calls per second of fn() over about `seconds` (after a warm-up)."""
    for _ in range(3):
        fn()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls / (time.perf_counter() - start)


def matmul_flops(device: str, dtype: torch.dtype, n: int, seconds: float) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def step():
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    return 2 * n**3 * timed(step, seconds)


def baseline(cfg: ModelConfig) -> nn.Module:
    """torch.nn.TransformerEncoder with the same width, depth, heads and MLP parameter count."""
    layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.heads, dim_feedforward=3 * cfg.mlp // 2,
                                       dropout=0.0, batch_first=True, norm_first=True)
    embed = nn.Embedding(cfg.vocab, cfg.hidden)
    encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
    return nn.Sequential(embed, encoder)


def cpu_table(args) -> None:
    cfg = ModelConfig()
    with_value = dataclasses.replace(cfg, value_head=ValueHeadConfig(enabled=True))
    plain = {"model": Model(cfg).eval(), "model+value": Model(with_value).eval()}
    models = {k: torch.compile(m) for k, m in plain.items()} if args.compile else plain
    ref = baseline(cfg).eval()
    peak = matmul_flops("cpu", torch.float32, 1024, args.seconds)
    n, n_value = plain["model"].num_parameters(), plain["model+value"].num_parameters()
    print(f"reference small model: {n:,} parameters (the default value head adds "
          f"{n_value - n:,}); CPU, {torch.get_num_threads()} threads, float32 matmul "
          f"{peak / 1e9:.1f} GFLOP/s")
    flops = forward_flops(cfg)
    for batch in (1, 64, 1024):
        tokens = torch.randint(0, 18, (batch, 16))
        with torch.inference_mode():
            rates = {name: batch * timed(lambda m=m, t=tokens: m(t), args.seconds)
                     for name, m in (*models.items(), ("baseline", ref))}
        print(f"batch {batch:5d}: {rates['model']:10,.0f} boards/s  "
              f"(with value head {rates['model+value']:10,.0f})  "
              f"x{rates['model'] / rates['baseline']:.2f} of nn.TransformerEncoder "
              f"({rates['baseline']:,.0f})  {rates['model'] * flops / 1e9:6.1f} GFLOP/s = "
              f"{rates['model'] * flops / peak:.0%} of matmul")


def gpu_train_step(args) -> None:
    cfg = dataclasses.replace(ModelConfig(), value_head=ValueHeadConfig(enabled=True))
    model = Model(cfg).cuda().train()
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch = 4096
    tokens = torch.randint(0, 18, (batch, 16), device="cuda")
    moves = torch.randint(0, 4, (batch,), device="cuda")
    atoms = torch.randint(0, cfg.value_head.support.n, (batch,), device="cuda")

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            _, policy, value = step_model(tokens)
            loss = nn.functional.cross_entropy(policy.float(), moves) + \
                nn.functional.cross_entropy(value.float(), atoms)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()

    rate = batch * timed(step, args.seconds * 3)
    achieved = 3 * forward_flops(cfg) * rate  # forward + backward (twice the forward)
    peak = matmul_flops("cuda", torch.bfloat16, 8192, args.seconds)
    name = torch.cuda.get_device_name()
    sheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in name), None)
    sheet_text = f", {achieved / (sheet * 1e12):.1%} of the datasheet {sheet:.0f}" if sheet else ""
    print(f"{name}: bf16 forward+backward+AdamW at batch {batch}: {rate:,.0f} boards/s, "
          f"{achieved / 1e12:.1f} TFLOP/s (encoder) = {achieved / peak:.1%} of a measured bf16 "
          f"matmul ({peak / 1e12:.0f} TFLOP/s){sheet_text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU measurement")
    args = parser.parse_args()
    torch.manual_seed(0)
    if not args.skip_cpu:
        cpu_table(args)
    if torch.cuda.is_available():
        gpu_train_step(args)
    else:
        print("no CUDA device: GPU figures skipped")


if __name__ == "__main__":
    main()
