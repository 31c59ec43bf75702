"""Batch engine functions over NumPy arrays of boards, for data work.

Every function takes `boards` (uint64 [N]) and optional `masks` (the tile_65536_mask, uint16
[N]; None means no 2^16 tile anywhere) and runs one single-threaded, GIL-free numba loop, so
callers may run several in threads. Inputs are checked once per call: a mask bit on a cell
whose nibble is not 15 is not a board and raises ValueError.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from lab2048.engine import kernels as K
from lab2048.engine.conventions import MAX_EXPONENT


class BatchMoves(NamedTuple):
    """All four moves of N boards (UDLR on axis 1). Illegal moves keep the board, reward 0.

    A legal move that would merge two 2^16 tiles keeps the board and has reward -1.
    """

    boards: np.ndarray  # uint64 [N, 4]
    masks: np.ndarray  # uint16 [N, 4]
    rewards: np.ndarray  # int64 [N, 4]
    legal: np.ndarray  # uint8 [N], legal-move bitmask


def as_boards(boards, masks=None) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 [N], uint16 [N]) views of the inputs, validated."""
    b = np.asarray(boards)
    if b.ndim != 1:
        raise ValueError(f"boards must be 1-D, got shape {b.shape}")
    if b.dtype != np.uint64:
        if not np.issubdtype(b.dtype, np.integer) or (b.size and b.min() < 0):
            raise ValueError(f"boards must be uint64 (or non-negative integers), got {b.dtype}")
        b = b.astype(np.uint64)
    if masks is None:
        return np.ascontiguousarray(b), np.zeros(len(b), np.uint16)
    m = np.asarray(masks)
    if m.shape != b.shape:
        raise ValueError(f"masks shape {m.shape} does not match boards shape {b.shape}")
    if m.dtype != np.uint16:
        if not np.issubdtype(m.dtype, np.integer) or (m.size and (m.min() < 0 or m.max() > 0xFFFF)):
            raise ValueError(f"masks must be uint16, got {m.dtype}")
        m = m.astype(np.uint16)
    b, m = np.ascontiguousarray(b), np.ascontiguousarray(m)
    bad = _first_bad_mask(b, m)
    if bad >= 0:
        raise ValueError(
            f"row {bad}: tile_65536_mask {int(m[bad]):#06x} marks a cell whose nibble is not 15 "
            f"(board {int(b[bad]):#018x})"
        )
    return b, m


def _as_moves(moves, boards: np.ndarray) -> np.ndarray:
    """int64 [N] moves, one per board, each 0..3 (UDLR); ValueError otherwise."""
    mv = np.asarray(moves)
    if mv.shape != boards.shape or (mv.size and (mv.min() < 0 or mv.max() > 3)):
        raise ValueError("moves must be one of 0..3 (UDLR) per board")
    return mv.astype(np.int64)


@njit(cache=True, nogil=True)
def _first_bad_mask(boards, masks):
    for n in range(len(boards)):
        if not K.mask_is_valid(boards[n], np.int64(masks[n])):
            return n
    return -1


@njit(cache=True, nogil=True)
def _move_all(boards, masks, move_xor, line_reward, out_boards, out_masks, out_rewards, legal):
    for n in range(len(boards)):
        b = boards[n]
        m = np.int64(masks[n])
        bits = 0
        for d in range(4):
            nb, nm, reward = K.move(b, m, d, move_xor, line_reward)
            if K.is_legal(b, m, nb, nm, reward):
                bits |= 1 << d
            out_boards[n, d] = nb
            out_masks[n, d] = nm
            out_rewards[n, d] = reward
        legal[n] = bits


@njit(cache=True, nogil=True)
def _legal_masks(boards, masks, move_xor, line_reward, out):
    for n in range(len(boards)):
        out[n] = K.legal_mask(boards[n], np.int64(masks[n]), move_xor, line_reward)


@njit(cache=True, nogil=True)
def _apply_moves(boards, masks, moves, move_xor, line_reward, out_boards, out_masks, out_rewards):
    for n in range(len(boards)):
        nb, nm, reward = K.move(boards[n], np.int64(masks[n]), np.int64(moves[n]), move_xor,
                                line_reward)
        out_boards[n] = nb
        out_masks[n] = nm
        out_rewards[n] = reward


