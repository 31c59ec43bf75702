"""The expectimax teacher: heuristic, search values against a plain Python expectimax, game rows,
determinism, 2^16 boards (the C benchmark's agreement: tests/test_benchmark.py)."""

import dataclasses
import functools
import random
import subprocess
import sys

import numpy as np
import pytest

import reference as ref
from lab2048.engine import EndReason, kernels
from lab2048.teacher import (
    LOST_VALUE,
    TeacherConfig,
    board_eval,
    board_evals,
    play_game,
    search,
    search_boards,
)
from lab2048.teacher.heuristic import LINE_TABLE, heuristic, is_dead, line_score, spawn_heuristic

TABLES = kernels.tables()


# ---------------------------------------------------------------------------------------------
# A plain Python heuristic and expectimax, written from the formulas of the docstrings


def py_line_score(e) -> float:
    empty = sum(1 for x in e if x == 0)
    total = sum(float(x) ** 3.5 for x in e)
    tiles = [x for x in e if x]
    merges, i = 0, 0
    while i < len(tiles):
        j = i
        while j + 1 < len(tiles) and tiles[j + 1] == tiles[i]:
            j += 1
        if j > i:
            merges += j - i + 1
        i = j + 1
    left = sum(e[k] ** 4 - e[k + 1] ** 4 for k in range(3) if e[k] > e[k + 1])
    right = sum(e[k + 1] ** 4 - e[k] ** 4 for k in range(3) if e[k] <= e[k + 1])
    return 270.0 * empty + 700.0 * merges - 47.0 * min(left, right) - 11.0 * total


@functools.cache
def py_line_value(e: tuple) -> float:
    return float(np.float32(py_line_score(e)))  # the table holds float32


def exps(grid):
    return [[v.bit_length() - 1 if v else 0 for v in row] for row in grid]


def py_heuristic(grid) -> float:
    e = [[min(x, 15) for x in row] for row in exps(grid)]  # 2^16 scored as 2^15
    return sum(py_line_value(tuple(row)) for row in e + ref.transpose(e))


def py_legal(grid) -> list[int]:
    return [d for d in range(4) if ref.move(grid, d)[0] != grid]


def py_eval(grid) -> float:
    return LOST_VALUE if not py_legal(grid) else py_heuristic(grid)


def py_chance(grid, plies) -> float:
    """Expectimax without cutoff or table: the mean over spawns of the best continuation."""
    cells = [(r, c) for r in range(4) for c in range(4) if grid[r][c] == 0]
    total = 0.0
    for r, c in cells:
        for tile, p in ((2, 0.9), (4, 0.1)):
            child = [row[:] for row in grid]
            child[r][c] = tile
            if plies == 1:
                v = py_eval(child)
            else:
                moves = py_legal(child)
                v = max((py_chance(ref.move(child, d)[0], plies - 1) for d in moves),
                        default=LOST_VALUE)
            total += p * v
    return total / len(cells)


def py_values(grid, plies) -> list:
    return [py_chance(ref.move(grid, d)[0], plies) if d in py_legal(grid) else None
            for d in range(4)]


def grid_of(rows):
    return [[1 << e if e else 0 for e in row] for row in rows]


def board_of(rows):
    return ref.encode(grid_of(rows))


def symmetries(grid):
    out, g = [], grid
    for _ in range(4):
        g = [list(row) for row in zip(*g[::-1], strict=True)]  # rotate a quarter turn
        out += [g, [row[::-1] for row in g]]
    return out


def random_boards(n, seed=0):
    """Random grids with at least one tile (the empty board has no legal move but is no loss)."""
    rng = random.Random(seed)
    grids = (ref.random_grid(rng, 15) for _ in range(10 * n))
    return [g for g in grids if any(map(any, g))][:n]


# ---------------------------------------------------------------------------------------------
# Heuristic


