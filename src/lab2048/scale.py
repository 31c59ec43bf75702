"""Scale-out on Ray: connect to a cluster, map tasks over it, keep actors that hold a model.

`generate`, `pack`, `annotate` and `evaluate` take `--ray ADDRESS` and then send their units
of work (a game, a log file, a shard, a batch of games) to a Ray cluster instead of local worker
processes. docs/scale-out.md says how to start a cluster and how throughput scales.

Choices
- Ray is optional (`pip install 'lab2048[ray]'`) and imported only inside `cluster()`; this
  module's top level is stdlib only, so configs and the CLI can name `RAY_HELP` for free.
- Addresses: `host:port` of a head's GCS (`ray start --head` prints it), `ray://host:port` for
  Ray Client, or `auto`: RAY_ADDRESS when it is set, else the cluster started on this machine
  (Ray's own lookup). An explicit address is probed with a plain TCP connection first (5 s):
  Ray itself retries an unreachable head for minutes while printing warnings.
- Errors are one line (UserError): Ray missing, a head that cannot be reached, a Ray or Python
  version that differs from the cluster's (Ray checks these when connecting), and a node whose
  workers import another lab2048 or none: its version and a digest of its .py files are
  checked on every alive node by a zero-CPU probe pinned to it, since other engine or teacher
  code would change the results (and a task of a missing function fails late and obscurely).
- Results travel back to the driver, which alone writes outputs: no filesystem shared by the
  nodes is needed for outputs, and the local staging, resuming and atomic publishing apply
  unchanged. Inputs a task reads from disk are the caller's business (pack sends file bytes).
- Failures: a task whose worker process or node dies is rescheduled by Ray (`max_retries`
  RETRIES); an actor that dies is replaced here and its call resent (RETRIES times a call); an
  exception raised by lab2048 code is deterministic, never retried, and re-raised in the
  driver as itself (so a UserError stays one line). Tasks and actor calls are pure functions
  of their arguments, so a retried unit gives the same bytes.
- `local_head` starts a one-machine cluster on 127.0.0.1 for tests and benchmarks, with Ray's
  own `ray start --head --block`, and ends it by signalling that process (never `ray stop`,
  which ends every Ray process of the user).
- A bounded number of tasks is in flight (by default twice the cluster's CPUs), so the object
  store and the driver hold a bounded amount of results whatever the number of units.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from lab2048.errors import UserError

RAY_HELP = ("run on the Ray cluster at ADDRESS (host:port, ray://host:port, or auto: RAY_ADDRESS "
            "or the cluster started on this machine) instead of local worker processes; needs "
            "pip install 'lab2048[ray]'")
RAY_GPUS_HELP = ("with --ray: GPUs each model actor reserves (0: CPU actors; 1, or 0.5 for two "
                 "actors a GPU)")
RETRIES = 3  # times Ray reruns a task whose worker or node died
PROBE_SECONDS = 5.0  # TCP probe of an explicit address
START_SECONDS = 120.0  # waiting for each node's version probe (a worker process may need to start)


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_address(address: str) -> str:
    """The address to connect to: `auto` becomes RAY_ADDRESS when that is set."""
    address = address.strip()
    if address == "auto":
        return os.environ.get("RAY_ADDRESS", "").strip() or "auto"
    return address


def _probe(address: str) -> None:
    """UserError unless a TCP connection to the address's host:port opens within 5 s."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"Ray cluster {address!r}: not an address (expected host:port, "
                        "ray://host:port or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__.replace("Error", " error").lower()
        if isinstance(e, TimeoutError):
            reason = f"no answer in {PROBE_SECONDS:.0f} s"
        raise UserError(f"Ray cluster {address}: cannot connect ({reason}); is a head "
                        "started there (`ray start --head`)?") from None


def _version_mismatch(message: str) -> str | None:
    """Ray's multi-line version mismatch message as one line, or None if it is not one."""
    if "Version mismatch" not in message:
        return None
    found = re.findall(r"Ray: (\S+)\s+Python: (\S+)", message)
    if len(found) != 2:
        return _one_line(RuntimeError(message))
    (ray_c, py_c), (ray_m, py_m) = found
    return (f"version mismatch: the cluster runs Ray {ray_c} on Python {py_c}, this machine Ray "
            f"{ray_m} on Python {py_m}; install the same versions on both")


