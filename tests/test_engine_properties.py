"""Properties on many random boards, against the independent reference in reference.py."""

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as ref
from lab2048.engine import (
    Board,
    Move,
    apply_moves,
    exponent_legal_masks,
    from_exponents,
    highest_exponents,
    legal_bits,
    legal_bools,
    legal_masks,
    move_all,
    to_exponents,
)


def tile_sum(grid):
    return sum(map(sum, grid))


def random_boards(n, seed, max_exponent=15):
    rng = random.Random(seed)
    grids = [ref.random_grid(rng, max_exponent) for _ in range(n)]
    encoded = [ref.encode(g) for g in grids]
    bits = np.array([b for b, _ in encoded], np.uint64)
    masks = np.array([m for _, m in encoded], np.uint16)
    return grids, bits, masks


# exponents with long runs of equal values, so that merges are common
exponent_lists = st.lists(
    st.one_of(st.just(0), st.integers(1, 3), st.integers(1, 16), st.sampled_from([14, 15, 16])),
    min_size=16, max_size=16,
)


@settings(max_examples=400, deadline=None)
@given(exponent_lists, st.sampled_from(list(Move)))
def test_move_matches_reference(exps, move):
    grid = [[1 << e if e else 0 for e in exps[4 * r : 4 * r + 4]] for r in range(4)]
    expected, reward = ref.move(grid, move)
    board = Board.from_exponents(exps)
    assert board.tiles == grid
    result = board.move(move)
    if any(v > 65536 for row in expected for v in row):
        assert result.reward == -1 and result.board == board  # 2^17 cannot be represented
        return
    assert result.board.tiles == expected
    assert result.reward == reward
    assert result.board.tile_sum == board.tile_sum  # merging never changes the sum of tiles
    assert result.changed == (expected != grid)


def test_batch_matches_reference_on_many_boards():
    grids, bits, masks = random_boards(3000, seed=7, max_exponent=16)
    batch = move_all(bits, masks)
    for i, grid in enumerate(grids):
        legal = 0
        for d in range(4):
            expected, reward = ref.move(grid, d)
            if any(v > 65536 for row in expected for v in row):
                assert batch.rewards[i, d] == -1
                legal |= 1 << d
                continue
            assert ref.decode(int(batch.boards[i, d]), int(batch.masks[i, d])) == expected
            assert batch.rewards[i, d] == reward
            assert tile_sum(expected) == tile_sum(grid)
            legal |= (expected != grid) << d
        assert batch.legal[i] == legal, grid
    assert np.array_equal(legal_masks(bits, masks), batch.legal)


def test_batch_functions_agree_with_scalar_board():
    _, bits, masks = random_boards(500, seed=11, max_exponent=16)
    rng = np.random.default_rng(0)
    moves = rng.integers(0, 4, len(bits))
    after, after_masks, rewards = apply_moves(bits, moves, masks)
    exps = to_exponents(bits, masks)
    highest = highest_exponents(bits, masks)
    for i in range(len(bits)):
        board = Board(int(bits[i]), int(masks[i]))
        result = board.move(int(moves[i]))
        assert (int(after[i]), int(after_masks[i])) == (result.board.bits, result.board.mask)
        assert rewards[i] == result.reward
        assert tuple(exps[i]) == board.exponents
        assert 1 << int(highest[i]) == board.highest_tile or board.highest_tile == 0
    back, back_masks = from_exponents(exps)
    assert np.array_equal(back, bits) and np.array_equal(back_masks, masks)


def test_legal_mask_is_move_changes_board():
    _, bits, masks = random_boards(2000, seed=3, max_exponent=12)
    batch = move_all(bits, masks)
    changed = (batch.boards != bits[:, None]).astype(np.uint8)
    assert np.array_equal(batch.legal, (changed * np.array([1, 2, 4, 8])).sum(1))
    assert np.all(batch.rewards[changed == 0] == 0)


def test_batch_input_validation():
    import pytest

    with pytest.raises(ValueError, match="uint64"):
        move_all(np.array([-1]))
    with pytest.raises(ValueError, match="1-D"):
        legal_masks(np.zeros((2, 2), np.uint64))
    with pytest.raises(ValueError, match="nibble is not 15"):
        move_all(np.array([0], np.uint64), np.array([1], np.uint16))
    with pytest.raises(ValueError, match=r"0\.\.3"):
        apply_moves(np.zeros(2, np.uint64), np.array([0, 4]))
    with pytest.raises(ValueError, match=r"0\.\.16"):
        from_exponents(np.full((1, 16), 17))


def test_exponent_legality_without_numba_agrees_with_the_kernels():
    _, bits, masks = random_boards(3000, seed=11, max_exponent=16)
    exps = to_exponents(bits, masks)
    assert exps.max() == 16  # 2^16 tiles (and 2^16 + 2^16 merges) are covered
    assert np.array_equal(exponent_legal_masks(exps), legal_masks(bits, masks))
    dense = np.random.default_rng(3).integers(1, 4, (2000, 16))  # full boards, few merges
    assert np.array_equal(exponent_legal_masks(dense), legal_masks(*from_exponents(dense)))
    assert (exponent_legal_masks(dense) == 0).any()


def test_legal_bools_and_bits_are_inverse_and_follow_udlr():
    every = np.arange(16, dtype=np.uint8)
    bools = legal_bools(every)
    assert bools.shape == (16, 4) and bools[1].tolist() == [True, False, False, False]
    assert bools[8].tolist() == [False, False, False, True]  # Right = 8
    assert np.array_equal(legal_bits(bools), every)
    assert legal_bools(np.uint8(5)).tolist() == [True, False, True, False]
