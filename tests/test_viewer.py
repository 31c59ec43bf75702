"""The viewer's JSON API (pagination, filters, sorting, a run's steps joined with its
annotations and returns), its refusals and missing-data messages, and that no request reads
a file outside the data it was opened with."""

from __future__ import annotations

import asyncio
import http.client
import json

import numpy as np
import pytest
from annotated import GAMMA, Server, annotate, sidecar, small_dataset, tiny_init

from lab2048.data.dataset import Dataset
from lab2048.viewer.app import ViewerApp
from lab2048.viewer.data import ViewerData


def call(app, path: str, query: str = "", method: str = "GET"):
    """(status, JSON or bytes) of one request to the ASGI app."""
    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(),
             "headers": []}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent[1:])
    kind = dict(sent[0]["headers"])[b"content-type"]
    return sent[0]["status"], json.loads(body) if kind == b"application/json" else body


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer")
    ds = small_dataset(root / "ds")
    sc = sidecar(ds, root / "values")
    init = tiny_init(root / "init")
    annotate(init, ds, root / "ann", "--where", "id != 3")
    return ds, root / "ann", sc


@pytest.fixture(scope="module")
def app(data):
    ds, ann, sc = data
    return ViewerApp(ViewerData(ds, ann, sc))


def test_runs_are_paginated_filtered_and_sorted(app, data):
    status, page = call(app, "/api/runs", "limit=2")
    assert status == 200 and page["total"] == 3 and [r["id"] for r in page["runs"]] == [1, 2]
    _, page2 = call(app, "/api/runs", "limit=2&offset=2")
    assert [r["id"] for r in page2["runs"]] == [3]
    _, by_score = call(app, "/api/runs", "sort=score&order=desc")
    scores = [r["score"] for r in by_score["runs"]]
    assert scores == sorted(scores, reverse=True) == [7012, 6628, 4796]
    _, filtered = call(app, "/api/runs", "min_steps=400&max_score=6700")
    assert [r["id"] for r in filtered["runs"]] == [2]
    _, annotated = call(app, "/api/runs", "annotated=1")
    assert [r["id"] for r in annotated["runs"]] == [1, 2]  # run 3 left out by --where
    _, by_error = call(app, "/api/runs", "sort=value_error&order=desc")
    assert by_error["runs"][-1]["id"] == 3 and by_error["runs"][-1]["value_error"] is None
    assert call(app, "/api/runs", "sort=nonsense")[0] == 400
    assert call(app, "/api/runs", "limit=0")[0] == 400
    assert call(app, "/api/runs", "min_score=abc")[0] == 400


def test_summaries_are_the_means_over_the_run(app, data):
    ds, ann_dir, sc = data
    from lab2048.annotate.files import open_annotations
    from lab2048.data.sidecar import open_sidecar

    ann = open_annotations(ds, ann_dir)
    pol = np.concatenate(ann.policy)
    val = np.concatenate(ann.value)
    ret = np.concatenate(open_sidecar(ds, sc)[1])
    _, page = call(app, "/api/runs")
    for r in page["runs"]:
        rows = pol["run_id"] == r["id"]
        if r["id"] == 3:
            assert r["disagreement"] is None and r["annotated"] == 0
            continue
        rate = np.mean(pol["model_move"][rows] != pol["teacher_move"][rows])
        err = np.mean(np.abs(val["value"][rows].astype(float) - ret["return_raw"][rows]))
        assert r["disagreement"] == pytest.approx(rate, abs=1e-4)
        assert r["value_error"] == pytest.approx(err, abs=0.1)


def test_a_run_spanning_shards_comes_whole_and_aligned(app, data):
    ds, _, _ = data
    status, run = call(app, "/api/runs/2")  # rows 337..789: shards 0 and 1
    assert status == 200 and run["steps"] == 453 == len(run["boards"])
    steps = np.concatenate(Dataset(ds).shards)
    rows = steps[steps["run_id"] == 2]
    assert run["boards"] == [f"{b:016x}" for b in rows["board"].tolist()]
    assert run["teacher_move"] == rows["move_dir"].tolist()
    assert len(run["policy"]["move_probs"]) == len(run["value"]["value"]) == 453
    assert len(run["returns"]["return_raw"]) == 453 and run["returns"]["gamma"] == GAMMA
    assert run["returns"]["reward"][-1] >= 0 and run["gamma"] == GAMMA
    for t in (0, 200, 452):  # Q is null exactly where the move is illegal
        legal = [(run["legal"][t] >> a) & 1 for a in range(4)]
        assert [q is not None for q in run["value"]["q"][t]] == [bool(b) for b in legal]
    status, bins = call(app, "/api/runs/2/bins", "step=200")
    assert status == 200 and len(bins["probs"]) == len(bins["points"]) == 41
    assert sum(bins["probs"]) == pytest.approx(1, abs=0.02)
    assert call(app, "/api/runs/2/bins", "step=453")[0] == 404
    assert call(app, "/api/runs/99")[0] == 404


def test_a_run_outside_the_annotations_says_why(app):
    _, run = call(app, "/api/runs/3")
    assert run["policy"]["model_move"] == [-1] * 473
    assert "left out of the annotations" in run["missing"]["policy"]
    assert all(v is None for v in run["value"]["value"])


def test_missing_annotations_and_sidecar_say_how_to_make_them(data, tmp_path):
    ds, ann_dir, _ = data
    app = ViewerApp(ViewerData(ds))
    _, info = call(app, "/api/info")
    assert info["move_names"] == ["up", "down", "left", "right"]  # the page names moves by it
    assert "lab2048 annotate --init MODEL" in info["missing"]["annotations"]
    assert "lab2048 value-sidecar --dataset" in info["missing"]["sidecar"]
    _, run = call(app, "/api/runs/1")
    assert run["policy"] is None and run["returns"] is None and len(run["boards"]) == 337
    stale = small_dataset(tmp_path / "ds", shard_rows=600)
    _, info = call(ViewerApp(ViewerData(stale, ann_dir)), "/api/info")
    assert "(stale; rerun `lab2048 annotate` with --overwrite" in info["missing"]["annotations"]


def test_the_page_and_no_other_file_is_served(app, data):
    status, page = call(app, "/")
    assert status == 200 and b"<script src=\"/static/app.js\">" in page
    assert call(app, "/static/app.js")[0] == 200
    assert call(app, "/api/runs", method="POST")[0] == 405
    with Server(app) as server:
        for path in ("/static/../../../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd",
                     "/static/%2e%2e/%2e%2e/etc/passwd", "/../values/values.json",
                     "/static/values.json", "/api/runs/1/../../../etc/passwd",
                     "//etc/passwd", "/static//etc/passwd", "/static/app.js/../../ds"):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 404, path
            assert b"root:" not in body and json.loads(body) == {"error": "not found"}
            conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/api/runs?limit=1")
        assert json.loads(conn.getresponse().read())["runs"][0]["id"] == 1


def test_view_command_serves_on_loopback_and_refuses_bad_input(data, tmp_path, capsys):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from lab2048.cli import main

    assert main(["view", "--dataset", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such dataset directory" in err
    with socket.create_server(("127.0.0.1", 0)) as taken:
        assert main(["view", "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot listen" in err
    ds, ann, sc = data
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "lab2048", "view", "--dataset", str(ds),
                             "--annotations", str(ann), "--sidecar", str(sc), "--port",
                             str(port)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/info")
                info = json.loads(conn.getresponse().read())
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("lab2048 view did not answer")
        assert info["runs"] == 3 and info["gamma"] == GAMMA and info["value_bins"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert f"at http://127.0.0.1:{port}/" in out
