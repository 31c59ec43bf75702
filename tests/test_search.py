"""Value-guided search against plain recursive references written on the engine's Board."""

import functools
import math

import numpy as np
import pytest

from lab2048.engine import Board
from lab2048.play.search import best_moves, q_values, unique_boards

NAN = float("nan")


def value_of(exponents) -> float:
    """An arbitrary, deterministic value function of a position (points)."""
    e = np.asarray(exponents, np.int64)
    return float((e ** 2 * np.arange(1, 17)).sum() % 997) + 3.0 * float(e.max())


def batch_value_fn(calls=None):
    def fn(exponents):
        if calls is not None:
            calls.append(exponents.copy())
        return np.array([value_of(row) for row in exponents])
    return fn


def ref_q(board: Board, depth: int, value, gamma: float, afterstate: bool) -> list[float]:
    """Q of the four moves by plain recursion over moves and spawns (NaN where illegal)."""
    q = [NAN] * 4
    for d in range(4):
        res = board.move(d)
        if res.changed:
            q[d] = res.reward + gamma * ref_after(res.board, depth, value, gamma, afterstate)
    return q


def ref_after(a: Board, depth: int, value, gamma: float, afterstate: bool) -> float:
    if depth == 1 and afterstate:
        return value(a)
    empty = a.empty_cells
    total = 0.0
    for i in empty:
        for exponent, p in ((1, 0.9), (2, 0.1)):
            c = a.with_tile(i, exponent)
            if c.is_game_over:
                v = 0.0
            elif depth == 1:
                v = value(c)
            else:
                v = max(x for x in ref_q(c, depth - 1, value, gamma, afterstate)
                        if not math.isnan(x))
            total += p / len(empty) * v
    return total


def random_boards(rng, n, empty_cells=(4, 9), top=7):
    boards = []
    while len(boards) < n:
        e = rng.integers(1, top, 16)
        e[rng.choice(16, rng.integers(*empty_cells), replace=False)] = 0
        b = Board.from_exponents(e.tolist())
        if b.legal_mask:
            boards.append(b)
    return boards


def as_arrays(boards):
    return (np.array([b.bits for b in boards], np.uint64),
            np.array([b.mask for b in boards], np.uint16))


@pytest.mark.parametrize("afterstate", [False, True])
@pytest.mark.parametrize("depth", [1, 2])
def test_q_values_equal_the_recursive_reference(depth, afterstate):
    rng = np.random.default_rng(5 + depth)
    boards = random_boards(rng, 6 if depth == 1 else 3, empty_cells=(3, 7))
    calls = []
    q = q_values(*as_arrays(boards), batch_value_fn(calls), depth=depth, gamma=0.9,
                 afterstate=afterstate)
    assert len(calls) == 1  # one batched value call per search, whatever the depth
    value = lambda b: value_of(b.exponents)  # noqa: E731
    for i, b in enumerate(boards):
        np.testing.assert_allclose(q[i], ref_q(b, depth, value, 0.9, afterstate), rtol=1e-12)


def optimal(board: Board, horizon: int, gamma: float) -> float:
    """The exact optimal expected discounted score of the next `horizon` moves (0 at a game
    over), by brute force."""
    return _optimal(board.bits, board.mask, horizon, gamma)


@functools.cache
def _optimal(bits: int, mask: int, horizon: int, gamma: float) -> float:
    board = Board(bits, mask)
    if horizon == 0 or board.is_game_over:
        return 0.0
    best = -math.inf
    for d in board.legal_moves():
        res = board.move(d)
        empty = res.board.empty_cells
        future = sum(p / len(empty) * optimal(res.board.with_tile(i, e), horizon - 1, gamma)
                     for i in empty for e, p in ((1, 0.9), (2, 0.1)))
        best = max(best, res.reward + gamma * future)
    return best


