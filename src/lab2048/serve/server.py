"""`lab2048 serve`: the gRPC inference server (proto/lab2048/inference/v1/inference.proto).

Choices:
- grpc.aio on one event loop; every Infer call is validated, its boards' legal moves are
  computed with the engine, and its boards go to the shared `Batcher` (one forward pass for
  many concurrent calls, in one inference thread).
- Listens on TCP (127.0.0.1 by default: nothing is exposed unless asked) or a Unix domain
  socket; serves the standard health service (grpc.health.v1) for "" and the Inference
  service, which turns NOT_SERVING when shutdown begins.
- Bad requests get INVALID_ARGUMENT with the item and the problem; a failing forward gets
  INTERNAL for the calls in its batch only; the server keeps serving either way.
- SIGTERM and SIGINT shut down gracefully: stop accepting, let calls in flight finish (a few
  seconds' grace), stop the batcher, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lab2048.engine.batch import from_exponents, legal_masks
from lab2048.engine.conventions import MAX_EXPONENT
from lab2048.model import Model
from lab2048.serve._proto import inference_pb2 as pb
from lab2048.serve._proto import inference_pb2_grpc as pb_grpc
from lab2048.serve.batcher import Batcher, BatchFailed, ModelRunner, Runner

SERVICE = "lab2048.inference.v1.Inference"
MAX_MESSAGE = 256 << 20
GRACE_S = 5.0
VALUE_MODES = (pb.OUTPUT_MODE_VALUE_ONLY, pb.OUTPUT_MODE_POLICY_AND_VALUE)
TRANSFORM = "h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x of reward_scale x the return"


def describe_model(model: Model, init_dir: str | Path | None = None, max_batch: int = 0
                   ) -> pb.DescribeResponse:
    """The Describe answer for a model (and its init directory, for config.json and gamma)."""
    cfg = model.cfg
    d = pb.DescribeResponse(has_policy_head=True, has_value_head=model.value is not None,
                            policy_head=cfg.policy_head, parameters=model.num_parameters(),
                            max_batch=max_batch, device=str(next(model.parameters()).device),
                            config_json=cfg.to_json())
    if cfg.policy_head == "binned_ev":
        d.ev_bins = cfg.ev_bins
        if model.bins is not None:
            d.ev_classes.extend(model.bins.classes)
            d.ev_bin_edges.extend(model.bins.edges)
    if model.value is not None:
        v = cfg.value_head
        d.value_objective = v.objective
        if v.objective == "cross_entropy":
            d.value_support.CopyFrom(pb.ValueSupport(min=v.support.min, max=v.support.max,
                                                     n=v.support.n))
        d.value_transform = TRANSFORM
        d.value_epsilon, d.value_reward_scale = v.epsilon, v.reward_scale
        gamma = _training_gamma(init_dir)
        d.value_target = ("discounted return G_t = sum_k gamma^k r_(t+k) of the merge rewards, "
                          "in points" + (f", gamma = {gamma}" if gamma is not None else ""))
    return d


def _training_gamma(init_dir: str | Path | None) -> float | None:
    """gamma from the init's training-config.json, if it records one (any nesting)."""
    if init_dir is None:
        return None
    try:
        data = json.loads((Path(init_dir) / "training-config.json").read_text())
    except (OSError, ValueError):
        return None
    stack = [data]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            if isinstance(x.get("gamma"), int | float) and not isinstance(x["gamma"], bool):
                return float(x["gamma"])
            stack.extend(x.values())
    return None


class InferenceService(pb_grpc.InferenceServicer):
    def __init__(self, model: Model, batcher: Batcher, description: pb.DescribeResponse):
        self.has_value = model.value is not None
        self.batcher = batcher
        self.description = description

    async def Describe(self, request, context):
        return self.description

    async def Infer(self, request, context):
        items = request.items
        mode = request.output_mode
        if not items:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "empty batch: send at least one board")
        if mode not in pb.OutputMode.values():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown output_mode {mode}")
        if mode in VALUE_MODES and not self.has_value:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{pb.OutputMode.Name(mode)}: the served model has no value head")
        raw = [it.exponents for it in items]
        for i, r in enumerate(raw):
            if len(r) != 16:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"item {i} (id {items[i].id}): board has {len(r)} bytes, "
                                    "expected 16 exponents")
        tokens = np.frombuffer(b"".join(raw), np.uint8).reshape(-1, 16)
        if int(tokens.max()) > MAX_EXPONENT:
            i = int(np.flatnonzero(tokens.max(1) > MAX_EXPONENT)[0])
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"item {i} (id {items[i].id}): exponent {int(tokens[i].max())} "
                                f"out of range 0..{MAX_EXPONENT}")
        legal = legal_masks(*from_exponents(tokens))
        want_policy = mode != pb.OUTPUT_MODE_VALUE_ONLY
        want_value = self.has_value and mode != pb.OUTPUT_MODE_POLICY_ONLY
        try:
            res = await self.batcher.submit(tokens, legal, policy=want_policy, value=want_value,
                                            atoms=request.include_value_probs)
        except BatchFailed as e:
            await context.abort(grpc.StatusCode.INTERNAL, f"inference failed: {e}")
        return _response(items, legal, res)


