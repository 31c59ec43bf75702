"""The `lab2048 annotate` and `lab2048 view` configs (stdlib only: the CLI builds its flags
before importing numba, torch or uvicorn)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lab2048.config import DEVICE_HELP, check_device, check_fields
from lab2048.scale import RAY_GPUS_HELP, RAY_HELP
from lab2048.value_target import DEFAULT_GAMMA, gamma_field

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
        "help": "steps per chunk, and boards per forward pass", "min": 1})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})
    threads: int = field(default=0, metadata={
        "help": "torch CPU threads of an in-process model (0: torch's default)", "min": 0})
    value_sidecar: bool = field(default=True, metadata={
        "help": "write the value annotations (value, 1-ply Q of each move, atom "
                "probabilities) beside the policy ones"})
    gamma: float | None = gamma_field(
        f"the init's value-target.json; for an init that records none, the --sidecar's, else "
        f"{DEFAULT_GAMMA}")
    ray: str = field(default="", metadata={"help": RAY_HELP, "metavar": "ADDRESS"})
    ray_gpus: float = field(default=0.0, metadata={"help": RAY_GPUS_HELP, "min": 0})

    def __post_init__(self) -> None:
        check_fields(self)
        if not (self.init or self.server):
            raise ValueError("annotate needs --init DIR or --server ADDR")
        if self.ray and (self.server or not self.init):
            raise ValueError("--ray sends the model to the cluster: give --init DIR, not "
                             "--server")
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
    port: int = field(default=DEFAULT_PORT, metadata={"help": "TCP port", "min": 0,
                                                      "max": 65535})

    def __post_init__(self) -> None:
        check_fields(self)