def test_search_on_the_exact_value_finds_the_best_move():
    """On nearly full boards, depth-k search with the exact (H - k)-move optimum at its leaves
    is the exact H-move optimum; its move is the brute-force best move, greedy's often not."""
    rng = np.random.default_rng(11)
    boards = random_boards(rng, 24, empty_cells=(1, 3), top=6)
    gamma, horizon = 0.95, 3
    bits, masks = as_arrays(boards)
    exact_q = np.array([[NAN if not b.move(d).changed else
                         b.move(d).reward + gamma * sum(
                             p / len(b.move(d).board.empty_cells)
                             * optimal(b.move(d).board.with_tile(i, e), horizon - 1, gamma)
                             for i in b.move(d).board.empty_cells
                             for e, p in ((1, 0.9), (2, 0.1)))
                         for d in range(4)] for b in boards])
    best = best_moves(exact_q)
    greedy = [max(b.legal_moves(), key=lambda d, b=b: b.move(d).reward) for b in boards]
    assert sum(int(g) != int(m) for g, m in zip(greedy, best, strict=True)) >= 3
    for depth in (1, 2):
        v = lambda e, k=horizon - depth: np.array(  # noqa: E731
            [optimal(Board.from_exponents(row.tolist()), k, gamma) for row in e])
        q = q_values(bits, masks, v, depth=depth, gamma=gamma)
        np.testing.assert_allclose(q, exact_q, rtol=1e-12)
        assert best_moves(q).tolist() == best.tolist()
    # an afterstate head holding the exact expected optimum after the spawn agrees too
    after = lambda e: np.array([  # noqa: E731
        ref_after(Board.from_exponents(row.tolist()), 1,
                  lambda c: optimal(c, horizon - 1, gamma), gamma, False) for row in e])
    q = q_values(bits, masks, after, depth=1, gamma=gamma, afterstate=True)
    np.testing.assert_allclose(q, exact_q, rtol=1e-12)


def test_a_hand_built_position_whose_best_move_is_known():
    """Over the next two moves (γ = 1) Right is worth 56.8 points on average and Left only
    22.67, though both merge 20 now (greedy plays Left): the leaves hold the exact one-move
    optimum."""
    board = Board.from_tiles([[2, 2, 16, 4], [8, 8, 8, 2], [4, 2, 4, 16], [0, 2, 8, 2]])
    v = lambda e: np.array([optimal(Board.from_exponents(r.tolist()), 1, 1.0)  # noqa: E731
                            for r in e])
    q = q_values(*as_arrays([board]), v, depth=1, gamma=1.0)
    np.testing.assert_allclose(q[0], [32.0, 32.0, 68 / 3, 56.8])
    assert best_moves(q)[0] == 3 and board.move(2).reward == board.move(3).reward == 20


def test_identical_children_are_evaluated_once_and_q_is_unchanged():
    boards = random_boards(np.random.default_rng(3), 2)
    bits, masks = as_arrays(boards)
    calls = []
    fn = batch_value_fn(calls)
    q_a = q_values(bits[:1], masks[:1], fn, gamma=0.99)
    q_b = q_values(bits[1:], masks[1:], fn, gamma=0.99)
    one = len(calls[0])
    q = q_values(bits[[0, 1, 0, 0]], masks[[0, 1, 0, 0]], fn, gamma=0.99)
    np.testing.assert_array_equal(q, np.concatenate([q_a, q_b, q_a, q_a]))
    seen = calls[-1]
    assert len(np.unique(seen, axis=0)) == len(seen) <= one + len(calls[1])
    # an afterstate reached by two moves of one board (or two boards) is one leaf
    same = Board.from_tiles([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0]])
    calls.clear()
    q_values(*as_arrays([same]), fn, gamma=0.99, afterstate=True)
    assert len(calls[0]) == 2  # Up and Down differ; Left is illegal, Right moves it


def test_illegal_terminal_and_restricted_moves():
    full = Board.from_tiles([[2, 4, 2, 4], [4, 2, 4, 2], [2, 4, 2, 4], [4, 2, 4, 2]])
    q = q_values(*as_arrays([full]), batch_value_fn(), gamma=0.9)
    assert np.isnan(q).all() and best_moves(q).tolist() == [-1]
    board = random_boards(np.random.default_rng(1), 1)[0]
    full_q = q_values(*as_arrays([board]), batch_value_fn(), gamma=0.9)
    only = int(np.flatnonzero(~np.isnan(full_q[0]))[0])
    q = q_values(*as_arrays([board]), batch_value_fn(), gamma=0.9, allowed=[1 << only])
    assert np.flatnonzero(~np.isnan(q[0])).tolist() == [only] and q[0, only] == full_q[0, only]
    # two 65536 tiles merging end the game: Q = 0, and that move still counts as legal
    wide = Board.from_exponents([16, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    q = q_values(*as_arrays([wide]), batch_value_fn(), gamma=0.9)
    assert q[0, 2] == 0.0 and q[0, 3] == 0.0
    with pytest.raises(ValueError, match="depth"):
        q_values(*as_arrays([board]), batch_value_fn(), gamma=0.9, depth=0)


def test_unique_boards_with_masks():
    b = np.array([5, 3, 5, 5], np.uint64)
    m = np.array([0, 0, 1, 0], np.uint16)
    ub, um, inv = unique_boards(b, m)
    assert list(zip(ub.tolist(), um.tolist(), strict=True)) == [(3, 0), (5, 0), (5, 1)]
    assert inv.tolist() == [1, 0, 2, 1]
