"""Scale-out on a real local Ray cluster (loopback only): the same bytes as local runs, a killed
worker process rescheduled, a killed driver resumed, one-line errors.

One head (`lab2048.scale.local_head`: `ray start --head --block` with 2 CPUs, a small object
store, no dashboard, a temporary directory under /tmp) serves the whole module and is stopped at
its end. Its tests are skipped where Ray is not installed (pip install '.[ray]').
"""

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from resume import assert_resumes

import lab2048
from lab2048.data.config import GenerateConfig
from lab2048.data.generate import generate, staging_dir
from lab2048.data.pack import pack
from lab2048.errors import UserError
from lab2048.scale import LOOPBACK_ENV, _free_port, _version_mismatch, local_head
from lab2048.teacher.config import TeacherConfig

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def head():
    """A local Ray head (2 CPUs, on loopback), stopped after the module's tests."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install '.[ray]')")
    assert "ray" not in sys.modules, "Ray was imported before its loopback settings"
    os.environ.update(LOOPBACK_ENV)  # for this process and the drivers it starts
    with local_head(num_cpus=2) as h:
        yield h


def _cli(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "lab2048", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, **kwargs)


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


SMALL = dict(games=6, seed=11, max_moves=400, teacher=TeacherConfig(depth=1), shard_rows=1000)


def test_generate_on_ray_is_the_same_bytes_as_local(head, tmp_path):
    local = generate(GenerateConfig(out=str(tmp_path / "local"), workers=1, **SMALL),
                     progress=False)
    wide = generate(GenerateConfig(out=str(tmp_path / "wide"), ray=head.address, **SMALL),
                    progress=False)
    one = generate(GenerateConfig(out=str(tmp_path / "one"), ray=head.address, workers=1,
                                  **SMALL), progress=False)
    assert local["steps"] == wide["steps"] == one["steps"] == 6 * 400
    assert len(list((tmp_path / "local").glob("steps-*.npy"))) == 3
    assert _files(tmp_path / "local") == _files(tmp_path / "wide") == _files(tmp_path / "one")


def _kill_one(head, title: str, driver, deadline: float) -> int | None:
    """SIGKILL the first of the head's workers seen running `title` while the driver runs;
    its pid, or None if none was seen before the deadline."""
    while time.time() < deadline and driver.poll() is None:
        if busy := _ray_workers(head.pid, title):
            os.kill(busy[0], signal.SIGKILL)
            return busy[0]
        time.sleep(0.005)
    return None


def _ray_workers(pgid: int, title: str) -> list[int]:
    """Processes of this head running a task `title`: Ray names a busy worker ray::TASK, and a
    worker is a child of the head's raylet (in its own process group)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if not (entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(
                    f"ray::{title}".encode())):
                continue
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if os.getpgid(parent) == pgid:
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def test_killed_worker_and_killed_driver_leave_the_same_dataset(head, tmp_path):
    out = tmp_path / "ray"
    args = ("generate", "--out", out, "--games", 10, "--seed", 40, "--depth", 2,
            "--max-depth", 4, "--max-moves", 1500, "--ray", head.address)
    driver = subprocess.Popen([sys.executable, "-m", "lab2048", *map(str, args)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        # a worker process dies in the middle of a game: Ray plays that game again
        deadline = time.time() + 90
        killed = _kill_one(head, "play_arrays", driver, deadline)
        assert killed is not None, "no worker was seen playing a game"
        # then the driver dies once a few games are staged: the same command resumes
        staging = staging_dir(out)
        while time.time() < deadline and len(list(staging.glob("game-*.npz"))) < 3:
            assert driver.poll() is None, driver.stderr.read()
            time.sleep(0.005)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    resumed = assert_resumes(_cli, args, out, 3, 10)
    assert f"ray: {head.address}: 1 node(s), 2 CPUs" in resumed.stderr
    local = _cli("generate", "--out", tmp_path / "local", *args[3:-2], "--workers", 2)
    assert local.returncode == 0, local.stderr
    assert _files(out) == _files(tmp_path / "local")


def test_pack_on_ray_is_the_same_bytes_as_local(head, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for path in (FIXTURES / "macroxue-logs").iterdir():
        (logs / path.name).write_bytes(path.read_bytes())
    (logs / "broken.jsonl.gz").write_bytes(b"not gzip")  # skipped on both paths
    (logs / "lonely.meta.json").write_text("{}")
    local = pack(logs, tmp_path / "local", workers=1, shard_rows=5000, progress=False)
    remote = pack(logs, tmp_path / "remote", ray=head.address, shard_rows=5000,
                  progress=False)
    assert local.games == remote.games == 3 and local.steps == remote.steps
    assert local.skipped == remote.skipped and len(remote.skipped) == 2
    assert local.ev_legal_differs == remote.ev_legal_differs
    assert _files(tmp_path / "local") == _files(tmp_path / "remote")


def test_annotate_on_ray_is_the_same_bytes_as_local(head, tmp_path):
    from annotated import small_dataset, tiny_init

    ds, init = small_dataset(tmp_path / "ds"), tiny_init(tmp_path / "init")
    base = ("annotate", "--init", init, "--dataset", ds, "--threads", 1, "--batch", 128)
    local = _cli(*base, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    remote = _cli(*base, "--out", tmp_path / "remote", "--ray", head.address)
    assert remote.returncode == 0, remote.stderr
    assert f"ray: {head.address}: 1 node(s), 2 CPUs" in remote.stderr
    assert len(list((tmp_path / "local").glob("annotations-*.npy"))) == 9  # policy, value, bins
    assert _files(tmp_path / "local") == _files(tmp_path / "remote")


def test_evaluate_on_ray_is_the_same_games_as_local_with_an_actor_killed(head, tmp_path):
    import torch

    from lab2048.model import Model, ModelConfig, ValueHeadConfig, save_init

    torch.manual_seed(2)
    model = Model(ModelConfig(hidden=32, layers=1, heads=4, kv_heads=2, mlp=64,
                              value_head=ValueHeadConfig(enabled=True, prior=300.0)))
    with torch.no_grad():
        model.value.out.weight.normal_(0, 0.3)
    init = save_init(model, tmp_path / "init")
    args = ("evaluate", "--init", init, "--agents", "policy,value:depth=1", "--games", 8,
            "--seed", 5, "--max-moves", 400, "--gamma", 0.99, "--threads", 1)
    driver = subprocess.Popen([sys.executable, "-m", "lab2048", *map(str, args), "--out",
                               tmp_path / "remote", "--ray", head.address],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:  # an actor dies in the middle of a chunk: a new one loads the model and plays it
        killed = _kill_one(head, "Actor.call", driver, time.time() + 120)
        _, err = driver.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert killed is not None, "no actor was seen playing"
    assert driver.returncode == 0, err
    assert f"ray: {head.address}: 1 node(s), 2 CPUs" in err
    local = _cli(*args, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    games = (tmp_path / "local" / "games.csv").read_bytes()
    assert games == (tmp_path / "remote" / "games.csv").read_bytes()
    assert games.count(b"\n") == 1 + 2 * 8


def test_a_node_with_other_lab2048_code_is_refused_in_one_line(head, tmp_path):
    """Ray's job runtime environment (as `ray job submit --runtime-env-json` sets it) starts
    this job's workers on another copy of lab2048 whose code differs from the driver's."""
    other = tmp_path / "other"
    src = Path(lab2048.__file__).parent
    (other / "lab2048").mkdir(parents=True)
    for path in src.glob("*.py"):
        (other / "lab2048" / path.name).write_bytes(path.read_bytes())
    (other / "lab2048" / "errors.py").write_text(
        (src / "errors.py").read_text() + "\n# an edit the driver does not have\n")
    job = json.dumps({"runtime_env": {"env_vars": {"PYTHONPATH": str(other)}}})
    result = _cli("generate", "--out", tmp_path / "ds", "--games", 1, "--depth", 1,
                  "--max-moves", 10, "--ray", head.address,
                  env={"RAY_JOB_CONFIG_JSON_ENV_VAR": job})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "with other code" in lines[0], result.stderr
    assert "install the same lab2048 on every node" in lines[0]
    assert not (tmp_path / "ds").exists()


def test_unreachable_cluster_is_one_line_and_quick(head, tmp_path):
    port = _free_port()  # nothing listens there
    start = time.time()
    for args, env in (((f"127.0.0.1:{port}",), {}), (("auto",), {"RAY_ADDRESS":
                                                                   f"127.0.0.1:{port}"})):
        result = _cli("generate", "--out", tmp_path / "ds", "--games", 1, "--ray", *args,
                      env=env)
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"lab2048: error: Ray cluster 127.0.0.1:{port}: cannot connect (Connection "
            "refused); is a head started there (`ray start --head`)?")
    assert time.time() - start < 30  # Ray alone would retry for minutes
    result = _cli("pack", "--input", FIXTURES / "macroxue-logs", "--out", tmp_path / "p",
                  "--ray", "no-port")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "'no-port': not an address" in result.stderr
    with pytest.raises(UserError, match="cannot connect"):
        pack(FIXTURES / "macroxue-logs", tmp_path / "p", ray=f"localhost:{port}")


def test_ray_version_mismatch_reads_as_one_line():
    # the message Ray raises on connecting with another Ray or Python than the cluster's
    message = ("Version mismatch: The cluster was started with:\n    Ray: 2.59.0\n"
               "    Python: 3.11.7\nThis process on node 127.0.0.1 was started with:\n"
               "    Ray: 2.60.0\n    Python: 3.11.7\n")
    assert _version_mismatch(message) == (
        "version mismatch: the cluster runs Ray 2.59.0 on Python 3.11.7, this machine Ray "
        "2.60.0 on Python 3.11.7; install the same versions on both")
    assert _version_mismatch("Could not find any running Ray instance.") is None


def test_missing_ray_is_one_line(tmp_path):
    code = ("import sys; sys.modules['ray'] = None  # import ray fails as where it is missing\n"
            "from lab2048.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ("generate", "--out", tmp_path / "ds", "--games", 1, "--ray", "auto")
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                            text=True, env={**os.environ, "RAY_ADDRESS": ""})
    assert result.returncode == 2 and not (tmp_path / "ds").exists()
    assert result.stderr == ("lab2048: error: --ray needs Ray, which is not installed: pip "
                             "install 'lab2048[ray]'\n")
