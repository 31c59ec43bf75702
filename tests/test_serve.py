"""The inference server: stubs match the .proto, micro-batching, bad requests, failures,
cancellation, round trips over TCP and UDS, Describe, graceful shutdown (CPU, loopback only)."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from lab2048.errors import UserError
from lab2048.model import Model, ModelConfig, ValueHeadConfig, save_init
from lab2048.serve._proto import generate as gen
from lab2048.serve._proto import inference_pb2 as pb
from lab2048.serve.batcher import Batcher, BatchFailed, ModelRunner
from lab2048.serve.client import AsyncInferenceClient, InferenceClient, make_request
from lab2048.serve.rpc import InferenceStub
from lab2048.serve.server import start_server

TINY = dict(hidden=32, layers=1, heads=4, kv_heads=2, mlp=64)


def tiny_model(value: bool, policy_head: str = "action_policy") -> Model:
    torch.manual_seed(1)
    cfg = ModelConfig(**TINY, policy_head=policy_head,
                      value_head=ValueHeadConfig(enabled=value, prior=500.0))
    bins = None
    if policy_head == "binned_ev":
        from lab2048.model import EvBins

        bins = EvBins(tuple(float(x) for x in range(cfg.ev_bins + 1)))
    model = Model(cfg, bins)
    with torch.no_grad():  # a value head that depends on the board
        if value:
            model.value.out.weight.normal_(0, 0.5)
    return model.eval()


def boards(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 12, (n, 16)).astype(np.uint8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


class Recording:
    """A ModelRunner that records batch sizes (and can fail or block on demand)."""

    def __init__(self, model, fail_first: int = 0):
        self.runner = ModelRunner(model)
        self.sizes: list[int] = []
        self.value_rows: list[int] = []
        self.fail_first = fail_first
        self.gate: threading.Event | None = None

    def __call__(self, tokens, legal, need_value, atoms):
        self.sizes.append(len(tokens))
        self.value_rows.append(int(need_value.sum()))
        if self.gate is not None:
            self.gate.wait(10)
        if len(self.sizes) <= self.fail_first:
            raise RuntimeError("forward exploded")
        return self.runner(tokens, legal, need_value, atoms)


def reference(model, ex):
    from lab2048.engine.batch import from_exponents, legal_masks

    p = model.predict(ex, legal_masks(*from_exponents(ex)))
    return p.move_probs.numpy(), None if p.value is None else p.value.numpy()


# --- stubs ---------------------------------------------------------------------------------


def test_committed_stubs_match_the_proto(tmp_path):
    pytest.importorskip("grpc_tools")
    for path in gen.generate(tmp_path):
        assert path.read_text() == (gen.HERE / path.name).read_text(), (
            f"{path.name} is stale: run python -m lab2048.serve._proto.generate")


# --- batching ------------------------------------------------------------------------------


def test_concurrent_requests_share_batches_and_return_to_their_ids():
    model = tiny_model(True)
    rec = Recording(model)
    sizes = (1, 5, 300)
    data = [boards(n, seed=n) for n in sizes]

    async def scenario():
        server = await start_server(model, "127.0.0.1:0", max_batch=256, max_wait_ms=20,
                                    runner=rec)
        async with AsyncInferenceClient(server.address) as client:
            outs = await asyncio.gather(*(
                client.infer(d, "both", ids=np.arange(len(d)) + 1000 * k)
                for k, d in enumerate(data)))
        await server.stop(0.5)
        return outs

    outs = asyncio.run(scenario())
    assert max(rec.sizes) <= 256 and sum(rec.sizes) == 306
    assert len(rec.sizes) < 3 + 1  # gathered, not one forward per request (300 needs two)
    for k, (d, out) in enumerate(zip(data, outs, strict=True)):
        assert out.ids.tolist() == list(range(1000 * k, 1000 * k + len(d)))
        probs, values = reference(model, d)
        np.testing.assert_allclose(out.move_probs, probs, atol=1e-5)
        np.testing.assert_allclose(out.value, values, rtol=1e-4, atol=1e-3)


def test_batched_outputs_equal_single_item_outputs():
    model = tiny_model(True)
    ex = boards(40, seed=3)

    async def scenario():
        server = await start_server(model, "127.0.0.1:0", max_batch=64, max_wait_ms=30)
        async with AsyncInferenceClient(server.address) as client:
            together = await asyncio.gather(*(client.infer(ex[i:i + 1], "both")
                                              for i in range(len(ex))))
            alone = [await client.infer(ex[i:i + 1], "both") for i in range(len(ex))]
        await server.stop(0.5)
        return together, alone

    together, alone = asyncio.run(scenario())
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.move_probs, b.move_probs, atol=1e-6)
        np.testing.assert_allclose(a.value, b.value, rtol=1e-5, atol=1e-3)


def test_lone_request_returns_within_max_wait():
    model = tiny_model(False)
    wait_ms = 100

    async def scenario():
        batcher = Batcher(ModelRunner(model), max_batch=256, max_wait_ms=wait_ms)
        batcher.start()
        ex = boards(1)
        await batcher.submit(ex, np.array([15], np.uint8))  # warm up
        start = time.perf_counter()
        await batcher.submit(ex, np.array([15], np.uint8))
        elapsed = time.perf_counter() - start
        await batcher.close()
        return elapsed

    elapsed = asyncio.run(scenario())
    assert wait_ms / 1000 * 0.9 <= elapsed < wait_ms / 1000 + 0.5


def test_policy_only_requests_never_run_the_value_head():
    model = tiny_model(True)
    calls = []
    model.value.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))

    async def scenario():
        server = await start_server(model, "127.0.0.1:0", max_batch=256, max_wait_ms=20)
        async with AsyncInferenceClient(server.address) as client:
            out = await client.infer(boards(7), "policy")
            assert out.value is None and out.move_probs.shape == (7, 4)
            assert not calls
            mixed = await asyncio.gather(client.infer(boards(3), "policy"),
                                         client.infer(boards(4), "default"))
        await server.stop(0.5)
        return mixed

    mixed = asyncio.run(scenario())
    assert mixed[0].value is None and mixed[1].value.shape == (4,)
    assert sum(calls) == 4  # the value head ran on the rows that asked for a value only


def test_failing_forward_fails_its_batch_and_the_next_succeeds():
    model = tiny_model(False)
    rec = Recording(model, fail_first=1)

    async def scenario():
        server = await start_server(model, "127.0.0.1:0", max_batch=256, max_wait_ms=20,
                                    runner=rec)
        async with AsyncInferenceClient(server.address) as client:
            first = await asyncio.gather(client.infer(boards(2)), client.infer(boards(3)),
                                         return_exceptions=True)
            second = await client.infer(boards(4))
        await server.stop(0.5)
        return first, second

    first, second = asyncio.run(scenario())
    assert all(isinstance(e, UserError) and "INTERNAL" in str(e) and "forward exploded" in str(e)
               for e in first)
    assert second.move_probs.shape == (4, 4)


def test_cancelled_request_does_not_stall_the_batcher():
    model = tiny_model(False)
    rec = Recording(model)
    rec.gate = threading.Event()

    async def scenario():
        batcher = Batcher(rec, max_batch=8, max_wait_ms=1)
        batcher.start()
        legal = np.full(4, 15, np.uint8)
        running = asyncio.create_task(batcher.submit(boards(4), legal))  # blocks in forward
        await asyncio.sleep(0.1)
        queued = asyncio.create_task(batcher.submit(boards(4), legal))
        await asyncio.sleep(0.05)
        running.cancel()  # cancelled while its forward runs
        queued.cancel()  # cancelled while waiting
        rec.gate.set()
        after = await asyncio.wait_for(batcher.submit(boards(4, 1), legal), 5)
        await batcher.close()
        return after

    after = asyncio.run(scenario())
    assert after.move_probs.shape == (4, 4)
    assert rec.sizes == [4, 4]  # the cancelled waiting request never reached a forward


# --- bad requests --------------------------------------------------------------------------


def test_bad_requests_get_invalid_argument_and_the_server_keeps_serving():
    model = tiny_model(False)

    async def scenario():
        server = await start_server(model, "127.0.0.1:0", max_batch=64, max_wait_ms=1)
        channel = grpc.aio.insecure_channel(server.address)
        stub = InferenceStub(channel)
        short = pb.InferRequest(items=[pb.BoardItem(id=7, exponents=bytes(15))])
        big = make_request(np.full((2, 16), 3, np.uint8))
        big.items[1].exponents = bytes([17] + [0] * 15)
        cases = {
            "short board": (short, "item 0 (id 7): board has 15 bytes"),
            "exponent": (big, "item 1 (id 1): exponent 17 out of range 0..16"),
            "value only": (make_request(boards(1), "value"),
                           "OUTPUT_MODE_VALUE_ONLY: the served model has no value head"),
            "both": (make_request(boards(1), "both"), "has no value head"),
            "empty": (pb.InferRequest(), "empty batch"),
        }
        found = {}
        for name, (req, _) in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Infer(req)
            found[name] = (e.value.code(), e.value.details())
        ok = await stub.Infer(make_request(boards(2)))
        await channel.close()
        await server.stop(0.5)
        return cases, found, ok

    cases, found, ok = asyncio.run(scenario())
    for name, (_, message) in cases.items():
        code, details = found[name]
        assert code == grpc.StatusCode.INVALID_ARGUMENT, name
        assert message in details, (name, details)
    assert len(ok.results) == 2


# --- end to end ----------------------------------------------------------------------------


@contextlib.contextmanager
def server_thread(model, address, **kw):
    """A server on its own event loop in a thread (for the blocking client)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    running = asyncio.run_coroutine_threadsafe(start_server(model, address, **kw),
                                               loop).result(30)
    try:
        yield running
    finally:
        asyncio.run_coroutine_threadsafe(running.stop(0.5), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("transport", ["tcp", "uds"])
def test_round_trip_with_a_real_model(tmp_path, transport):
    model = tiny_model(True)
    address = "127.0.0.1:0" if transport == "tcp" else f"unix:{tmp_path}/s.sock"
    ex = boards(33, seed=5)
    with server_thread(model, address, max_batch=16, max_wait_ms=1) as server, \
            InferenceClient(server.address) as client:
        out = client.infer(ex, "both", value_probs=True)
        probs, values = reference(model, ex)
        np.testing.assert_allclose(out.move_probs, probs, atol=1e-5)
        np.testing.assert_allclose(out.value, values, rtol=1e-4, atol=1e-3)
        assert out.atom_probs.shape == (33, 601)
        np.testing.assert_allclose(out.atom_probs.sum(1), 1, atol=1e-4)
        assert (out.best_move == np.argmax(probs, 1)).all()
        assert ((out.move_probs > 0) == ((out.legal_mask[:, None] >> np.arange(4)) & 1)).all()
        value_only = client.infer(ex[:3], "value")
        assert value_only.move_probs is None
        np.testing.assert_allclose(value_only.value, out.value[:3], rtol=1e-5, atol=1e-3)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(client.channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""))
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_describe_policy_only_and_policy_value_models():
    for value in (False, True):
        with server_thread(tiny_model(value), "127.0.0.1:0", max_batch=32) as server, \
                InferenceClient(server.address) as client:
            d = client.describe()
        assert d.has_policy_head and d.has_value_head == value
        assert d.policy_head == "action_policy" and d.max_batch == 32
        if value:
            assert d.value_objective == "cross_entropy" and d.value_support.n == 601
            assert d.value_support.max == 600 and d.value_epsilon == pytest.approx(0.001)
            assert "h(x)" in d.value_transform and "discounted return" in d.value_target
        else:
            assert d.value_objective == "" and not d.HasField("value_support")