def test_line_score_golden():
    # 2 2 4 _: 1 empty, 2 tiles with an equal neighbour, mono left 16 / right 15, sum 2 + 2^3.5
    expected = 270 + 700 * 2 - 47 * 15 - 11 * (2 + 2**3.5)
    assert line_score(0x1120) == pytest.approx(expected, rel=1e-12)
    assert line_score(0) == 270 * 4
    for line in range(0, 65536, 97):
        e = [(line >> (12 - 4 * k)) & 15 for k in range(4)]
        assert LINE_TABLE[line] == np.float32(py_line_score(e)), hex(line)


def test_heuristic_matches_python_and_is_symmetric():
    for grid in random_boards(300):
        values = {board_eval(np.uint64(bb), mm) for bb, mm in map(ref.encode, symmetries(grid))}
        assert len(values) == 1, grid  # exactly equal under the 8 symmetries
        assert values.pop() == pytest.approx(py_eval(grid), rel=1e-12, abs=1e-6)


def test_heuristic_sums_are_exact():
    """The docstring's exactness argument: table entries 13 <= |x| < 2^22, so the spawn update
    of one row and one column gives exactly the full sum."""
    a = np.abs(LINE_TABLE.astype(np.float64))
    assert a.min() >= 1.0 and a.max() < 2.0**22
    for grid in random_boards(200, seed=2):
        b, _ = ref.encode(grid)
        b = np.uint64(b)
        h, t = heuristic(b), np.uint64(kernels.transpose(b))
        for k in range(16):
            if (int(b) >> (4 * k)) & 15 == 0:
                for tile in (1, 2):
                    child = np.uint64(int(b) | tile << (4 * k))
                    assert spawn_heuristic(b, t, h, k, tile) == heuristic(child)


def test_game_over_board_gets_the_lost_value():
    dead = [[1, 2, 1, 2], [2, 1, 2, 1], [1, 2, 1, 2], [2, 1, 2, 1]]
    b, m = board_of(dead)
    assert kernels.legal_mask(np.uint64(b), m, *TABLES) == 0
    assert board_eval(np.uint64(b), m) == LOST_VALUE
    assert board_evals(np.array([b], np.uint64), np.array([m], np.uint16))[0] == -1_600_000
    alive = [row[:] for row in dead]
    alive[3][3] = 2  # merges with its left and upper neighbours
    b, m = board_of(alive)
    assert board_eval(np.uint64(b), m) != LOST_VALUE


def test_is_dead_agrees_with_the_engine_on_full_boards():
    """Full boards built with no equal neighbours (dead), then with one cell made equal to a
    neighbour (alive); exponents up to 16, so 2^15 next to 2^16 (no merge) is met too."""
    rng = random.Random(3)
    for i in range(2000):
        low = rng.randint(1, 13)
        e = [[0] * 4 for _ in range(4)]
        for r in range(4):
            for c in range(4):
                taken = {e[r][c - 1] if c else None, e[r - 1][c] if r else None}
                e[r][c] = rng.choice([x for x in range(low, low + 4) if x not in taken])
        if i % 2:
            r, c = rng.randrange(4), rng.randrange(3)
            e[r][c + 1] = e[r][c]
        b, m = ref.encode(grid_of(e))
        legal = kernels.legal_mask(np.uint64(b), m, *TABLES)
        assert (legal == 0) == (i % 2 == 0), e
        assert is_dead(np.uint64(b), m) == (legal == 0), e


def test_board_evals_rounds_board_eval():
    grids = random_boards(200, seed=1)
    bm = [ref.encode(g) for g in grids]
    boards = np.array([b for b, _ in bm], np.uint64)
    masks = np.array([m for _, m in bm], np.uint16)
    out = board_evals(boards, masks)
    assert out.dtype == np.int32
    expected = [int(np.floor(board_eval(np.uint64(b), m) + 0.5)) for b, m in bm]
    assert out.tolist() == expected


# ---------------------------------------------------------------------------------------------
# Search


def test_depth1_value_is_the_expectation_over_spawns():
    rows = [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 3]]
    b, m = board_of(rows)
    cfg = TeacherConfig(depth=1, adaptive=False)
    evs, _, legal, value = search(b, m, cfg)
    expected = py_values(grid_of(rows), 1)
    for d in range(4):
        if expected[d] is None:
            assert evs[d] == 0.0
        else:
            assert evs[d] == np.float32(expected[d] / 1000.0), d
    assert legal == 0b1111
    assert value == int(np.floor(py_heuristic(grid_of(rows)) + 0.5))