@njit(cache=True, nogil=True)
def _to_exponents(boards, masks, out):
    for n in range(len(boards)):
        out[n, :] = K.decode(boards[n], np.int64(masks[n]))


@njit(cache=True, nogil=True)
def _from_exponents(cells, out_boards, out_masks):
    for n in range(len(cells)):
        out_boards[n], out_masks[n] = K.encode(cells[n])


@njit(cache=True, nogil=True)
def _highest(boards, masks, out):
    for n in range(len(boards)):
        out[n] = K.highest_exponent(boards[n], np.int64(masks[n]))


def move_all(boards, masks=None) -> BatchMoves:
    """Every move of every board: next boards, masks, rewards, and the legal-move bitmask."""
    b, m = as_boards(boards, masks)
    n = len(b)
    out = BatchMoves(
        np.empty((n, 4), np.uint64),
        np.empty((n, 4), np.uint16),
        np.empty((n, 4), np.int64),
        np.empty(n, np.uint8),
    )
    _move_all(b, m, *K.tables(), *out)
    return out


def legal_masks(boards, masks=None) -> np.ndarray:
    """uint8 [N] legal-move bitmasks (Up=1, Down=2, Left=4, Right=8)."""
    b, m = as_boards(boards, masks)
    out = np.empty(len(b), np.uint8)
    _legal_masks(b, m, *K.tables(), out)
    return out


def apply_moves(boards, moves, masks=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One given move per board: (boards uint64 [N], masks uint16 [N], rewards int64 [N])."""
    b, m = as_boards(boards, masks)
    out = (np.empty(len(b), np.uint64), np.empty(len(b), np.uint16), np.empty(len(b), np.int64))
    _apply_moves(b, m, _as_moves(moves, b), *K.tables(), *out)
    return out


@njit(cache=True, nogil=True)
def _can_end(boards, masks, moves, move_xor, line_reward, out):
    for n in range(len(boards)):
        out[n] = K.can_end_after(boards[n], np.int64(masks[n]), moves[n], move_xor, line_reward)


def can_end_after(boards, moves, masks=None) -> np.ndarray:
    """bool [N]: whether the game can be over after each board's move, whatever spawn came
    (`kernels.can_end_after`): how a record of boards-before-moves tells a finished game."""
    b, m = as_boards(boards, masks)
    out = np.empty(len(b), np.bool_)
    _can_end(b, m, _as_moves(moves, b), *K.tables(), out)
    return out


def to_exponents(boards, masks=None) -> np.ndarray:
    """uint8 [N, 16] cell exponents 0..16, cell 0 first: the model's input tokens."""
    b, m = as_boards(boards, masks)
    out = np.empty((len(b), 16), np.int64)
    _to_exponents(b, m, out)
    return out.astype(np.uint8)


def from_exponents(cells) -> tuple[np.ndarray, np.ndarray]:
    """(boards uint64 [N], masks uint16 [N]) from [N, 16] exponents 0..16, cell 0 first."""
    c = np.asarray(cells)
    if c.ndim != 2 or c.shape[1] != 16:
        raise ValueError(f"exponents must have shape [N, 16], got {c.shape}")
    if c.size and (c.min() < 0 or c.max() > MAX_EXPONENT):
        raise ValueError(f"exponents must lie in 0..{MAX_EXPONENT}, got {c.min()}..{c.max()}")
    boards, masks = np.empty(len(c), np.uint64), np.empty(len(c), np.int64)
    _from_exponents(np.ascontiguousarray(c, dtype=np.int64), boards, masks)
    return boards, masks.astype(np.uint16)


def highest_exponents(boards, masks=None) -> np.ndarray:
    """uint8 [N] largest exponent of each board (DESIGN.md's max_rank)."""
    b, m = as_boards(boards, masks)
    out = np.empty(len(b), np.int64)
    _highest(b, m, out)
    return out.astype(np.uint8)
