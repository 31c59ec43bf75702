"""The Inference service's gRPC bindings: the client stub and the server's method handlers,
read from the service descriptor of the generated messages (inference_pb2).

    stub = InferenceStub(channel)               # grpc or grpc.aio channel
    response = stub.Infer(request, timeout=5)   # (await it on grpc.aio)
    add_to_server(service, server)              # service.Infer(request, context), ...

Choices
- Only the messages are generated and committed (`_proto/inference_pb2.py` and its `.pyi`,
  by `python -m lab2048.serve._proto.generate`). grpcio-tools' service module
  (`inference_pb2_grpc.py`) is not: all it holds per rpc is the path `/SERVICE/METHOD` and
  the request and response classes' `SerializeToString` / `FromString`, written out once for
  the stub, once for the server and once more for an experimental API, pinned to the grpcio
  version that generated it. Here the same bindings are built from
  `inference_pb2.DESCRIPTOR`, so the .proto stays the one home of the service: a method added
  there appears here when the messages are regenerated.
- A method's Python name is its .proto name (`stub.Infer`, `service.Describe`), as in the
  generated module, so callers read the same.
- `add_to_server` takes the request parser as an argument: the server passes one that never
  raises (serve/server.py `_lenient`), so undecodable bytes get INVALID_ARGUMENT rather than
  gRPC's UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from lab2048.serve._proto import inference_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Inference"]
SERVICE_NAME = SERVICE.full_name  # lab2048.inference.v1.Inference


def methods() -> list[tuple[str, type, type]]:
    """(name, request class, response class) of each rpc, in the .proto's order."""
    return [(m.name, getattr(pb, m.input_type.name), getattr(pb, m.output_type.name))
            for m in SERVICE.methods]


class InferenceStub:
    """One callable per rpc on a channel (grpc or grpc.aio): `stub.Infer(request, timeout=)`."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel):
        for name, request, response in methods():
            setattr(self, name, channel.unary_unary(
                f"/{SERVICE_NAME}/{name}", request_serializer=request.SerializeToString,
                response_deserializer=response.FromString))


def add_to_server(service, server: grpc.Server | grpc.aio.Server,
                  parse: Callable[[type], Callable[[bytes], object]] = lambda cls: cls.FromString
                  ) -> None:
    """Serve `service`'s methods (one per rpc, named as in the .proto) on `server`; a
    request's bytes are read by `parse(request class)`."""
    handlers = {name: grpc.unary_unary_rpc_method_handler(
                    getattr(service, name), request_deserializer=parse(request),
                    response_serializer=response.SerializeToString)
                for name, request, response in methods()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME,
                                                                          handlers),))
