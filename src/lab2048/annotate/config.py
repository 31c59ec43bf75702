"""The `lab2048 annotate` and `lab2048 view` configs (stdlib only: the CLI builds its flags
before importing numba, torch or uvicorn)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab2048.config import DEVICE_HELP, check_device
from lab2048.scale import RAY_GPUS_HELP, RAY_HELP

DEFAULT_PORT = 8048


@dataclass
class AnnotateConfig:
    dataset: str = field(default="", metadata={
        "help": "packed dataset (default: the small one embedded in the package)"})
    init: str = field(default="", metadata={"help": "model init directory"})
    server: str = field(default="", metadata={
        "help": "annotate through this inference server (HOST:PORT or unix:PATH) instead of "
                "in process; with --init too, that init names the served model"})
    out: str = field(default="", metadata={
        "help": "directory for the annotations (default: the dataset's directory)"})
    sidecar: str = field(default="", metadata={
        "help": "value sidecar whose gamma to use when the init records none and no --gamma "
                "is given"})
    where: str = field(default="", metadata={
        "help": "SQL condition on metadata.db's runs (e.g. 'highest_tile >= 8192'); other "
                "runs keep their rows, marked as not annotated"})
    batch: int = field(default=4096, metadata={
        "help": "steps per chunk, and boards per forward pass"})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})
    threads: int = field(default=0, metadata={
        "help": "torch CPU threads of an in-process model (0: torch's default)"})
    value_sidecar: bool = field(default=True, metadata={
        "help": "write the value annotations (value, 1-ply Q of each move, atom "
                "probabilities) beside the policy ones"})
    gamma: float = field(default=0.0, metadata={
        "help": "discount of the 1-ply Q, only for an init that records no value target "
                "(0: the --sidecar's gamma, else 0.997)"})
    ray: str = field(default="", metadata={"help": RAY_HELP, "metavar": "ADDRESS"})
    ray_gpus: float = field(default=0.0, metadata={"help": RAY_GPUS_HELP})

    def __post_init__(self) -> None:
        if not (self.init or self.server):
            raise ValueError("annotate needs --init DIR or --server ADDR")
        if self.ray and (self.server or not self.init):
            raise ValueError("--ray sends the model to the cluster: give --init DIR, not "
                             "--server")
        if self.ray_gpus < 0:
            raise ValueError(f"ray_gpus must be 0 or more, got {self.ray_gpus}")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        if self.threads < 0:
            raise ValueError(f"threads must be 0 or more, got {self.threads}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1] (0: unset), got {self.gamma}")
        check_device(self.device)


@dataclass
class ViewConfig:
    dataset: str = field(default="", metadata={
        "help": "packed dataset (default: the small one embedded in the package)"})
    annotations: str = field(default="", metadata={
        "help": "annotation directory (default: the dataset's, if it holds annotations)"})
    sidecar: str = field(default="", metadata={
        "help": "value sidecar directory (default: the dataset's, if it holds one)"})
    host: str = field(default="127.0.0.1", metadata={
        "help": "address to listen on (loopback by default: the viewer has no login)"})
    port: int = field(default=DEFAULT_PORT, metadata={"help": "TCP port"})

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
