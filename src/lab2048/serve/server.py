"""`lab2048 serve`: the gRPC inference server (proto/lab2048/inference/v1/inference.proto).

Choices:
- grpc.aio on one event loop; every Infer call is validated, its boards' legal moves are
  computed with the engine, and its boards go to the shared `Batcher` (one forward pass for
  many concurrent calls, in one inference thread).
- Listens on TCP (127.0.0.1 by default: nothing is exposed unless asked) or a Unix domain
  socket; serves the standard health service (grpc.health.v1) for "" and the Inference
  service, which turns NOT_SERVING when shutdown begins.
- Bad requests get INVALID_ARGUMENT with the item and the problem (also bytes that do not
  decode as the request message: the deserializers never raise); a failing forward gets
  INTERNAL for the calls in its batch only; the server keeps serving either way.
- A board with no legal move gets move probabilities 0 for all four moves (`move_probs`).
- Before gRPC binds, the address is checked with a plain socket, so a busy port or a socket
  path where another server answers is one line (`lab2048 serve` also sets GRPC_VERBOSITY=NONE
  unless the environment sets it, so the C core logs nothing on top). gRPC replaces a stale
  socket file when it binds and removes its socket at shutdown.
- Describe reports the init's value-target.json as `value_target_json` ("" when absent).
- SIGTERM and SIGINT shut down gracefully: stop accepting, let calls in flight finish (a few
  seconds' grace), stop the batcher, exit 0.
"""

from __future__ import annotations

import asyncio
import errno
import json
import signal
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import torch
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lab2048.engine.arrays import exponent_legal_masks
from lab2048.engine.conventions import MAX_EXPONENT
from lab2048.errors import UserError
from lab2048.model import Model, load_init
from lab2048.serve import rpc
from lab2048.serve._proto import inference_pb2 as pb
from lab2048.serve.batcher import Batcher, BatchFailed, ModelRunner, Runner
from lab2048.serve.config import ServeConfig
from lab2048.value_target import read_value_target

SERVICE = rpc.SERVICE_NAME
MAX_MESSAGE = 256 << 20
GRACE_S = 5.0
VALUE_MODES = (pb.OUTPUT_MODE_VALUE_ONLY, pb.OUTPUT_MODE_POLICY_AND_VALUE)
TRANSFORM = "h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x of reward_scale x the return"


def describe_model(model: Model, init_dir: str | Path | None = None, max_batch: int = 0
                   ) -> pb.DescribeResponse:
    """The Describe answer for a model (and its init directory, for value-target.json)."""
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
        target = read_value_target(init_dir) if init_dir is not None else None
        if target is None:
            d.value_target = ("discounted return G_t = sum_k gamma^k r_(t+k) of the merge "
                              "rewards, in points (gamma not recorded in the init)")
        else:
            d.value_target = target.describe()
            d.value_target_json = json.dumps(target.to_dict(), sort_keys=True)
    return d


@dataclass
class Undecodable:
    """What a handler receives for request bytes that do not decode as its message."""

    message: str  # the expected message's name
    error: str


def _lenient(message_cls):
    """A request deserializer that returns Undecodable instead of raising (gRPC would answer
    UNKNOWN), so the handler can answer INVALID_ARGUMENT."""
    def parse(data: bytes):
        try:
            return message_cls.FromString(data)
        except DecodeError as e:
            return Undecodable(message_cls.__name__, str(e) or "cannot decode")
    return parse


async def _refuse_undecodable(request, context) -> None:
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"the request does not decode as {request.message} ({request.error})")


class InferenceService:
    """The Inference rpcs (registered by `rpc.add_to_server`)."""

    def __init__(self, model: Model, batcher: Batcher, description: pb.DescribeResponse):
        self.has_value = model.value is not None
        self.batcher = batcher
        self.description = description

    async def Describe(self, request, context):
        await _refuse_undecodable(request, context)
        return self.description

    async def Infer(self, request, context):
        await _refuse_undecodable(request, context)
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
        legal = exponent_legal_masks(tokens)
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


def check_address(address: str) -> None:
    """OSError with one line if `address` cannot be listened on: a TCP port another socket
    holds, a Unix socket path where a server answers, or a path that is not a socket."""
    if address.startswith("unix:"):
        path = Path(address[5:])
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise OSError(f"{path}: exists and is not a socket")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                return  # a stale socket file: nobody answers, gRPC replaces it
        raise OSError(f"{path}: another server is listening on this socket")
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            probe.bind(sockaddr)
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno == errno.EADDRINUSE:
            reason = "the port is in use"
        raise OSError(f"{address}: cannot listen ({reason})") from None


async def start_server(model: Model, address: str, *, max_batch: int = 256,
                       max_wait_ms: float = 0.5, runner: Runner | None = None,
                       init_dir: str | Path | None = None) -> RunningServer:
    """Build, bind and start a server for `model` on `address` (HOST:PORT or unix:PATH)."""
    check_address(address)
    batcher = Batcher(runner or ModelRunner(model), max_batch, max_wait_ms)
    batcher.start()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                      ("grpc.max_send_message_length", MAX_MESSAGE),
                                      ("grpc.so_reuseport", 0)])
    rpc.add_to_server(InferenceService(model, batcher, describe_model(model, init_dir, max_batch)),
                      server, parse=_lenient)
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


def serve(cfg: ServeConfig) -> int:
    """The `lab2048 serve` command: load the init directory and serve it until a signal."""
    try:
        check_address(cfg.address)  # before loading: a busy address costs nothing
    except OSError as e:
        raise UserError(str(e)) from None
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    model = load_init(cfg.init, device=cfg.device)
    try:
        asyncio.run(_serve_until_signal(model, cfg.address, cfg.max_batch, cfg.max_wait_ms,
                                        cfg.init))
    except OSError as e:
        raise UserError(str(e)) from None
    return 0
