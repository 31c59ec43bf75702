"""2^15 and beyond: 32768 + 32768 makes 65536 through tile_65536_mask, exactly, in every
direction; two 65536 tiles cannot merge into a representable tile and the game ends."""

import numpy as np
import pytest

from lab2048.engine import Board, EndReason, Game, Move, kernels, move_all

Z = [0, 0, 0, 0]
T15, T16 = 32768, 65536


@pytest.mark.parametrize("move", list(Move))
def test_32768_pair_merges_into_65536_in_every_direction(move):
    horizontal = move in (Move.LEFT, Move.RIGHT)
    tiles = [[T15, T15, 2, 0], Z, Z, Z] if horizontal else [[T15, 0, 0, 0], [T15, 0, 0, 0],
                                                           [2, 0, 0, 0], Z]
    board = Board.from_tiles(tiles)
    result = board.move(move)
    if move in (Move.LEFT, Move.UP):
        assert result.reward == T16
        assert result.board.highest_tile == T16
        assert result.board.tile_sum == board.tile_sum
        cell = 0
        assert result.board.exponents[cell] == 16
        assert result.board.mask == 1 << cell
        assert result.board.bits >> 60 == 15  # the nibble holds 15, the mask says 2^16
    else:  # sliding the other way the 32768s merge too, at the far edge
        assert result.reward == T16
        assert result.board.mask != 0 and result.board.highest_tile == T16


def test_65536_does_not_merge_with_32768_and_moves_with_its_mask():
    board = Board.from_tiles([[0, T16, T15, 0], [0, 0, 0, T16], Z, Z])
    right = board.move(Move.RIGHT)
    assert right.board.tiles == [[0, 0, T16, T15], [0, 0, 0, T16], Z, Z]
    assert right.reward == 0 and right.changed
    down = board.move(Move.DOWN)
    assert down.board.tiles == [Z, Z, [0, 0, 0, 0], [0, T16, T15, T16]]
    assert down.board.mask == (1 << 13) | (1 << 15)
    assert board.highest_tile == T16


def test_scores_stay_exact_across_the_65536_merge():
    board = Board.from_tiles([[T15, T15, 4, 4], [16384, 16384, 0, 0], Z, Z])
    result = board.move(Move.LEFT)
    assert result.reward == T16 + 8 + T15
    assert result.board.tiles[0] == [T16, 8, 0, 0]
    assert result.board.tiles[1] == [T15, 0, 0, 0]


def test_table_path_flags_32768_merges_and_wide_path_is_exact():
    move_xor, line_reward = kernels.tables()
    line = 0xFF00  # 32768 32768 . .
    assert line_reward[line] == kernels.NEEDS_WIDE
    b = np.uint64(line << 48)
    _, reward = kernels.move_fast(b, Move.LEFT, move_xor, line_reward)
    assert reward < 0
    nb, nm, reward = kernels.move(b, 0, int(Move.LEFT), move_xor, line_reward)
    assert (int(nb) >> 48, int(nm), int(reward)) == (0xF000, 1, T16)


def test_two_65536_tiles_end_the_game_with_an_explicit_reason():
    board = Board.from_tiles([[T16, T16, 2, 4], Z, Z, Z])
    result = board.move(Move.LEFT)
    assert result.reward == -1 and result.board == board and result.changed
    assert board.legal_mask & Move.LEFT.bit
    batch = move_all(np.array([board.bits], np.uint64), np.array([board.mask], np.uint16))
    assert batch.rewards[0, Move.LEFT] == -1 and batch.legal[0] & Move.LEFT.bit

    game = Game(seed=5)
    game.board, game.score = board, 1_000_000
    assert game.play(Move.LEFT) == 0
    assert game.end_reason == EndReason.TILE_LIMIT and game.over
    assert game.score == 1_000_000 and game.board == board  # nothing applied, score exact
    with pytest.raises(ValueError, match="over"):
        game.play(Move.DOWN)