def _response(items, legal: np.ndarray, res) -> pb.InferResponse:
    ids = [it.id for it in items]
    out = pb.InferResponse()
    results = out.results
    n = len(ids)
    policies = [None] * n
    if res.move_probs is not None:
        probs = res.move_probs.tolist()
        best = np.argmax(res.move_probs, 1).tolist()  # first maximum: lowest UDLR index
        bins = res.bin_probs.reshape(n, -1).tolist() if res.bin_probs is not None else None
        lg = legal.tolist()
        policies = [pb.PolicyOutput(move_probs=probs[i], legal_mask=lg[i], best_move=best[i],
                                    bin_probs=bins[i] if bins else None) for i in range(n)]
    values = [None] * n
    if res.value is not None:
        v, x = res.value.tolist(), res.value_xform.tolist()
        atoms = res.atom_probs.tolist() if res.atom_probs is not None else None
        values = [pb.ValueOutput(value=v[i], value_xform=x[i],
                                 atom_probs=atoms[i] if atoms else None) for i in range(n)]
    results.extend(pb.ItemResult(id=ids[i], policy=policies[i], value=values[i])
                   for i in range(n))
    return out


@dataclass
class RunningServer:
    server: grpc.aio.Server
    batcher: Batcher
    health: health.aio.HealthServicer
    address: str  # what a client dials: "127.0.0.1:PORT" or "unix:PATH"

    async def stop(self, grace: float = GRACE_S) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.batcher.close()


def listen_address(tcp: str | None = None, uds: str | None = None) -> str:
    """The gRPC bind address: unix:PATH, or HOST:PORT (default 127.0.0.1:50051)."""
    if tcp and uds:
        raise ValueError("give --tcp or --uds, not both")
    if uds:
        return f"unix:{Path(uds).absolute()}"
    tcp = tcp or "127.0.0.1:50051"
    host, sep, port = tcp.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--tcp wants HOST:PORT, got {tcp!r}")
    return f"{host or '127.0.0.1'}:{port}"


async def start_server(model: Model, address: str, *, max_batch: int = 256,
                       max_wait_ms: float = 0.5, runner: Runner | None = None,
                       init_dir: str | Path | None = None) -> RunningServer:
    """Build, bind and start a server for `model` on `address` (see listen_address)."""
    batcher = Batcher(runner or ModelRunner(model), max_batch, max_wait_ms)
    batcher.start()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                      ("grpc.max_send_message_length", MAX_MESSAGE),
                                      ("grpc.so_reuseport", 0)])
    pb_grpc.add_InferenceServicer_to_server(
        InferenceService(model, batcher, describe_model(model, init_dir, max_batch)), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        await batcher.close()
        raise OSError(f"{address}: cannot listen ({e})") from None
    dial = address if address.startswith("unix:") else f"{address.rpartition(':')[0]}:{port}"
    await server.start()
    for name in ("", SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, batcher, health_servicer, dial)


async def _serve_until_signal(model: Model, address: str, max_batch: int, max_wait_ms: float,
                              init_dir: str | Path | None) -> None:
    running = await start_server(model, address, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                 init_dir=init_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kind = "value head" if model.value is not None else "no value head"
    print(f"serving {init_dir or 'a model'} ({model.cfg.policy_head}, {kind}) on "
          f"{running.address}, max batch {max_batch}, max wait {max_wait_ms:g} ms", flush=True)
    await stop.wait()
    print("shutting down", file=sys.stderr, flush=True)
    await running.stop()
    s = running.batcher.stats
    print(f"served {s.boards:,} boards in {s.batches:,} batches (mean {s.mean:.1f}, "
          f"largest {s.largest}, failed {s.failed})", file=sys.stderr, flush=True)


def serve(init_dir: str | Path, *, tcp: str | None = None, uds: str | None = None,
          device: str = "cpu", max_batch: int = 256, max_wait_ms: float = 0.5,
          threads: int = 0) -> int:
    """The `lab2048 serve` command: load the init directory and serve it until a signal."""
    from lab2048.errors import UserError
    from lab2048.model import load_init

    try:
        address = listen_address(tcp, uds)
    except ValueError as e:
        raise UserError(str(e)) from None
    if max_batch < 1 or max_wait_ms < 0:
        raise UserError("--max-batch must be at least 1 and --max-wait-ms at least 0")
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available")
    if threads > 0:
        torch.set_num_threads(threads)
    model = load_init(init_dir, device=device)
    try:
        asyncio.run(_serve_until_signal(model, address, max_batch, max_wait_ms, init_dir))
    except OSError as e:
        raise UserError(str(e)) from None
    with contextlib.suppress(OSError):
        if address.startswith("unix:"):
            Path(address[5:]).unlink(missing_ok=True)
    return 0
