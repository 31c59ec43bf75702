"""A deliberately simple 2048, written apart from the engine, to test it against.

Grids are 4x4 lists of tile values (0 empty), top row first. Nothing here uses tables, bit
tricks or the package: only the rules as a person would state them.
"""

from __future__ import annotations

import random

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3
M64 = (1 << 64) - 1


def slide_left(row: list[int]) -> tuple[list[int], int]:
    """Slide tiles to the left and merge equal neighbours once each, leftmost first."""
    tiles = [v for v in row if v]
    out, reward, i = [], 0, 0
    while i < len(tiles):
        if i + 1 < len(tiles) and tiles[i] == tiles[i + 1]:
            out.append(2 * tiles[i])
            reward += 2 * tiles[i]
            i += 2
        else:
            out.append(tiles[i])
            i += 1
    return out + [0] * (4 - len(out)), reward


def transpose(grid):
    return [[grid[r][c] for r in range(4)] for c in range(4)]


def move(grid: list[list[int]], direction: int) -> tuple[list[list[int]], int]:
    """(grid after the move, reward)."""
    if direction in (UP, DOWN):
        moved, reward = move(transpose(grid), LEFT if direction == UP else RIGHT)
        return transpose(moved), reward
    out, total = [], 0
    for row in grid:
        if direction == RIGHT:
            new, reward = slide_left(row[::-1])
            new = new[::-1]
        else:
            new, reward = slide_left(row)
        out.append(new)
        total += reward
    return out, total


def encode(grid) -> tuple[int, int]:
    """(u64, tile_65536_mask) as DESIGN.md states them: cell 0 in bits 63..60."""
    bits = mask = 0
    for r in range(4):
        for c in range(4):
            v, cell = grid[r][c], 4 * r + c
            e = v.bit_length() - 1 if v else 0
            if e == 16:
                mask |= 1 << cell
                e = 15
            bits |= e << (60 - 4 * cell)
    return bits, mask


def decode(bits: int, mask: int = 0):
    grid = [[0] * 4 for _ in range(4)]
    for cell in range(16):
        e = (bits >> (60 - 4 * cell)) & 15
        if e == 15 and mask >> cell & 1:
            e = 16
        grid[cell // 4][cell % 4] = 1 << e if e else 0
    return grid


def draw(seed: int, k: int) -> int:
    """splitmix64's output for state seed + (k + 1) * golden ratio."""
    z = (seed + (k + 1) * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def spawn(grid, seed: int, k: int):
    """The k-th spawn: empty cell (row-major) number (hi32 * n) >> 32, a 4 if lo32 < 0.1 * 2^32."""
    x = draw(seed, k)
    empty = [(r, c) for r in range(4) for c in range(4) if grid[r][c] == 0]
    if not empty:
        return grid
    r, c = empty[((x >> 32) * len(empty)) >> 32]
    out = [row[:] for row in grid]
    out[r][c] = 4 if (x & 0xFFFFFFFF) < 429496730 else 2
    return out


def random_grid(rng: random.Random, max_exponent: int = 15) -> list[list[int]]:
    """A board with many equal neighbours: exponents from a narrow band, some cells empty."""
    low = rng.randint(1, max_exponent)
    high = min(max_exponent, low + rng.choice((0, 1, 2, 4, 15)))
    empty = rng.random()
    return [[0 if rng.random() < empty else 1 << rng.randint(low, high) for _ in range(4)]
            for _ in range(4)]
