"""A small client of the inference server: one channel, reused for every call.

    from lab2048.serve.client import InferenceClient
    with InferenceClient("127.0.0.1:50051") as client:       # or "unix:/tmp/lab2048.sock"
        info = client.describe()                             # DescribeResponse
        target = client.value_target()                       # ValueTarget, or None
        out = client.infer(exponents)                        # uint8 [N, 16]
        out.move_probs, out.best_move, out.value             # NumPy arrays, request order

`AsyncInferenceClient` is the same over grpc.aio (for many concurrent calls from one
process). An address is HOST:PORT, unix:PATH, or a path (taken as a Unix socket). An
unreachable server, and any failed call, is a one-line `UserError` naming the address and the
gRPC status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import grpc
import numpy as np

from lab2048.errors import UserError
from lab2048.serve._proto import inference_pb2 as pb
from lab2048.serve.rpc import InferenceStub
from lab2048.value_target import ValueTarget

MODES = {"default": pb.OUTPUT_MODE_UNSPECIFIED, "policy": pb.OUTPUT_MODE_POLICY_ONLY,
         "value": pb.OUTPUT_MODE_VALUE_ONLY, "both": pb.OUTPUT_MODE_POLICY_AND_VALUE}
OPTIONS = [("grpc.max_receive_message_length", 256 << 20),
           ("grpc.max_send_message_length", 256 << 20)]
CONNECT_TIMEOUT_S = 5.0


@dataclass
class InferOutput:
    """Per board, in request order (None where the response has no such output)."""

    ids: np.ndarray  # uint64 [N]
    move_probs: np.ndarray | None  # float32 [N, 4]
    legal_mask: np.ndarray | None  # uint8 [N]
    best_move: np.ndarray | None  # int64 [N]
    bin_probs: np.ndarray | None  # float32 [N, 4, classes], binned_ev
    value: np.ndarray | None  # float32 [N], points
    value_xform: np.ndarray | None  # float32 [N], h-space
    atom_probs: np.ndarray | None  # float32 [N, atoms]


def dial_address(address: str) -> str:
    """HOST:PORT or unix:PATH; a bare path (with a '/') means a Unix socket."""
    if address.startswith("unix:") or (":" in address and "/" not in address):
        return address
    if "/" in address:
        return f"unix:{address}"
    raise UserError(f"{address}: not a server address (HOST:PORT, unix:PATH or a socket path)")


def make_request(exponents, mode: str | int = "default", ids=None,
                 value_probs: bool = False) -> pb.InferRequest:
    """An InferRequest for exponents [N, 16] (ids default to 0..N-1)."""
    e = np.ascontiguousarray(np.asarray(exponents, np.uint8).reshape(-1, 16))
    ids = range(len(e)) if ids is None else [int(i) for i in ids]
    blob = e.tobytes()
    items = [pb.BoardItem(id=i, exponents=blob[16 * k:16 * k + 16]) for k, i in enumerate(ids)]
    return pb.InferRequest(items=items, output_mode=MODES.get(mode, mode),
                           include_value_probs=value_probs)


def parse_response(resp: pb.InferResponse) -> InferOutput:
    results = resp.results
    n = len(results)
    ids = np.fromiter((r.id for r in results), np.uint64, n)
    out = InferOutput(ids, None, None, None, None, None, None, None)
    if n and results[0].HasField("policy"):
        out.move_probs = np.array([r.policy.move_probs for r in results], np.float32)
        out.legal_mask = np.fromiter((r.policy.legal_mask for r in results), np.uint8, n)
        out.best_move = np.fromiter((r.policy.best_move for r in results), np.int64, n)
        if len(results[0].policy.bin_probs):
            out.bin_probs = np.array([r.policy.bin_probs for r in results],
                                     np.float32).reshape(n, 4, -1)
    if n and results[0].HasField("value"):
        out.value = np.fromiter((r.value.value for r in results), np.float32, n)
        out.value_xform = np.fromiter((r.value.value_xform for r in results), np.float32, n)
        if len(results[0].value.atom_probs):
            out.atom_probs = np.array([r.value.atom_probs for r in results], np.float32)
    return out


def value_target_of(description: pb.DescribeResponse, address: str = "server"
                    ) -> ValueTarget | None:
    """The served init's ValueTarget from a Describe answer (None when it is not recorded)."""
    if not description.value_target_json:
        return None
    try:
        return ValueTarget(**json.loads(description.value_target_json))
    except (ValueError, TypeError) as e:
        raise UserError(f"{address}: Describe's value_target_json is not a value target ({e})"
                        ) from None


def _error(address: str, e: grpc.RpcError) -> UserError:
    code = e.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return UserError(f"{address}: cannot reach the inference server ({e.details()})")
    return UserError(f"{address}: {code.name}: {e.details()}")


class InferenceClient:
    """Blocking client; one channel for its lifetime (close it, or use `with`)."""

    def __init__(self, address: str, timeout: float | None = 60.0, wait_ready: bool = True):
        self.address = dial_address(address)
        self.timeout = timeout
        self.channel = grpc.insecure_channel(self.address, options=OPTIONS)
        self.stub = InferenceStub(self.channel)
        if wait_ready:
            try:
                grpc.channel_ready_future(self.channel).result(timeout=CONNECT_TIMEOUT_S)
            except grpc.FutureTimeoutError:
                self.channel.close()
                raise UserError(f"{address}: cannot reach the inference server (no answer in "
                                f"{CONNECT_TIMEOUT_S:g} s)") from None

    def infer(self, exponents, mode: str | int = "default", ids=None,
              value_probs: bool = False) -> InferOutput:
        try:
            resp = self.stub.Infer(make_request(exponents, mode, ids, value_probs),
                                   timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(self.address, e) from None
        return parse_response(resp)

    def describe(self) -> pb.DescribeResponse:
        try:
            return self.stub.Describe(pb.DescribeRequest(), timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(self.address, e) from None

    def value_target(self) -> ValueTarget | None:
        """What the served value head predicts (γ, reward scale, ε, kind); None if unknown."""
        return value_target_of(self.describe(), self.address)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncInferenceClient:
    """The same over grpc.aio: `await client.infer(...)` from many tasks on one channel."""

    def __init__(self, address: str, timeout: float | None = 60.0):
        self.address = dial_address(address)
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(self.address, options=OPTIONS)
        self.stub = InferenceStub(self.channel)

    async def infer(self, exponents, mode: str | int = "default", ids=None,
                    value_probs: bool = False) -> InferOutput:
        try:
            resp = await self.stub.Infer(make_request(exponents, mode, ids, value_probs),
                                         timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(self.address, e) from None
        return parse_response(resp)

    async def describe(self) -> pb.DescribeResponse:
        try:
            return await self.stub.Describe(pb.DescribeRequest(), timeout=self.timeout)
        except grpc.RpcError as e:
            raise _error(self.address, e) from None

    async def value_target(self) -> ValueTarget | None:
        return value_target_of(await self.describe(), self.address)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncInferenceClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
