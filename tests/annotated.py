"""Builders shared by the annotation and viewer tests: a three-shard dataset cut from the
embedded one, its value sidecar, a tiny model init with a categorical value head, and its
annotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RUNS = (15, 2, 1)  # the three shortest games of the embedded dataset (337, 453, 473 steps)
SHARD_ROWS = 500  # three shards; runs 2 and 1 continue across shard boundaries
GAMMA = 0.99


def small_dataset(out: Path, runs=RUNS, shard_rows: int = SHARD_ROWS) -> Path:
    from lab2048.data.dataset import Dataset, DatasetWriter, Run, default_dataset

    src = Dataset(default_dataset())
    steps = np.concatenate([np.asarray(s) for s in src.shards])
    table = src.runs
    with DatasetWriter(out, session=dict(src.session), shard_rows=shard_rows) as w:
        for new_id, run_id in enumerate(runs, 1):
            i = int(np.flatnonzero(table["id"] == run_id)[0])
            rows = steps[steps["run_id"] == run_id].copy()
            rows["run_id"] = new_id
            w.add_run(Run(new_id, int(table["seed"][i]), len(rows), int(table["max_score"][i]),
                          int(table["highest_tile"][i])), rows)
    return out


def sidecar(dataset: Path, out: Path, gamma: float = GAMMA) -> Path:
    from lab2048.data.sidecar import SidecarConfig, build_sidecar

    build_sidecar(dataset, SidecarConfig(gamma=gamma), output=out, workers=1)
    return out


def tiny_init(out: Path, objective: str = "cross_entropy", policy_head: str = "action_policy",
              gamma: float | None = GAMMA, value: bool = True, seed: int = 0) -> Path:
    import torch

    from lab2048.model import Model, ModelConfig, ValueHeadConfig, save_init
    from lab2048.model.tokenizer import EvBins
    from lab2048.value_target import ValueTarget
    from lab2048.value_transform import Support

    torch.manual_seed(seed)
    head = ValueHeadConfig(enabled=value, objective=objective, prior=3000.0,
                           support=Support(0.0, 400.0, 41))
    cfg = ModelConfig(hidden=32, layers=1, heads=2, kv_heads=1, mlp=64, ev_bins=4,
                      policy_head=policy_head, value_head=head)
    bins = EvBins((0.0, 1.0, 2.0, 4.0, 8.0)) if policy_head == "binned_ev" else None
    model = Model(cfg, bins)
    if value:  # a head that depends on the board, so values and Q differ between steps
        with torch.no_grad():
            model.value.out.weight.normal_(0.0, 0.5)
    save_init(model, out)
    if gamma is not None:
        ValueTarget(gamma=gamma).save(out)
    return out


def annotate(init: Path, dataset: Path, out: Path, *extra: str) -> None:
    from lab2048.cli import main

    assert main(["annotate", "--init", str(init), "--dataset", str(dataset), "--out", str(out),
                 "--threads", "1", "--batch", "256", *extra]) == 0


class Server:
    """An ASGI app served by uvicorn on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, app) -> None:
        import socket
        import threading

        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        import time

        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("the viewer did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
