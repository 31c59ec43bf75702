"""Seeded spawns and games: reference draws, reproducibility in and across processes, exact
scores, and the compiled game loop against the Python Game."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

import reference as ref
from lab2048.engine import Board, EndReason, Game, Move, kernels
from lab2048.play.agents import play_game, play_games


def test_draw_is_splitmix64():
    # splitmix64's published first output for state 0
    assert int(kernels.draw(np.uint64(0), 0)) == 0xE220A8397B1DCDAF
    for seed, k in [(0, 5), (2031, 0), (2**64 - 1, 12345), (123456789, 2**40)]:
        assert int(kernels.draw(np.uint64(seed), k)) == ref.draw(seed, k)


def test_spawn_matches_reference():
    rng = random.Random(5)
    for i in range(2000):
        grid = ref.random_grid(rng, 12)
        seed, k = rng.getrandbits(64), rng.randrange(10**6)
        spawned = Board.from_tiles(grid).spawn(seed, k)
        assert spawned.tiles == ref.spawn(grid, seed, k), i


def test_spawn_distribution():
    """Fixed seeds, so deterministic: 4s at 10% +- 0.6%, cells uniform on the empty board."""
    boards = [kernels.spawn(np.uint64(0), np.uint64(s), 0) for s in range(40_000)]
    cells = [(int(b).bit_length() - 1) // 4 for b in boards]  # nibble position from the bottom
    values = [(int(b) >> (4 * c)) & 15 for b, c in zip(boards, cells, strict=True)]
    assert abs(values.count(2) / len(values) - 0.1) < 0.006
    counts = np.bincount(cells, minlength=16)
    expected = len(cells) / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 37.7  # 15 degrees of freedom, p = 0.001


def test_opening_board_has_two_tiles_and_is_seeded():
    for seed in range(50):
        board = Board.new(seed)
        assert len(board.empty_cells) == 14
        assert board == Board.new(seed)
        assert board.tiles == ref.spawn(ref.spawn(ref.decode(0), seed, 0), seed, 1)


def play_random(seed, move_seed=0, limit=10**6):
    game = Game(seed)
    rng = random.Random(move_seed)
    while not game.over and len(game.moves) < limit:
        game.play(rng.choice(game.board.legal_moves()))
    return game


def test_same_seed_and_moves_replay_the_same_game():
    a = play_random(seed=42, move_seed=1)
    b = Game(42)
    for move in a.moves:
        b.play(move)
    assert (b.board, b.score, b.end_reason) == (a.board, a.score, EndReason.NO_MOVES)
    assert play_random(seed=43, move_seed=1).board != a.board


def test_game_is_reproducible_across_processes():
    a = play_random(seed=2**63 + 7, move_seed=3)
    script = (
        "import json, sys; from lab2048.engine import Game\n"
        "g = Game(int(sys.argv[1]))\n"
        "for m in json.loads(sys.argv[2]): g.play(m)\n"
        "print(g.board.bits, g.score)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(a.seed), json.dumps([int(m) for m in a.moves])],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert (int(out[0]), int(out[1])) == (a.board.bits, a.score)


def test_score_is_the_sum_of_rewards_not_the_implied_score():
    game = Game(9)
    rng = random.Random(9)
    rewards, fours = [], 0
    while not game.over:
        before = game.board
        move = rng.choice(before.legal_moves())
        moved = before.move(move).board
        rewards.append(game.play(move))
        spawned = [e for e, f in zip(game.board.exponents, moved.exponents, strict=True) if e != f]
        fours += spawned == [2]
    assert game.score == sum(rewards)
    implied = sum((e - 1) * (1 << e) for e in game.board.exponents if e > 1)
    opening_fours = sum(e == 2 for e in Board.new(9).exponents)
    assert implied - game.score == 4 * (fours + opening_fours)


def test_illegal_move_is_refused():
    game = Game(0)
    game.board = Board.from_tiles([[2, 4, 0, 0], [0] * 4, [0] * 4, [0] * 4])
    with pytest.raises(ValueError, match="not legal"):
        game.play(Move.LEFT)


@pytest.mark.parametrize("agent", [0, 1, 2])
def test_compiled_game_loop_matches_python_game(agent):
    tables = kernels.tables()
    for seed in range(3):
        record = np.zeros(100_000, np.uint8)
        score, n, b, _, end = play_game(agent, np.uint64(seed), 100_000, *tables, record)
        game = Game(seed)
        for move in record[:n]:
            game.play(int(move))
        assert (game.board.bits, game.score, int(game.end_reason)) == (int(b), score, end)
        assert end == EndReason.NO_MOVES


def test_play_games_stops_at_max_moves_and_is_deterministic():
    a = play_games("random", np.arange(20), max_moves=50, progress=False)
    assert np.all(a.moves <= 50)
    assert set(a.ends) <= {EndReason.MAX_MOVES, EndReason.NO_MOVES}
    b = play_games("random", np.arange(20), max_moves=50, progress=False)
    assert np.array_equal(a.scores, b.scores)
    full = play_games("greedy", np.arange(20), progress=False)
    assert np.all(full.ends == EndReason.NO_MOVES) and full.scores.min() > 0


def test_second_start_loads_compiled_kernels_from_the_disk_cache():
    code = "from lab2048.engine import Game; Game(1).play(Game(1).board.legal_moves()[0])"
    env = {**os.environ, "NUMBA_DEBUG_CACHE": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)
    second = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True, env=env).stdout
    assert "data loaded" in second
    assert "data saved" not in second
