"""Regenerate the committed message modules from proto/lab2048/inference/v1/inference.proto.

    python -m lab2048.serve._proto.generate          # rewrites the stubs beside this file

Needs grpcio-tools (the dev extra, for its protoc). protoc writes the messages
(inference_pb2.py, and inference_pb2.pyi for type checkers) under the proto's package path
(lab2048/inference/v1/); they are moved here, so the descriptor keeps the proto's own file
name (lab2048/inference/v1/inference.proto). No service module is generated: the gRPC
bindings are read from the messages' service descriptor (lab2048/serve/rpc.py).
tests/test_serve.py regenerates into a temporary directory and compares, so the committed
stubs cannot drift from the .proto.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parents[3] / "proto"  # src/lab2048/serve/_proto -> repository root
PROTO = "lab2048/inference/v1/inference.proto"
STUBS = ("inference_pb2.py", "inference_pb2.pyi")


def generate(out_dir: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Write the stubs into out_dir; return their paths."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{proto_root}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                str(proto_root / PROTO)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto_root / PROTO}")
        made = Path(tmp) / Path(PROTO).parent
        out = []
        for name in STUBS:
            text = (made / name).read_text()
            (out_dir / name).write_text("# ruff: noqa\n" + text)  # generated: not linted
            out.append(out_dir / name)
    return out


if __name__ == "__main__":
    for path in generate(HERE):
        print(f"wrote {path}")
    sys.exit(0)