@pytest.mark.parametrize("rows", [
    [[1, 1, 2, 0], [0, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
    [[5, 4, 3, 2], [1, 2, 3, 1], [2, 3, 1, 2], [0, 0, 0, 1]],
    [[3, 5, 3, 5], [5, 3, 5, 3], [3, 5, 3, 0], [5, 3, 0, 1]],
])
def test_depth2_values_match_plain_expectimax(rows):
    b, m = board_of(rows)
    res = search_boards(np.array([b], np.uint64), np.array([m], np.uint16),
                        TeacherConfig(depth=2, adaptive=False, prob_cutoff=0.0))
    expected = py_values(grid_of(rows), 2)
    for d in range(4):
        if expected[d] is None:
            assert res["values"][0, d] == 0.0
        else:  # the transposition table stores float32
            assert res["values"][0, d] == pytest.approx(expected[d], rel=1e-6), d


def check_row(b, m, evs, move_dir, legal):
    assert legal == kernels.legal_mask(np.uint64(b), m, *TABLES)
    assert evs.dtype == np.float32
    for d in range(4):
        if not (legal >> d) & 1:
            assert evs[d] == 0.0
    best = max(evs[d] for d in range(4) if (legal >> d) & 1)
    assert (legal >> move_dir) & 1
    assert evs[move_dir] == best
    assert all(evs[d] < best for d in range(move_dir) if (legal >> d) & 1)  # first of ties


def test_search_outputs_are_consistent():
    game = play_game(7, TeacherConfig(depth=1, adaptive=False))
    cfg = TeacherConfig()
    for i in range(0, len(game.moves), 9):
        b, m = game.boards[i], game.masks[i]
        evs, move_dir, legal, value = search(b, m, cfg)
        check_row(b, m, evs, move_dir, legal)
        assert value == board_evals(game.boards[i : i + 1], game.masks[i : i + 1])[0]


def test_obvious_merge_is_taken():
    rows = [[11, 11, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 2, 3, 4]]
    b, m = board_of(rows)
    for depth in (1, 2, 3):
        _, move_dir, _, _ = search(b, m, TeacherConfig(depth=depth, max_depth=depth))
        _, _, reward = kernels.move(np.uint64(b), m, move_dir, *TABLES)
        assert reward >= 4096, depth


def test_boards_with_65536_tiles():
    rows = [
        [[16, 15, 3, 1], [2, 14, 13, 4], [1, 0, 2, 3], [0, 0, 0, 1]],  # 2^16 next to 2^15
        [[16, 16, 1, 2], [2, 1, 2, 1], [1, 2, 1, 2], [2, 1, 2, 1]],  # only move: 2^16 + 2^16
        [[16, 15, 15, 1], [2, 3, 4, 5], [6, 7, 8, 9], [10, 11, 12, 13]],  # 2^15 + 2^15 -> 2^16
    ]
    for r in rows:
        b, m = board_of(r)
        assert m != 0
        evs, move_dir, legal, value = search(b, m, TeacherConfig(depth=2))
        check_row(b, m, evs, move_dir, legal)
        assert value == int(np.floor(py_eval(grid_of(r)) + 0.5))
    # the only legal move would make 2^17: legal, valued as the end of the game
    evs, move_dir, legal, _ = search(*board_of(rows[1]), TeacherConfig())
    assert legal in (0b0100, 0b1000, 0b1100) and evs[move_dir] == LOST_VALUE / 1000


def test_dead_board_has_no_move():
    evs, move_dir, legal, value = search(*board_of([[1, 2, 1, 2], [2, 1, 2, 1]] * 2),
                                         TeacherConfig())
    assert (move_dir, legal, value) == (-1, 0, -1_600_000)
    assert not evs.any()


# ---------------------------------------------------------------------------------------------
# Games


def test_game_rows_chain_through_the_engine():
    seed = 11
    cfg = TeacherConfig(depth=1, adaptive=False)
    g = play_game(seed, cfg)
    n = len(g.moves)
    assert n > 50 and g.end_reason == EndReason.NO_MOVES
    dtypes = [g.boards.dtype, g.masks.dtype, g.moves.dtype, g.ev_legal.dtype, g.branch_evs.dtype,
              g.board_eval.dtype, g.max_rank.dtype]
    assert dtypes == [np.uint64, np.uint16, np.uint8, np.uint8, np.float32, np.int32, np.uint8]
    assert g.branch_evs.shape == (n, 4)
    assert g.boards[0] == kernels.new_board(np.uint64(seed))
    b, m, spawns, score = g.boards[0], 0, 2, 0
    for i in range(n):
        assert (g.boards[i], g.masks[i]) == (b, m), i
        assert g.max_rank[i] == kernels.highest_exponent(b, m)
        check_row(b, m, g.branch_evs[i], g.moves[i], g.ev_legal[i])
        b, m, reward, spawns, legal, _ = kernels.step(b, m, int(g.moves[i]), np.uint64(seed),
                                                      spawns, *TABLES)
        b = np.uint64(b)  # numba returns a Python int; above 2^63 it would type as float
        score += reward
    assert legal == 0 and g.score == score
    assert g.highest_tile == 1 << kernels.highest_exponent(b, m)
    assert np.array_equal(g.board_eval, board_evals(g.boards, g.masks))
    assert g.nodes > 0 and g.seconds > 0


def test_game_rows_are_reproduced_by_search():
    cfg = TeacherConfig(depth=2, max_depth=3)
    g = play_game(3, cfg, max_moves=300)
    assert len(g.moves) == 300 and g.end_reason == EndReason.MAX_MOVES
    for i in range(0, 300, 37):
        evs, move_dir, legal, value = search(g.boards[i], g.masks[i], cfg)
        assert np.array_equal(evs, g.branch_evs[i]) and move_dir == g.moves[i]
        assert (legal, value) == (g.ev_legal[i], g.board_eval[i])


def test_search_does_not_depend_on_earlier_searches():
    g = play_game(4, TeacherConfig(depth=1, adaptive=False))
    cfg = TeacherConfig(depth=2, max_depth=3)
    forward = search_boards(g.boards, g.masks, cfg)
    backward = search_boards(g.boards[::-1], g.masks[::-1], cfg)
    for key in ("values", "move_dir", "nodes"):
        assert np.array_equal(forward[key], backward[key][::-1]), key


def test_play_game_is_deterministic():
    cfg = TeacherConfig(depth=2, max_depth=3)
    a, b = play_game(5, cfg, max_moves=400), play_game(5, cfg, max_moves=400)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.tobytes() == y.tobytes(), f.name
        elif f.name not in ("seconds", "cpu_seconds"):
            assert x == y, f.name
    assert play_game(6, cfg, max_moves=400).boards.tobytes() != a.boards.tobytes()


def test_compiled_code_loads_from_the_cache():
    """numba's cache has segfaulted on recursive functions: load everything in a new process."""
    code = ("from lab2048.teacher import TeacherConfig, play_game, search, search_boards; "
            "g = play_game(2, TeacherConfig(), max_moves=30); "
            "search_boards(g.boards, g.masks, TeacherConfig(depth=3, max_depth=3)); "
            "print(search(g.boards[5], 0, TeacherConfig())[1] == g.moves[5])")
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr


def test_config_validation():
    for bad in ({"depth": 0}, {"depth": 3, "max_depth": 2}, {"max_depth": 16},
                {"prob_cutoff": 1.0}, {"tt_bits": 30}):
        with pytest.raises(ValueError):
            TeacherConfig(**bad)
    assert TeacherConfig(depth=2, max_depth=4, depth_offset=6).plies(11) == 4
    assert TeacherConfig(depth=2, max_depth=4, depth_offset=6).plies(7) == 2
    assert TeacherConfig(depth=2, adaptive=False).plies(15) == 2
    for f in dataclasses.fields(TeacherConfig):
        assert f.metadata.get("help"), f.name

