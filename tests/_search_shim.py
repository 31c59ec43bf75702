"""TEMPORARY test-only stand-in for `lab2048.play.search.q_values` (contract: one-ply Q of
every move from a value function). Delete once lab2048.play.search is on main: `install()`
does nothing when the real module imports."""

from __future__ import annotations

import sys
import types

import numpy as np


def q_values(boards, masks, value_fn, *, depth=1, gamma, afterstate=False):
    from lab2048.engine.batch import from_exponents, legal_masks, move_all, to_exponents

    assert depth == 1, "the stand-in does depth 1 only"
    mv = move_all(boards, masks)
    legal = ((mv.legal[:, None] >> np.arange(4)) & 1).astype(bool)
    q = np.full((len(boards), 4), np.nan)
    ni, ai = np.nonzero(legal)
    after = to_exponents(mv.boards[ni, ai], mv.masks[ni, ai])
    rewards = np.maximum(mv.rewards[ni, ai], 0).astype(np.float64)
    if afterstate:
        q[ni, ai] = rewards + gamma * value_fn(after)
        return q
    mi, ci = np.nonzero(after == 0)
    n_empty = (after == 0).sum(1)
    children = np.concatenate([after[mi], after[mi]])
    children[np.arange(len(mi)), ci] = 1
    children[len(mi) + np.arange(len(mi)), ci] = 2
    p = np.concatenate([0.9 / n_empty[mi], 0.1 / n_empty[mi]])
    owner = np.concatenate([mi, mi])
    cb, cm = from_exponents(children)
    alive = legal_masks(cb, cm) != 0
    v = np.zeros(len(children))
    if alive.any():
        v[alive] = value_fn(children[alive])
    q[ni, ai] = rewards + gamma * np.bincount(owner, weights=p * v, minlength=len(after))
    return q


def install() -> None:
    try:
        import lab2048.play.search  # noqa: F401
    except ImportError:
        module = types.ModuleType("lab2048.play.search")
        module.q_values = q_values
        sys.modules["lab2048.play.search"] = module
