"""The 2048 engine: bitboard moves with exact rewards, legality, seeded spawns, batch API.

    from lab2048.engine import Board, Game, Move, move_all
    board = Board.from_tiles([[2, 2, 4, 0], [0] * 4, [0] * 4, [0] * 4])
    board.move(Move.LEFT)          # MoveResult(board=[4, 4, 0, 0 ...], reward=4, changed=True)

Conventions (move order, board encoding, spawns) are in `conventions`; the numba kernels in
`kernels`; array functions in `batch`; `Board` and `Game` in `board`.
"""

from lab2048.engine.batch import (
    BatchMoves,
    apply_moves,
    can_end_after,
    from_exponents,
    highest_exponents,
    legal_masks,
    move_all,
    to_exponents,
)
from lab2048.engine.board import Board, Game, MoveResult
from lab2048.engine.conventions import MAX_EXPONENT, MOVES, EndReason, Move, moves_in_mask

__all__ = [
    "MAX_EXPONENT",
    "MOVES",
    "BatchMoves",
    "Board",
    "EndReason",
    "Game",
    "Move",
    "MoveResult",
    "apply_moves",
    "can_end_after",
    "from_exponents",
    "highest_exponents",
    "legal_masks",
    "move_all",
    "moves_in_mask",
    "to_exponents",
]
