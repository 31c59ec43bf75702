"""`lab2048 evaluate`: agent specs, paired seeded games, resume, outputs, offline ranking."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from lab2048.cli import main
from lab2048.data.dataset import Dataset, default_dataset
from lab2048.engine import Game
from lab2048.model import Model, ModelConfig, ValueHeadConfig, load_init, save_init
from lab2048.play import arena
from lab2048.play.agents import make_agent, play_games, proposals
from lab2048.play.config import AgentSpec, EvaluateConfig, parse_agent, parse_agents
from lab2048.play.games import play_lockstep
from lab2048.play.predictor import LocalPredictor
from lab2048.play.ranking import evenly_spaced, regret, value_fit
from lab2048.value_target import ValueTarget

TINY = dict(hidden=32, layers=1, heads=4, kv_heads=2, mlp=64)
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    torch.manual_seed(2)
    model = Model(ModelConfig(**TINY, value_head=ValueHeadConfig(enabled=True, prior=300.0)))
    with torch.no_grad():
        model.value.out.weight.normal_(0, 0.3)
    return save_init(model, tmp_path_factory.mktemp("inits") / "pv")


# ---------------------------------------------------------------------------------------------
# specs


def test_agent_specs_parse_to_canonical_names():
    assert [s.name for s in parse_agents("policy, value ,value:depth=2,hybrid:top=2,"
                                         "hybrid:p=0.2:depth=2,teacher,teacher:depth=3,greedy")] \
        == ["policy", "value:depth=1", "value:depth=2", "hybrid:top=2", "hybrid:p=0.2:depth=2",
            "teacher:depth=2", "teacher:depth=3", "greedy"]
    assert parse_agent("hybrid:p=0.25") == AgentSpec("hybrid", depth=1, p=0.25)
    assert parse_agent("teacher:depth=1").teacher_config().depth == 1
    assert parse_agent("value").uses_value and not parse_agent("policy").uses_value
    assert not parse_agent("teacher").uses_model


@pytest.mark.parametrize(("text", "message"), [
    ("minimax", "unknown agent 'minimax' (known: policy, value, hybrid, teacher, random"),
    ("value:width=3", "unknown option 'width' (known: depth)"),
    ("greedy:depth=1", "greedy takes no options"),
    ("value:depth=x", "depth must be an integer, got 'x'"),
    ("value:depth=9", "depth must be in 1..3"),
    ("value:depth", "option 'depth' needs one value"),
    ("hybrid", "hybrid needs one of top=K or p=X"),
    ("hybrid:top=2:p=0.1", "hybrid needs one of top=K or p=X"),
    ("hybrid:top=5", "top must be in 1..4"),
    ("hybrid:p=0", "p must be in (0, 1]"),
    ("teacher:depth=0", "depth must be in 1..15"),
    ("policy,policy", "agent 'policy' is listed twice"),
    (" , ", "no agents given"),
])
def test_bad_specs_are_errors_naming_the_spec(text, message):
    with pytest.raises(ValueError) as e:
        parse_agents(text)
    assert message in str(e.value)


def test_proposals():
    probs = np.array([[0.1, 0.5, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.9, 0.1]])
    legal = np.array([15, 15, 12], np.uint8)
    assert proposals(probs, legal, top=2).tolist() == [2 | 4, 1 | 2, 4 | 8]
    assert proposals(probs, legal, p=0.3).tolist() == [2 | 4, 1, 4]  # argmax always


# ---------------------------------------------------------------------------------------------
# games


def test_lockstep_baselines_equal_their_compiled_loop():
    seeds = np.arange(5, dtype=np.uint64) + np.uint64(40)
    for kind in ("random", "greedy", "corner"):
        for limit in (0, 37):
            a = play_games(kind, seeds, max_moves=limit, progress=False)
            b = play_lockstep(make_agent(parse_agent(kind)), seeds, limit)
            for key in ("scores", "moves", "highest", "ends"):
                assert getattr(a, key).tolist() == getattr(b, key).tolist(), (kind, key)


def test_model_agents_play_the_game_they_choose(init):
    """Each model agent's lockstep games are the engine's Game fed the agent's own move for
    that board alone: batching and the other games change nothing."""
    predictor = LocalPredictor(load_init(init))
    seeds = np.arange(3, dtype=np.uint64) + np.uint64(7)
    for text in ("policy", "value:depth=1", "hybrid:top=2"):
        agent = make_agent(parse_agent(text), predictor, gamma=0.99)
        res = play_lockstep(agent, seeds, 40)
        assert agent.boards_evaluated > 0
        game = Game(seed=8)
        while not game.over and len(game.moves) < 40:
            b = np.array([game.board.bits], np.uint64)
            m = np.array([game.board.mask], np.uint16)
            lg = np.array([game.board.legal_mask], np.uint8)
            game.play(int(agent.choose(b, m, lg, b * 0 + 8, np.array([len(game.moves)]))[0]))
        assert (game.score, len(game.moves)) == (res.scores[1], res.moves[1]), text


def evaluate(args, capsys=None):
    code = main(["evaluate", *map(str, args)])
    return code, (capsys.readouterr() if capsys else None)


def test_evaluate_writes_paired_results(init, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["--init", init, "--agents", "policy,value:depth=1,hybrid:p=0.3,greedy",
            "--games", "3", "--seed", "5", "--max-moves", "30", "--gamma", "0.99", "--out", out]
    code, printed = evaluate(args, capsys)
    assert code == 0 and "paired differences" in printed.out
    s = json.loads((out / "summary.json").read_text())
    assert s["kind"] == "evaluation" and s["gamma"] == 0.99
    assert list(s["agents"]) == ["policy", "value:depth=1", "hybrid:p=0.3", "greedy"]
    rows = list(csv.DictReader((out / "games.csv").open()))
    assert len(rows) == 12 and {r["seed"] for r in rows} == {"5", "6", "7"}
    for name, a in s["agents"].items():
        scores = [int(r["score"]) for r in rows if r["agent"] == name]
        assert a["score"]["mean"] == pytest.approx(np.mean(scores))
        assert a["score"]["ci95"][0] <= a["score"]["mean"] <= a["score"]["ci95"][1]
        assert set(a["reach"]) == {"2048", "4096", "8192", "16384", "32768", "65536"}
    assert s["agents"]["greedy"]["boards_per_move"] == 0
    assert s["agents"]["value:depth=1"]["boards_per_move"] > 4  # the children of every move
    pair = next(p for p in s["paired"] if p["a"] == "policy" and p["b"] == "greedy")
    diff = [int(a["score"]) - int(b["score"]) for a, b in
            zip([r for r in rows if r["agent"] == "policy"],
                [r for r in rows if r["agent"] == "greedy"], strict=True)]
    assert pair["mean_difference"] == pytest.approx(np.mean(diff))
    assert (out / "agents.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not arena.staging_path(out).exists()
    first = (out / "games.csv").read_text()
    code, _ = evaluate([*args, "--overwrite"], capsys)  # same seeds, same agents: same games
    assert code == 0 and (out / "games.csv").read_text() == first


def test_resume_after_an_interruption_gives_the_uninterrupted_result(init, tmp_path,
                                                                      monkeypatch, capsys):
    args = ["--init", init, "--agents", "greedy,policy,value:depth=1", "--games", "4",
            "--max-moves", "25", "--gamma", "0.99"]
    assert evaluate([*args, "--out", tmp_path / "whole"])[0] == 0
    out = tmp_path / "cut"
    add = arena.Staging.add
    calls = []

    def interrupted(self, record):
        if len(calls) == 6:
            raise KeyboardInterrupt
        calls.append(record)
        add(self, record)

    monkeypatch.setattr(arena.Staging, "add", interrupted)
    assert evaluate([*args, "--out", out])[0] == 130
    monkeypatch.setattr(arena.Staging, "add", add)
    staged = arena.staging_path(out)
    assert len(staged.read_text().splitlines()) == 7 and not out.exists()
    with staged.open("a") as f:
        f.write('{"agent": "policy", "se')  # a kill mid-write
    code, printed = evaluate([*args, "--out", out], capsys)  # without --resume: refused
    assert code == 2 and "pass --resume to continue" in printed.err
    code, printed = evaluate([*args, "--out", out, "--seed", "1", "--resume"], capsys)
    assert code == 2 and "staged with seed = 0, this run has 1" in printed.err
    assert evaluate([*args, "--out", out, "--resume"])[0] == 0
    assert (out / "games.csv").read_text() == (tmp_path / "whole" / "games.csv").read_text()
    assert not staged.exists()


def test_a_resume_may_add_agents(init, tmp_path, monkeypatch):
    args = ["--init", init, "--games", "3", "--max-moves", "20", "--out", tmp_path / "ev"]
    add = arena.Staging.add

    def interrupted(self, record):
        add(self, record)
        raise KeyboardInterrupt

    monkeypatch.setattr(arena.Staging, "add", interrupted)
    assert evaluate([*args, "--agents", "greedy"])[0] == 130
    monkeypatch.setattr(arena.Staging, "add", add)
    assert evaluate([*args, "--agents", "greedy,value:depth=1", "--resume"])[0] == 0
    rows = list(csv.DictReader((tmp_path / "ev" / "games.csv").open()))
    assert [r["agent"] for r in rows] == ["greedy"] * 3 + ["value:depth=1"] * 3


def test_overwrite_replaces_only_an_evaluation(init, tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    code, printed = evaluate(["--agents", "greedy", "--games", "1", "--out", notes,
                              "--overwrite"], capsys)
    assert code == 2 and "is not an evaluation output; not replacing it" in printed.err
    assert (notes / "keep.txt").read_text() == "mine"
    out = tmp_path / "ev"
    assert evaluate(["--agents", "corner", "--games", "1", "--out", out], capsys)[0] == 0
    code, printed = evaluate(["--agents", "corner", "--games", "1", "--out", out], capsys)
    assert code == 2 and "already exists (pass --overwrite" in printed.err


def test_gamma_comes_from_the_init(init, tmp_path, capsys):
    recorded = tmp_path / "init"
    shutil.copytree(init, recorded)
    ValueTarget(gamma=0.95).save(recorded)
    base = ["--init", recorded, "--agents", "value:depth=1", "--games", "1", "--max-moves", "5"]
    assert evaluate([*base, "--out", tmp_path / "a"], capsys)[0] == 0
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["gamma"] == 0.95
    code, printed = evaluate([*base, "--gamma", "0.99", "--out", tmp_path / "b"], capsys)
    assert code == 2 and printed.err.count("\n") == 1
    assert "trained for gamma 0.95, not 0.99" in printed.err


@pytest.mark.parametrize(("args", "message"), [
    (["--agents", "policy"], "need --init DIR or --server ADDR"),
    (["--agents", "value:depth=7", "--init", "x"], "depth must be in 1..3"),
    (["--agents", "greedy", "--max-moves", "-1"], "max_moves must be at least 0, got -1"),
    (["--agents", "greedy", "--gamma", "1.5"], "gamma must be in (0, 1], got 1.5"),
    (["--agents", "greedy", "--gamma", "0"], "gamma must be in (0, 1], got 0.0"),  # not "unset"
    (["--init", "nowhere", "--agents", "policy"], "nowhere: no such model init directory"),
])
def test_one_line_errors(args, message, tmp_path, capsys):
    code, printed = evaluate([*args, "--out", tmp_path / "o"], capsys)
    assert code == 2 and printed.err.count("\n") == 1 and message in printed.err


def test_through_the_server_equals_in_process(init, tmp_path, capsys):
    from test_serve import server_thread

    args = ["--agents", "policy,value:depth=1", "--games", "2", "--max-moves", "30",
            "--gamma", "0.99"]
    assert evaluate([*args, "--init", init, "--out", tmp_path / "local"], capsys)[0] == 0
    with server_thread(load_init(init), "127.0.0.1:0", max_batch=64, max_wait_ms=1) as server:
        assert evaluate([*args, "--server", server.address, "--out", tmp_path / "remote"],
                        capsys)[0] == 0
    assert (tmp_path / "local" / "games.csv").read_text() == \
        (tmp_path / "remote" / "games.csv").read_text()


def test_gamma_comes_from_the_servers_describe(init, tmp_path, capsys):
    from test_serve import server_thread

    recorded = tmp_path / "init"
    shutil.copytree(init, recorded)
    ValueTarget(gamma=0.95).save(recorded)
    args = ["--agents", "value:depth=1", "--games", "1", "--max-moves", "5"]
    with server_thread(load_init(recorded), "127.0.0.1:0", init_dir=recorded) as server:
        assert evaluate([*args, "--server", server.address, "--out", tmp_path / "a"],
                        capsys)[0] == 0
        code, printed = evaluate([*args, "--server", server.address, "--gamma", "0.99",
                                  "--out", tmp_path / "b"], capsys)
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["gamma"] == 0.95
    assert code == 2 and "trained for gamma 0.95, not 0.99" in printed.err


# ---------------------------------------------------------------------------------------------
# offline ranking


def test_ranking_helpers():
    assert evenly_spaced(10, 3).tolist() == [0, 4, 9] and evenly_spaced(3, 5).tolist() == [0, 1, 2]
    evs = np.array([[1.0, 3.0, 2.0, 9.0], [0.5, 0.2, 0.1, 0.0]])
    legal = np.array([7, 15], np.uint8)  # row 0: Right illegal
    assert regret(evs, legal, np.array([2, 0])).tolist() == [1.0, 0.0]
    fit = value_fit(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert fit["mae"] == pytest.approx(1 / 3) and fit["r2"] == pytest.approx(1 - 1 / (14 / 3))


def test_offline_ranking_on_the_embedded_dataset(init, tmp_path, capsys):
    from lab2048.data.sidecar import SidecarConfig, build_sidecar

    sidecar = tmp_path / "values"
    build_sidecar(default_dataset(), SidecarConfig(gamma=0.99), output=sidecar, workers=1)
    out = tmp_path / "rank"
    code, printed = evaluate(["--dataset", default_dataset(), "--sidecar", sidecar, "--init",
                              init, "--rows", "40", "--where", "id <= 12", "--agents",
                              "policy,value:depth=1,hybrid:top=2,teacher,greedy", "--gamma",
                              "0.99", "--out", out], capsys)
    assert code == 0, printed.err
    s = json.loads((out / "summary.json").read_text())
    assert s["rows"] == 40 and s["search_rows"] == 40 and s["mode"] == "offline"
    assert s["agents"]["policy"]["agreement"] == s["policy_agreement"]
    # the embedded dataset is the default teacher's: its own search agrees everywhere
    assert s["agents"]["teacher:depth=2"]["agreement"]["rate"] == 1.0
    assert s["agents"]["teacher:depth=2"]["regret"] == {"mean": 0.0, "zero_share": 1.0}
    assert all(a["regret"]["mean"] >= 0 for a in s["agents"].values())
    assert s["agents"]["value:depth=1"]["boards_per_position"] > 4
    # the value fit, recomputed from the rows the command picked
    ds = Dataset(default_dataset())
    ids = np.flatnonzero(ds.shards[0]["run_id"] <= 12)
    rows = ids[evenly_spaced(len(ids), 40)]
    from lab2048.data.sidecar import open_sidecar
    from lab2048.engine.batch import to_exponents

    _, values = open_sidecar(ds, sidecar)
    steps = ds.shards[0][rows]
    pred = LocalPredictor(load_init(init)).values(to_exponents(steps["board"],
                                                               steps["tile_65536_mask"]))
    expected = value_fit(pred, values[0]["return_raw"][rows].astype(np.float64))
    assert s["value"]["r2"] == pytest.approx(expected["r2"], rel=1e-6)
    assert s["value"]["mae"] == pytest.approx(expected["mae"], rel=1e-6)
    code, printed = evaluate(["--dataset", default_dataset(), "--sidecar", sidecar, "--init",
                              init, "--rows", "5", "--agents", "policy", "--gamma", "0.9",
                              "--out", tmp_path / "x"], capsys)
    assert code == 2 and "returns discounted at gamma 0.99" in printed.err


def test_evaluate_config_defaults():
    cfg = EvaluateConfig(init="x")
    assert [s.name for s in cfg.specs] == ["policy", "value:depth=1", "hybrid:top=2", "greedy"]
    assert cfg.max_moves == 0 and cfg.gamma is None  # None: the init's γ
