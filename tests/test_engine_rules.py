"""Golden boards: the encoding, every direction, double merges, no chain merges, full and empty."""

import subprocess
import sys

import numpy as np
import pytest

from lab2048.engine import Board, EndReason, Game, Move, kernels

Z = [0, 0, 0, 0]


def grid(*rows):
    return Board.from_tiles(list(rows) + [Z] * (4 - len(rows)))


def test_encoding_golden_values():
    # cell 0 (top-left) in the most significant nibble, row-major after it
    assert Board.from_exponents([1] + [0] * 15).bits == 0x1000_0000_0000_0000
    assert Board.from_exponents([0] * 15 + [1]).bits == 0x1
    assert Board.from_exponents(list(range(16))).bits == 0x0123_4567_89AB_CDEF
    assert Board.from_exponents([16] + [0] * 15) == Board(0xF << 60, 0b1)
    assert Board(0x0123_4567_89AB_CDEF).tiles[1] == [16, 32, 64, 128]


def test_move_enum_and_mask_bits_follow_udlr():
    assert [int(m) for m in (Move.UP, Move.DOWN, Move.LEFT, Move.RIGHT)] == [0, 1, 2, 3]
    assert [m.bit for m in Move] == [1, 2, 4, 8]
    assert Move.parse("left") is Move.LEFT and Move.parse("R") is Move.RIGHT
    with pytest.raises(ValueError):
        Move.parse("sideways")


@pytest.mark.parametrize(
    ("row", "left", "right", "reward"),
    [
        ([2, 2, 2, 2], [4, 4, 0, 0], [0, 0, 4, 4], 8),  # double merge
        ([4, 2, 2, 0], [4, 4, 0, 0], [0, 0, 4, 4], 4),  # no chain merge: 4 2 2 -> 4 4, not 8
        ([8, 8, 16, 0], [16, 16, 0, 0], [0, 0, 16, 16], 16),  # merged tile does not merge again
        ([2, 2, 4, 4], [4, 8, 0, 0], [0, 0, 4, 8], 12),
        ([2, 0, 0, 2], [4, 0, 0, 0], [0, 0, 0, 4], 4),  # merge across gaps
        ([2, 2, 2, 0], [4, 2, 0, 0], [0, 0, 2, 4], 4),  # the pair nearest the edge merges
        ([0, 0, 0, 2], [2, 0, 0, 0], [0, 0, 0, 2], 0),
        ([2, 4, 8, 16], [2, 4, 8, 16], [2, 4, 8, 16], 0),  # full row, nothing moves
        ([16384, 16384, 2, 2], [32768, 4, 0, 0], [0, 0, 32768, 4], 32772),
    ],
)
def test_row_golden(row, left, right, reward):
    board = grid(row)
    for move, expected in ((Move.LEFT, left), (Move.RIGHT, right)):
        result = board.move(move)
        assert result.board == grid(expected)
        assert result.reward == (reward if expected != row else 0)
        assert result.changed == (expected != row)
    # the same line as a column: Up slides toward row 0, Down toward row 3
    col = Board.from_tiles([[v, 0, 0, 0] for v in row])
    up, down = col.move(Move.UP), col.move(Move.DOWN)
    assert up.board == Board.from_tiles([[v, 0, 0, 0] for v in left])
    assert down.board == Board.from_tiles([[v, 0, 0, 0] for v in right])
    assert up.reward == down.reward == (reward if left != row else 0)


def test_whole_board_golden():
    board = Board.from_tiles([[2, 2, 4, 8], [0, 4, 4, 0], [2, 0, 0, 2], [4, 2, 2, 4]])
    expected = {
        Move.UP: ([[4, 2, 8, 8], [4, 4, 2, 2], [0, 2, 0, 4], [0, 0, 0, 0]], 4 + 8),
        Move.DOWN: ([[0, 0, 0, 0], [0, 2, 0, 8], [4, 4, 8, 2], [4, 2, 2, 4]], 4 + 8),
        Move.LEFT: ([[4, 4, 8, 0], [8, 0, 0, 0], [4, 0, 0, 0], [4, 4, 4, 0]], 4 + 8 + 4 + 4),
        Move.RIGHT: ([[0, 4, 4, 8], [0, 0, 0, 8], [0, 0, 0, 4], [0, 4, 4, 4]], 4 + 8 + 4 + 4),
    }
    for move, (tiles, reward) in expected.items():
        result = board.move(move)
        assert result.board.tiles == tiles, move
        assert result.reward == reward, move
    assert board.legal_mask == 0b1111


def test_empty_board_has_no_moves():
    empty = Board()
    assert empty.legal_moves() == [] and empty.is_game_over
    for move in Move:
        result = empty.move(move)
        assert result.board == empty and result.reward == 0 and not result.changed


def test_full_board_without_merges_is_game_over():
    board = Board.from_tiles([[2, 4, 2, 4], [4, 2, 4, 2], [2, 4, 2, 4], [4, 2, 4, 2]])
    assert board.legal_mask == 0 and board.is_game_over


