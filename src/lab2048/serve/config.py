"""The `lab2048 serve` config (stdlib only: the CLI builds its flags before importing grpc)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lab2048.config import DEVICE_HELP, check_device

DEFAULT_TCP = "127.0.0.1:50051"


@dataclass
class ServeConfig:
    """Serve a model init directory with the gRPC Inference service
    (proto/lab2048/inference/v1/inference.proto) and the standard health service. Concurrent
    requests share forward passes. Listens on 127.0.0.1:50051 unless told otherwise; SIGTERM
    or SIGINT shut it down gracefully."""

    init: str = field(default="", metadata={"help": "model init directory (required)",
                                            "metavar": "DIR"})
    tcp: str = field(default="", metadata={"help": f"TCP address (default: {DEFAULT_TCP})",
                                           "metavar": "HOST:PORT"})
    uds: str = field(default="", metadata={"help": "Unix domain socket instead of TCP",
                                           "metavar": "PATH"})
    device: str = field(default="cpu", metadata={"help": DEVICE_HELP})
    max_batch: int = field(default=256, metadata={"help": "boards per forward pass at most",
                                                  "metavar": "N"})
    max_wait_ms: float = field(default=0.5, metadata={
        "help": "how long a batch waits to fill after its first board (on a CPU, boards "
                "arriving during a forward fill the next batch anyway)", "metavar": "T"})
    threads: int = field(default=0, metadata={
        "help": "torch CPU threads (0: torch's default, one per core)", "metavar": "N"})

    def __post_init__(self) -> None:
        if not self.init:
            raise ValueError("--init DIR is required")
        if self.tcp and self.uds:
            raise ValueError("give --tcp or --uds, not both")
        if not self.uds:
            tcp_address(self.tcp or DEFAULT_TCP)
        check_device(self.device)
        if self.max_batch < 1:
            raise ValueError(f"--max-batch must be at least 1, got {self.max_batch}")
        if not (math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0):
            raise ValueError(f"--max-wait-ms must be a number >= 0, got {self.max_wait_ms}")
        if self.threads < 0:
            raise ValueError(f"--threads must be 0 (torch's default) or more, got {self.threads}")

    @property
    def address(self) -> str:
        """The gRPC bind address: unix:PATH (absolute), or HOST:PORT."""
        if self.uds:
            return f"unix:{Path(self.uds).absolute()}"
        return tcp_address(self.tcp or DEFAULT_TCP)


def tcp_address(tcp: str) -> str:
    """HOST:PORT checked, with a port of 1..65535 (gRPC would take 99999 modulo 65536); an
    empty host is 127.0.0.1. ValueError naming --tcp otherwise."""
    host, sep, port = tcp.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--tcp wants HOST:PORT, got {tcp!r}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"--tcp {tcp}: port must be in 1..65535")
    return f"{host or '127.0.0.1'}:{int(port)}"
