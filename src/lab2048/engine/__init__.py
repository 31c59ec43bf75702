"""The 2048 engine: bitboard moves with exact rewards, legality, seeded spawns, batch API.

    from lab2048.engine import Board, Game, Move, move_all
    board = Board.from_tiles([[2, 2, 4, 0], [0] * 4, [0] * 4, [0] * 4])
    board.move(Move.LEFT)          # MoveResult(board=[4, 4, 0, 0 ...], reward=4, changed=True)

Conventions (move order, board encoding, spawns, the end rule) are in `conventions` (standard
library only); NumPy-only array helpers in `arrays`; the numba kernels in `kernels`; array
functions over the kernels in `batch`; `Board` and `Game` in `board`. Names are loaded on first
use, so importing `conventions` or `arrays` (the command line, the server) never loads numba.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "arrays": ("exponent_legal_masks", "legal_bits", "legal_bools"),
    "batch": ("BatchMoves", "apply_moves", "can_end_after", "from_exponents",
              "highest_exponents", "legal_masks", "move_all", "to_exponents"),
    "board": ("Board", "Game", "MoveResult"),
    "conventions": ("MAX_EXPONENT", "MOVES", "EndReason", "Move", "moves_in_mask"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # found directly from now on
    return value
