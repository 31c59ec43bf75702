"""The expert teacher: an expectimax player whose per-move values make the training data.

    from lab2048.teacher import TeacherConfig, play_game, search, board_evals
    game = play_game(seed=1, cfg=TeacherConfig(depth=2))
    branch_evs, move_dir, ev_legal, board_eval = search(game.boards[10], game.masks[10],
                                                        TeacherConfig())

`config` (stdlib only) holds the settings, `heuristic` the static evaluation, `search` the
expectimax search and the game loop. Importing this package loads only `config`; the numba
parts load on first use of their names, so the command line builds its flags cheaply.

`lab2048.teacher.search` is the function, as with an eager `from .search import search`, even
after the submodule of that name is imported (the import system then tries to bind the
submodule here; the package keeps the function). Import the submodule's other names with
`from lab2048.teacher.search import ...`.
"""

from __future__ import annotations

import importlib
import sys
import types

from lab2048.teacher.config import TeacherConfig

_LAZY = {
    "board_eval": "heuristic",
    "board_evals": "heuristic",
    "LOST_VALUE": "heuristic",
    "TeacherGame": "search",
    "play_game": "search",
    "search_boards": "search",
}

__all__ = ["LOST_VALUE", "TeacherConfig", "TeacherGame", "board_eval", "board_evals",
           "play_game", "search", "search_boards"]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"lab2048.teacher.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'lab2048.teacher' has no attribute {name!r}")


class _Package(types.ModuleType):
    @property
    def search(self):
        return importlib.import_module("lab2048.teacher.search").search

    @search.setter
    def search(self, value) -> None:
        pass  # the import system binding the submodule: keep the function


sys.modules[__name__].__class__ = _Package