def _lab2048_here() -> tuple[str, str, str]:
    """(host, lab2048 version, digest of its .py files) of this process; the version says
    "none (...)" where lab2048 cannot be imported. Self-contained: Ray pickles it by value, so
    a node without lab2048 can run it."""
    import hashlib
    import importlib
    import socket
    from pathlib import Path

    try:
        module = importlib.import_module("lab2048")
    except Exception as e:  # any failure to import is reported
        return socket.gethostname(), f"none ({type(e).__name__}: {e})", ""
    root = Path(module.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return socket.gethostname(), module.__version__, digest.hexdigest()[:12]


def _check_nodes(ray, address: str) -> dict[str, Any]:
    """Probe every alive node; UserError if one imports another lab2048 (version or code)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    _, version, digest = _lab2048_here()
    probe = ray.remote(num_cpus=0, max_retries=RETRIES)(_lab2048_here)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote() for n in nodes]
    try:
        answers = ray.get(refs, timeout=START_SECONDS)
    except ray.exceptions.GetTimeoutError:
        raise UserError(f"Ray cluster {address}: its nodes did not start a worker within "
                        f"{START_SECONDS:.0f} s") from None
    except ray.exceptions.RayError as e:
        raise UserError(f"Ray cluster {address}: a node failed the version check "
                        f"({_one_line(e)})") from None
    for (host, found, code), node in zip(answers, nodes, strict=True):
        name = f"node {node.get('NodeManagerAddress', '?')} ({host})"
        if found != version:
            raise UserError(f"Ray cluster {address}: {name} has lab2048 {found}, this machine "
                            f"{version}; install the same lab2048 on every node")
        if code != digest:
            raise UserError(f"Ray cluster {address}: {name} has lab2048 {found} with other "
                            f"code (files {code}, here {digest}); install the same lab2048 on "
                            "every node")
    resources = ray.cluster_resources()
    return {"nodes": len(nodes), "cpus": int(resources.get("CPU", 0)),
            "gpus": int(resources.get("GPU", 0))}


@contextlib.contextmanager
def cluster(address: str) -> Iterator[Any]:
    """Connect this process to the Ray cluster at `address`, check it, yield the `ray` module;
    disconnect at the end (the cluster keeps running)."""
    target = resolve_address(address)
    if target != "auto":
        _probe(target)
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray, which is not installed: pip install "
                        "'lab2048[ray]'") from None
    try:
        ray.init(address=target, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        message = str(e)
        mismatch = _version_mismatch(message)
        if mismatch:
            raise UserError(f"Ray cluster {target}: {mismatch}") from None
        if isinstance(e, ConnectionError) and target == "auto":
            raise UserError("Ray cluster auto: no cluster is running on this machine and "
                            "RAY_ADDRESS is not set (start one with `ray start --head`, or "
                            "pass --ray host:port)") from None
        raise UserError(f"Ray cluster {target}: cannot connect ({_one_line(e)})") from None
    try:
        info = _check_nodes(ray, target)
        if info["cpus"] < 1:
            raise UserError(f"Ray cluster {target}: has no CPUs to run tasks on")
        print(f"ray: {target}: {info['nodes']} node(s), {info['cpus']} CPUs, {info['gpus']} GPUs",
              file=sys.stderr)
        yield ray
    finally:
        ray.shutdown()


def _get(ray, ref, what: str):
    """ray.get with one-line errors (see _reraise)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        _reraise(ray, e, what)


def _reraise(ray, e: Exception, what: str):
    """lab2048's UserError raised in a task re-raised as itself (one line), a worker that died
    every time as a UserError; other exceptions keep Ray's remote traceback."""
    if isinstance(e, ray.exceptions.RayTaskError):
        if isinstance(e.cause, UserError):
            raise e.cause from None
        raise e
    raise UserError(f"{what}: the Ray worker running it died {RETRIES + 1} times "
                    f"({_one_line(e)})") from None


def task_map(ray, fn: Callable, arglists: Iterable[tuple], *, ordered: bool = False,
             in_flight: int = 0, num_cpus: float = 1, what: Callable[[int], str] = str
             ) -> Iterator[tuple[int, Any]]:
    """Run fn(*args) for each tuple in `arglists` as Ray tasks; yield (position, result).

    Results come as they finish, or in the order of `arglists` with `ordered`. At most
    `in_flight` tasks are submitted at once (0: twice the cluster's CPUs). `what(position)`
    names a unit in errors. `fn` must be a module-level function of lab2048 (workers import it).
    """
    remote = ray.remote(num_cpus=num_cpus, max_retries=RETRIES, retry_exceptions=False)(fn)
    limit = in_flight or max(1, 2 * int(ray.cluster_resources().get("CPU", 1)))
    todo = enumerate(arglists)
    pending: deque = deque()  # (position, ref), in submission order
    try:
        while True:
            while len(pending) < limit and (nxt := next(todo, None)) is not None:
                pending.append((nxt[0], remote.remote(*nxt[1])))
            if not pending:
                return
            if ordered:
                position, ref = pending.popleft()
            else:
                done, _ = ray.wait([r for _, r in pending], num_returns=1)
                position, ref = next(p for p in pending if p[1] == done[0])
                pending.remove((position, ref))
            yield position, _get(ray, ref, what(position))
    finally:
        for _, ref in pending:  # an error or a consumer that stopped: stop the rest
            ray.cancel(ref, force=True)


class Actor:
    """The Ray actor of `actor_map`: holds `cls(*args)` and calls its methods."""

    def __init__(self, cls: type, args: tuple):
        self.obj = cls(*args)

    def call(self, method: str, *args):
        return getattr(self.obj, method)(*args)


def actor_map(ray, cls: type, init_args: tuple, method: str, arglists: Iterable[tuple], *,
              actors: int, num_cpus: float = 1, num_gpus: float = 0,
              what: Callable[[int], str] = str) -> Iterator[tuple[int, Any]]:
    """Start `actors` instances of `cls(*init_args)` (each holding, say, a model; the arguments
    go to the object store once), call `method(*args)` for each tuple in `arglists` spread
    over them; yield (position, result) as they finish. `num_gpus` per actor reserves GPUs.

    An actor whose process or node dies is replaced by a new one (its __init__ runs again) and
    its unfinished call is sent to it, RETRIES times per call. (Done here rather than with
    Ray's max_restarts, which warns on every actor whose arguments are in the object store.)
    """
    remote_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(Actor)
    shipped = ray.put(init_args)
    pool = [remote_cls.remote(cls, shipped) for _ in range(max(1, actors))]
    todo = enumerate(arglists)
    pending: dict = {}  # ref -> (position, args, actor index)
    failures: dict[int, int] = {}  # position -> times its actor died
    idle = deque(range(len(pool)))

    def submit(a: int, position: int, args: tuple) -> None:
        pending[pool[a].call.remote(method, *args)] = (position, args, a)

    try:
        while True:
            while idle and (nxt := next(todo, None)) is not None:
                submit(idle.popleft(), *nxt)
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            position, args, a = pending.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayActorError as e:
                failures[position] = failures.get(position, 0) + 1
                if failures[position] > RETRIES:
                    _reraise(ray, e, what(position))
                ray.kill(pool[a], no_restart=True)
                pool[a] = remote_cls.remote(cls, shipped)
                submit(a, position, args)
                continue
            except ray.exceptions.RayError as e:
                _reraise(ray, e, what(position))
            idle.append(a)
            yield position, result
    finally:
        for actor in pool:
            ray.kill(actor, no_restart=True)


def fit_actors(ray, units: int, *, num_cpus: float, num_gpus: float) -> int:
    """How many actors of this size the cluster holds at once, at most `units` (at least 1)."""
    resources = ray.cluster_resources()
    fit = resources.get("CPU", 1) // max(num_cpus, 1e-9)
    if num_gpus > 0:
        fit = min(fit, resources.get("GPU", 0) // num_gpus)
        if fit < 1:
            raise UserError(f"--ray-gpus {num_gpus:g}: the cluster has "
                            f"{resources.get('GPU', 0):g} GPUs")
    return int(max(1, min(units, fit)))


def read_files(directory: str | Path) -> dict[str, bytes]:
    """The files at the top of a small directory (a model init), to send to actors: the nodes
    need not see the driver's disk."""
    directory = Path(directory)
    try:
        return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
    except OSError as e:
        raise UserError(f"{directory}: cannot read ({e.strerror})") from None


def materialize(files: dict[str, bytes]) -> tempfile.TemporaryDirectory:
    """On a worker: `files` written into a new temporary directory (removed when the returned
    object is garbage collected; its path is `.name`)."""
    tmp = tempfile.TemporaryDirectory(prefix="lab2048-")
    for name, data in files.items():
        (Path(tmp.name) / name).write_bytes(data)
    return tmp


# ---------------------------------------------------------------------------------------------
# A head on this machine (tests, benchmarks)

# On Linux, Ray advertises the machine's network address even for a head started with
# --node-ip-address 127.0.0.1 and rewrites a driver's 127.0.0.1 into it; with this setting
# (read when `ray` is imported: set it in os.environ first) head, workers and drivers stay on
# loopback. No usage statistics either.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


class LocalHead(NamedTuple):
    address: str  # 127.0.0.1:PORT
    pid: int  # of `ray start --block`; its process group holds the head's processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_head(num_cpus: int = 2, object_store_mb: int = 80,
               start_seconds: float = 90.0) -> Iterator[LocalHead]:
    """A Ray head on 127.0.0.1 with `num_cpus` CPUs, a small object store, no dashboard and a
    temporary directory under /tmp (Ray's socket paths must stay short); stopped at the end.
    The caller sets LOOPBACK_ENV in its own environment before importing ray."""
    ray_cli = Path(sys.executable).with_name("ray")
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    port = _free_port()
    log_path = Path(temp) / "head.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(ray_cli), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
             "--port", str(port), "--num-cpus", str(num_cpus),
             "--object-store-memory", str(object_store_mb << 20), "--include-dashboard=false",
             "--dashboard-port", str(_free_port()), "--ray-client-server-port",
             str(_free_port()), "--temp-dir", temp, "--disable-usage-stats"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **LOOPBACK_ENV})
    try:
        deadline = time.monotonic() + start_seconds
        while "Ray runtime started" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield LocalHead(f"127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()  # `ray start --block` stops what it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in its process group
        proc.wait()
        shutil.rmtree(temp, ignore_errors=True)
