"""NumPy-only array forms of the conventions (no numba: the server imports them).

- `legal_bools` / `legal_bits`: legal-move bitmasks [...] <-> bool [..., 4] (UDLR).
- `exponent_legal_masks`: the legal-move bitmask of boards given as exponents [N, 16]. A move
  changes a board iff some line, read in the move's direction (the edge the tiles slide to
  first), has a neighbour pair (a, b) with b a tile and a empty or equal to b:

      legal(d) = any over lines and pairs of  b != 0 and (a == 0 or a == b)

  This is the engine's legality (`kernels.legal_mask`), including a merge of two 2^16 tiles,
  which counts as legal although it cannot be stored; tests check the two agree.
"""

from __future__ import annotations

import numpy as np

from lab2048.engine.conventions import MOVE_BITS

BITS = np.array(MOVE_BITS, np.uint8)  # the legal-bit table as an array, UDLR


def legal_bools(legal) -> np.ndarray:
    """bool [..., 4] (UDLR) from legal-move bitmasks [...] (Up=1, Down=2, Left=4, Right=8)."""
    return (np.asarray(legal)[..., None] & BITS) != 0


def legal_bits(bools) -> np.ndarray:
    """uint8 [...] legal-move bitmasks from bool [..., 4] (UDLR): `legal_bools`'s inverse."""
    return (np.asarray(bools, bool) * BITS).sum(-1).astype(np.uint8)


def _slides(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """bool [N]: some pair (a nearer the edge, b behind it) lets tile b move or merge."""
    return ((b != 0) & ((a == 0) | (a == b))).any((1, 2))


def exponent_legal_masks(exponents) -> np.ndarray:
    """uint8 [N] legal-move bitmasks of boards given as exponents [N, 16] (cell 0 first)."""
    g = np.asarray(exponents).reshape(-1, 4, 4)
    up = _slides(g[:, :-1, :], g[:, 1:, :])
    down = _slides(g[:, 1:, :], g[:, :-1, :])
    left = _slides(g[:, :, :-1], g[:, :, 1:])
    right = _slides(g[:, :, 1:], g[:, :, :-1])
    return legal_bits(np.stack([up, down, left, right], -1))
