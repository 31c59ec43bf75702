"""The 8 symmetries of the square as index maps of cells and moves (standard library only).

    CELL_PERMS[g][i]  the old cell whose tile lands in new cell i: new_cells = cells[perm]
    MOVE_MAPS[g][m]   move m on the old board is move MOVE_MAPS[g][m] on the new one
    MOVE_INVERSE[g][j] the old move that new move j came from

Symmetry g applies: transpose if g & 4, then mirror left-right if g & 1, then up-down if g & 2
(g = 0 is the identity). Cells row-major, moves UDLR (engine/conventions.py). Each map permutes
cells and moves alike, so the game is the same game: a board's legal moves, rewards and move
results map to those of its image (tests/test_train.py checks all 8 against the engine).
"""

from __future__ import annotations

_DIRS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (d_row, d_col) of Up, Down, Left, Right


def _symmetry(g: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    cells = [[4 * r + c for c in range(4)] for r in range(4)]
    dirs = list(_DIRS)
    if g & 4:
        cells = [list(col) for col in zip(*cells, strict=True)]
        dirs = [(dc, dr) for dr, dc in dirs]
    if g & 1:
        cells = [row[::-1] for row in cells]
        dirs = [(dr, -dc) for dr, dc in dirs]
    if g & 2:
        cells = cells[::-1]
        dirs = [(-dr, dc) for dr, dc in dirs]
    return tuple(i for row in cells for i in row), tuple(_DIRS.index(d) for d in dirs)


CELL_PERMS = tuple(_symmetry(g)[0] for g in range(8))
MOVE_MAPS = tuple(_symmetry(g)[1] for g in range(8))
MOVE_INVERSE = tuple(tuple(m.index(j) for j in range(4)) for m in MOVE_MAPS)
