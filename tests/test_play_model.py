"""Playing with a model (in process and through the server) and the value smoke test."""

import json

import numpy as np
import pytest
import torch

from lab2048.cli import main
from lab2048.engine import Game
from lab2048.model import Model, ModelConfig, ValueHeadConfig, load_init, save_init
from lab2048.play.agents import make_agent
from lab2048.play.config import PlayConfig, ValueSmokeConfig, parse_agent
from lab2048.play.games import play_lockstep
from lab2048.play.predictor import LocalPredictor, RemotePredictor
from lab2048.play.value_smoke import metrics, rollout_returns
from lab2048.value_target import ValueTarget

TINY = dict(hidden=32, layers=1, heads=4, kv_heads=2, mlp=64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def init_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inits")
    torch.manual_seed(2)
    pv = Model(ModelConfig(**TINY, value_head=ValueHeadConfig(enabled=True, prior=300.0)))
    with torch.no_grad():
        pv.value.out.weight.normal_(0, 0.3)
    torch.manual_seed(3)
    p = Model(ModelConfig(**TINY))
    return save_init(pv, root / "pv"), save_init(p, root / "p")


def play_model_games(predictor, seeds, max_moves):
    return play_lockstep(make_agent(parse_agent("policy"), predictor), seeds, max_moves)


def test_model_games_are_seeded_and_follow_the_policy(init_dirs):
    model = load_init(init_dirs[0])
    seeds = np.arange(3, dtype=np.uint64) + np.uint64(11)
    a = play_model_games(LocalPredictor(model), seeds, 80)
    b = play_model_games(LocalPredictor(model, max_batch=1), seeds, 80)
    assert a.scores.tolist() == b.scores.tolist() and a.moves.tolist() == b.moves.tolist()
    # replay game 0 move by move with the engine's Game and the model's argmax
    from lab2048.engine.batch import to_exponents

    game = Game(seed=11)
    while not game.over and len(game.moves) < 80:
        probs = model.predict(to_exponents([game.board.bits]), [game.board.legal_mask])
        game.play(int(np.argmax(probs.move_probs.numpy()[0])))
    assert game.score == a.scores[0] and len(game.moves) == a.moves[0]


def test_play_through_the_server_equals_in_process(init_dirs):
    from test_serve import server_thread

    model = load_init(init_dirs[1])
    seeds = np.arange(4, dtype=np.uint64)
    local = play_model_games(LocalPredictor(model), seeds, 60)
    with server_thread(model, "127.0.0.1:0", max_batch=256, max_wait_ms=1) as server:
        remote_pred = RemotePredictor(server.address)
        remote = play_model_games(remote_pred, seeds, 60)
        remote_pred.close()
    assert remote.scores.tolist() == local.scores.tolist()
    assert remote.moves.tolist() == local.moves.tolist()


def test_play_command_with_init(init_dirs, tmp_path, capsys):
    out = tmp_path / "play"
    assert main(["play", "--init", str(init_dirs[1]), "--games", "2", "--max-moves", "40",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "agent model: 2 games" in printed and "moves/s" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["agent"] == "model" and summary["config"]["init"] == str(init_dirs[1])


def test_play_config_picks_the_agent():
    assert PlayConfig().agent == "greedy"
    assert PlayConfig(init="x").agent == "model" and PlayConfig(server="h:1").agent == "model"
    with pytest.raises(ValueError, match="needs --init"):
        PlayConfig(agent="model")
    with pytest.raises(ValueError, match="not agent corner"):
        PlayConfig(agent="corner", init="x")
    with pytest.raises(ValueError, match="device"):
        PlayConfig(init="x", device="tpu")
    with pytest.raises(ValueError, match="needs --init"):
        ValueSmokeConfig()
    assert PlayConfig(max_moves=0).max_moves == 0  # no limit, as everywhere in play/
    with pytest.raises(ValueError, match="max_moves must be at least 0"):
        PlayConfig(max_moves=-1)


def test_one_line_errors(tmp_path, capsys):
    assert main(["play", "--init", str(tmp_path / "missing")]) == 2
    assert "no such model init directory" in capsys.readouterr().err
    assert main(["play", "--server", f"unix:{tmp_path}/none.sock", "--games", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the inference server" in err and len(err.strip().splitlines()) == 1


def test_discounted_returns_and_metrics():
    rewards = np.array([[4.0, 0.0, 8.0, 99.0], [2.0, 2.0, 0.0, 0.0]])
    g = rollout_returns(rewards, np.array([3, 2]), 0.5)
    np.testing.assert_allclose(g[0, :3], [4 + 0.5 * 0 + 0.25 * 8, 0 + 0.5 * 8, 8])
    np.testing.assert_allclose(g[1, :2], [3, 2])
    assert np.isnan(g[0, 3]) and np.isnan(g[1, 2:]).all()
    m = metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    assert m["mae"] == 0 and m["correlation"] == pytest.approx(1)
    assert m["explained_variance"] == pytest.approx(1)


def test_value_smoke_command(init_dirs, tmp_path, capsys):
    out = tmp_path / "vs"
    assert main(["value-smoke", "--init", str(init_dirs[0]), "--games", "3", "--moves", "50",
                 "--gamma", "0.9", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MAE" in printed and "explained variance" in printed
    s = json.loads((out / "value-smoke.json").read_text())
    assert s["all_steps"]["steps"] == s["rollout_moves"] > 0
    assert {"mae", "correlation", "explained_variance"} <= set(s["all_steps"])
    assert (out / "value-smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "steps.csv").read_text().splitlines()
    assert rows[0] == "seed,step,reward,predicted,realised,complete"
    assert len(rows) == s["rollout_moves"] + 1
    assert main(["value-smoke", "--init", str(init_dirs[1]), "--out", str(tmp_path / "x")]) == 2
    assert "has no value head" in capsys.readouterr().err


def test_value_smoke_reads_gamma_from_the_init(init_dirs, tmp_path, capsys):
    import shutil

    init = tmp_path / "init"
    shutil.copytree(init_dirs[0], init)
    ValueTarget(gamma=0.9).save(init)
    assert main(["value-smoke", "--init", str(init), "--games", "1", "--moves", "20",
                 "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "value-smoke.json").read_text())["gamma"] == 0.9
    capsys.readouterr()
    assert main(["value-smoke", "--init", str(init), "--games", "1", "--moves", "20",
                 "--gamma", "0.99", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "trained for gamma 0.9, not 0.99" in err and len(err.strip().splitlines()) == 1
    assert not any((tmp_path / "b").iterdir())  # nothing written


def test_value_smoke_plays_the_agent_it_is_given(init_dirs, tmp_path):
    """--agent value:depth=1: the rollouts are that agent's games (the ones `evaluate` plays on
    those seeds), with the value head's V(s_t) beside every step."""
    from lab2048.play.value_smoke import run

    init = str(init_dirs[0])
    s = run(ValueSmokeConfig(init=init, agent="value:depth=1", games=2, moves=30,
                             out=str(tmp_path / "v")))
    assert s["agent"] == "value:depth=1"
    model = load_init(init_dirs[0])
    agent = make_agent(parse_agent("value:depth=1"), LocalPredictor(model), s["gamma"])
    played = play_lockstep(agent, np.arange(2, dtype=np.uint64), 30)
    assert s["mean_score"] == played.scores.mean()
    assert s["rollout_moves"] == played.moves.sum()
    with pytest.raises(ValueError, match="model agent"):
        ValueSmokeConfig(init=init, agent="greedy")
