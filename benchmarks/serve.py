"""Benchmark: the inference server's throughput and latency against an in-process forward.

For 1, 8 and 64 concurrent clients (asyncio tasks on one channel, each sending requests of
`--boards` boards back to back for `--seconds`), against `lab2048 serve` started as a
subprocess on a Unix socket (restarted per level, so its batch statistics are per level):
- throughput in boards/s, p50 and p99 latency per call, errors;
- the server's mean forward batch size (printed by the server at shutdown);
- in-process `Model.predict` boards/s at that same batch size, measured in the same run after
  the server has stopped, and the ratio served / in-process (target >= 0.7).
`--soak S` adds one run of S seconds with 64 clients that must end with zero errors.

    python benchmarks/serve.py [--seconds 5] [--boards 16] [--soak 60] [--value]

Server and in-process forward use the same number of torch threads (`--threads`, default 1:
on a shared 2-core machine two OpenMP threads stall whenever one is descheduled).
The model is the reference small model (`ModelConfig()`, random weights: speed does not
depend on training), policy-only unless --value.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lab2048.engine.batch import from_exponents, legal_masks
from lab2048.model import Model, ModelConfig, ValueHeadConfig, save_init
from lab2048.serve.client import AsyncInferenceClient


def start_server(init: Path, sock: Path, max_batch: int, max_wait_ms: float, threads: int):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "lab2048", "serve", "--init", str(init),
                             "--uds", str(sock), "--max-batch", str(max_batch),
                             "--max-wait-ms", str(max_wait_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not sock.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"server did not start: {proc.stderr.read()}")
        time.sleep(0.1)
    return proc


def stop_server(proc) -> float:
    """SIGTERM; the server's mean forward batch size from its last line."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"server exited {proc.returncode}: {err}")
    m = re.search(r"mean ([\d.]+)", err)
    return float(m.group(1)) if m else float("nan")


async def load(address: str, clients: int, boards: int, seconds: float, mode: str):
    pool = np.random.default_rng(0).integers(0, 12, (4096, 16)).astype(np.uint8)
    latencies: list[float] = []
    errors = 0
    done = 0
    async with AsyncInferenceClient(address) as client:
        await client.infer(pool[:boards], mode)  # connect and warm up
        stop = time.perf_counter() + seconds

        async def worker(k: int):
            nonlocal errors, done
            i = k * boards
            while time.perf_counter() < stop:
                batch = pool[i % 4000:i % 4000 + boards]
                i += boards * clients
                t = time.perf_counter()
                try:
                    await client.infer(batch, mode)
                except Exception:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t)
                done += len(batch)

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        elapsed = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {"boards_per_s": done / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "calls": len(lat), "errors": errors}


def in_process(model: Model, batch: int, seconds: float, value: bool) -> float:
    ex = np.random.default_rng(1).integers(0, 12, (batch, 16)).astype(np.uint8)
    legal = legal_masks(*from_exponents(ex))
    for _ in range(3):
        model.predict(ex, legal, with_value=value)
    n, start = 0, time.perf_counter()
    while n < 5 or time.perf_counter() - start < seconds:
        model.predict(ex, legal, with_value=value)
        n += 1
    return n * batch / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="per level")
    ap.add_argument("--boards", type=int, default=16, help="boards per request")
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--max-wait-ms", type=float, default=0.5)
    ap.add_argument("--soak", type=float, default=0.0, help="seconds of a 64-client run")
    ap.add_argument("--value", action="store_true", help="a value head, and ask for values")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads, of the server and of the in-process forward alike")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    mode = "both" if args.value else "policy"
    torch.manual_seed(0)
    model = Model(ModelConfig(value_head=ValueHeadConfig(enabled=args.value))).eval()
    print(f"reference model ({model.num_parameters():,} parameters), {mode} outputs, "
          f"{args.boards} boards per request, max batch {args.max_batch}, max wait "
          f"{args.max_wait_ms:g} ms, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}")
    print(f"{'clients':>7} {'boards/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'mean batch':>10} {'in-process':>10} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        init = save_init(model, Path(tmp) / "init")
        levels = [int(c) for c in args.clients.split(",")]
        runs = [(c, args.seconds) for c in levels]
        if args.soak:
            runs.append((64, args.soak))
        for clients, seconds in runs:
            sock = Path(tmp) / f"s{clients}-{seconds:g}.sock"
            proc = start_server(init, sock, args.max_batch, args.max_wait_ms, args.threads)
            try:
                r = asyncio.run(load(f"unix:{sock}", clients, args.boards, seconds, mode))
            finally:
                mean_batch = stop_server(proc)
            batch = max(1, round(mean_batch)) if mean_batch == mean_batch else args.boards
            local = in_process(model, batch, min(seconds, 3.0), args.value)
            tag = f" ({seconds:g} s soak)" if (clients, seconds) == runs[-1] and args.soak else ""
            print(f"{clients:>7} {r['boards_per_s']:>10,.0f} {r['p50_ms']:>8.1f} "
                  f"{r['p99_ms']:>8.1f} {r['errors']:>6} {mean_batch:>10.1f} {local:>10,.0f} "
                  f"{r['boards_per_s'] / local:>6.2f}{tag}", flush=True)


if __name__ == "__main__":
    main()