def test_blocked_directions():
    # tiles packed in the top-left: Up and Left change nothing, Down and Right do
    board = Board.from_tiles([[2, 4, 0, 0], [8, 16, 0, 0], Z, Z])
    assert board.legal_moves() == [Move.DOWN, Move.RIGHT]
    assert board.legal_mask == Move.DOWN.bit | Move.RIGHT.bit


def test_board_printing_and_repr():
    text = str(grid([2, 0, 0, 2048]))
    assert "2048" in text and text.count("\n") == 8
    assert repr(Board(0x1)) == "Board(0x0000000000000001)"


def test_transpose_is_an_involution_and_mirrors_cells():
    rng = np.random.default_rng(1)
    for bits in rng.integers(0, 2**63, 200, dtype=np.uint64):
        t = kernels.transpose(bits)
        assert kernels.transpose(t) == bits
        cells, tcells = kernels.decode(bits, 0), kernels.decode(t, 0)
        assert all(tcells[4 * c + r] == cells[4 * r + c] for r in range(4) for c in range(4))


def test_board_rejects_invalid_input():
    with pytest.raises(ValueError):
        Board.from_tiles([[3, 0, 0, 0], Z, Z, Z])
    with pytest.raises(ValueError):
        Board.from_exponents([17] + [0] * 15)
    with pytest.raises(ValueError):
        Board(0x1, mask=0b1)  # mask bit on a cell whose nibble is not 15
    with pytest.raises(ValueError):
        Board(1 << 64)


def test_can_end_after_a_move():
    from lab2048.engine import can_end_after

    # Left merges the two 8s and leaves one empty cell: a 2 or a 4 there leaves no move
    dead = Board.from_exponents([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 3, 3])
    # the same, but the empty cell sits next to a 2 (so a spawned 2 merges) and a 4 would end it
    one_spawn = Board.from_exponents([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 1, 6, 4, 4])
    alive = grid([2, 2, 0, 0])  # many empty cells after any move
    limit = Board.from_exponents([16, 16, 1, 2, *range(3, 15)])  # 65536 + 65536
    boards = [dead, one_spawn, alive, limit]
    moves = [Move.LEFT, Move.RIGHT, Move.LEFT, Move.LEFT]
    got = can_end_after(np.array([b.bits for b in boards], np.uint64), np.array(moves),
                        np.array([b.mask for b in boards], np.uint16))
    assert got.tolist() == [True, True, False, True]


def test_one_end_rule_with_zero_meaning_no_limit():
    from lab2048.engine.conventions import NO_MOVE_LIMIT, end_reason

    ongoing, no_moves, tile_limit, max_moves = (int(r) for r in EndReason)
    cases = [  # (step's end, moves played, max_moves) -> final end reason
        ((ongoing, 10, NO_MOVE_LIMIT), ongoing),
        ((ongoing, 10**9, 0), ongoing),
        ((ongoing, 9, 10), ongoing),
        ((ongoing, 10, 10), max_moves),
        ((no_moves, 10, 10), no_moves),  # the game's own end wins over the budget
        ((tile_limit, 3, 10), tile_limit),
        ((no_moves, 3, 0), no_moves),
    ]
    for args, expected in cases:
        assert end_reason(*args) == expected
        assert kernels.end_reason(*args) == expected  # the same rule compiled for numba loops


def test_game_with_a_move_budget_ends_with_max_moves():
    game = Game(5, max_moves=7)
    while not game.over:
        game.play(game.board.legal_moves()[0])
    assert len(game.moves) == 7 and game.end_reason == EndReason.MAX_MOVES
    with pytest.raises(ValueError, match="game is over"):
        game.play(game.board.legal_moves()[0])
    unlimited = Game(5)
    while not unlimited.over:
        unlimited.play(unlimited.board.legal_moves()[0])
    assert unlimited.end_reason == EndReason.NO_MOVES and len(unlimited.moves) > 7
    assert unlimited.moves[:7] == game.moves
    with pytest.raises(ValueError, match="max_moves"):
        Game(5, max_moves=-1)


def test_kernel_constants_come_from_the_conventions():
    from lab2048.engine import conventions as C

    assert int(kernels.FOUR_THRESHOLD) == 429496730  # round(0.1 * 2^32)
    assert (kernels.UP, kernels.DOWN, kernels.LEFT, kernels.RIGHT) == (0, 1, 2, 3)
    assert C.MOVE_NAMES == ("up", "down", "left", "right") and C.MOVE_BITS == (1, 2, 4, 8)
    assert C.ev_class_names(2) == ["ILLEGAL", "FAILURE", "BIN_0", "BIN_1", "WINNER"]
    assert C.ev_class_names(2).index("WINNER") == C.ev_winner(2)
    assert C.ev_class_names(2)[C.EV_ILLEGAL] == "ILLEGAL"
    assert C.ev_class_names(2)[C.EV_FAILURE] == "FAILURE"
    assert C.ev_class_names(2)[C.EV_FIRST_BIN] == "BIN_0"


def test_conventions_and_arrays_import_without_numba():
    code = ("import sys; import lab2048.engine.conventions, lab2048.engine.arrays\n"
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