def test_binned_ev_returns_per_head_bin_probabilities():
    model = tiny_model(False, "binned_ev")
    with server_thread(model, "127.0.0.1:0") as server, InferenceClient(server.address) as c:
        d = c.describe()
        out = c.infer(boards(3))
    assert d.policy_head == "binned_ev" and d.ev_bins == 16 and len(d.ev_classes) == 19
    assert out.bin_probs.shape == (3, 4, 19)
    np.testing.assert_allclose(out.bin_probs.sum(-1), 1, atol=1e-5)


def test_unreachable_server_is_one_line_error(tmp_path):
    with pytest.raises(UserError, match="cannot reach the inference server"):
        InferenceClient(f"unix:{tmp_path}/nobody.sock")


def test_batcher_rejects_bad_settings():
    with pytest.raises(ValueError):
        Batcher(lambda *a: None, max_batch=0)
    with pytest.raises(BatchFailed):
        raise BatchFailed("x")


def test_serve_command_shuts_down_gracefully_on_sigterm(tmp_path):
    init = save_init(tiny_model(True), tmp_path / "init")
    sock = tmp_path / "serve.sock"
    proc = subprocess.Popen([sys.executable, "-m", "lab2048", "serve", "--init", str(init),
                             "--uds", str(sock)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 60
        while not sock.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert sock.exists(), proc.stderr.read() if proc.poll() is not None else "no socket"
        with InferenceClient(f"unix:{sock}") as client:
            assert client.infer(boards(2), "both").value.shape == (2,)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "serving" in out and "shutting down" in err and "served 2 boards" in err
    assert not Path(sock).exists()


# --- reliability -------------------------------------------------------------------------


def test_server_imports_do_not_load_numba():
    code = "import sys, lab2048.serve.server; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("flags", "message"), [
    (["--tcp", "127.0.0.1:99999"], "--tcp 127.0.0.1:99999: port must be in 1..65535"),
    (["--tcp", "127.0.0.1:0"], "port must be in 1..65535"),
    (["--tcp", "localhost"], "--tcp wants HOST:PORT"),
    (["--tcp", "127.0.0.1:5000", "--uds", "s.sock"], "give --tcp or --uds, not both"),
    (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (["--max-batch", "0"], "--max-batch must be at least 1"),
])
def test_bad_serve_settings_are_one_line_errors(tmp_path, capsys, flags, message):
    from lab2048.cli import main

    assert main(["serve", "--init", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "safetensors" not in err


def test_busy_port_is_one_line_without_grpc_logs(tmp_path):
    import socket

    init = save_init(tiny_model(False), tmp_path / "init")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "lab2048", "serve", "--init", str(init),
                                 "--tcp", f"127.0.0.1:{port}"], capture_output=True, text=True,
                                timeout=120)
    assert result.returncode == 2
    assert result.stderr == (f"lab2048: error: 127.0.0.1:{port}: cannot listen "
                             "(the port is in use)\n")


def test_second_server_on_a_live_socket_is_refused_and_the_first_keeps_it(tmp_path, capsys):
    from lab2048.cli import main

    init = save_init(tiny_model(False), tmp_path / "init")
    sock = tmp_path / "s.sock"
    with server_thread(tiny_model(False), f"unix:{sock}") as server:
        assert main(["serve", "--init", str(init), "--uds", str(sock)]) == 2
        assert "s.sock: another server is listening on this socket" in capsys.readouterr().err
        with InferenceClient(server.address) as client:  # the first still answers
            assert client.infer(boards(1)).move_probs.shape == (1, 4)
        with pytest.raises(OSError, match="another server is listening"):
            asyncio.run(start_server(tiny_model(False), f"unix:{sock}"))
    assert not sock.exists()  # the first removed its own socket at exit
    sock.write_text("not a socket")
    assert main(["serve", "--init", str(init), "--uds", str(sock)]) == 2
    assert "s.sock: exists and is not a socket" in capsys.readouterr().err
    assert sock.read_text() == "not a socket"


def test_undecodable_request_bytes_get_invalid_argument():
    model = tiny_model(False)

    async def scenario():
        server = await start_server(model, "127.0.0.1:0", max_batch=8, max_wait_ms=1)
        channel = grpc.aio.insecure_channel(server.address)
        errors = []
        for method in ("Infer", "Describe"):  # bytes in, bytes out
            raw = channel.unary_unary(f"/lab2048.inference.v1.Inference/{method}")
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await raw(b"\x0a\xff\x01")  # field 1, length 255, then the bytes end
            errors.append(e.value)
        ok = await InferenceStub(channel).Infer(make_request(boards(1)))
        await channel.close()
        await server.stop(0.5)
        return errors, ok

    (infer, describe), ok = asyncio.run(scenario())
    assert infer.code() == describe.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request does not decode as InferRequest" in infer.details()
    assert "decode as DescribeRequest" in describe.details() and len(ok.results) == 1


def test_board_without_a_legal_move_gets_probabilities_zero():
    full = np.array([[1, 2, 1, 2, 2, 1, 2, 1, 1, 2, 1, 2, 2, 1, 2, 1]], np.uint8)
    with server_thread(tiny_model(True), "127.0.0.1:0") as server, \
            InferenceClient(server.address) as client:
        out = client.infer(np.concatenate([full, boards(2)]), "both")
    assert out.legal_mask[0] == 0 and out.move_probs[0].tolist() == [0.0] * 4
    assert out.best_move[0] == 0 and np.isfinite(out.value).all()
    np.testing.assert_allclose(out.move_probs[1:].sum(1), 1, atol=1e-5)


def test_describe_reports_the_value_target_of_the_init(tmp_path):
    from lab2048.value_target import ValueTarget

    model = tiny_model(True)
    init = save_init(model, tmp_path / "init")
    with server_thread(model, "127.0.0.1:0", init_dir=init) as server, \
            InferenceClient(server.address) as client:
        assert client.describe().value_target_json == "" and client.value_target() is None
        assert "gamma not recorded" in client.describe().value_target
    target = ValueTarget(gamma=0.99, reward_scale=0.5, state="afterstate")
    target.save(init)
    with server_thread(model, "127.0.0.1:0", init_dir=init) as server, \
            InferenceClient(server.address) as client:
        d = client.describe()
        assert client.value_target() == target
    assert json.loads(d.value_target_json)["gamma"] == 0.99
    assert "γ = 0.99" in d.value_target and "afterstate" in d.value_target
    # wire compatibility: field 17 is new and optional; an older server's answer (fields up
    # to 16 only) reads as "" and None, and a reader skipping field 17 keeps the rest
    from lab2048.serve.client import value_target_of

    old = pb.DescribeResponse(policy_head="action_policy", device="cpu").SerializeToString()
    assert value_target_of(pb.DescribeResponse.FromString(old)) is None
    new = pb.DescribeResponse(policy_head="action_policy", device="cpu",
                              value_target_json=d.value_target_json).SerializeToString()
    assert new.startswith(old) and new[len(old)] == (17 << 3 | 2) & 0x7F | 0x80  # tag 17
