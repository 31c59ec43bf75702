"""Reader for the macroxue/2048-ai player's `-v` text output, and its replay through the engine.

Per move the player prints the board (the tile spawned last marked `> 2 <`), a line
`score S max M sum T` (S: the score before the move), and `#n: MOVE from search, h-score X` or
`#n: MOVE from lookup-11, prob P`; the game ends with `game# SEED moves N seconds T moves/s R`
after the final board. Table-loading messages, hash statistics and progress spinners
(a character and a backspace before a line) are skipped. Files may be gzip-compressed.

`read_text_game` checks the file's own consistency (max and sum lines against the board, move
numbers in sequence, the final move count) and raises UserError naming the file and line.
`replay` then checks the engine against the game: every move's result, with the marked spawn
removed from the next board, is that board; every reward is the score's increment; the final
board has no legal move.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab2048.engine.batch import apply_moves, from_exponents, legal_masks
from lab2048.engine.conventions import MAX_EXPONENT, Move
from lab2048.errors import UserError

# Names as in DESIGN.md's valuation_types.json; the text says lookup-11 for tuple11.
VALUATION_TYPES = {"search": "search", "lookup-11": "tuple11", "lookup-10": "tuple10"}
_SCORE = re.compile(r"score (\d+) max (\d+) sum (\d+)$")
_MOVE = re.compile(r"#(\d+):\s+(up|down|left|right) from (\S+), (?:h-score|prob) (\S+)$")
_END = re.compile(r"game# (\d+) moves (\d+) seconds (\S+) moves/s (\S+)$")
_CELL = re.compile(r"\s*(?:>\s*(\d+)\s*<|(\d+)|)\s*$")


@dataclass
class TextGame:
    seed: int
    exponents: np.ndarray  # uint8 [N + 1, 16]: the board before each move, then the final board
    spawn_cells: np.ndarray  # int8 [N + 1]: cell of the tile spawned last (-1: none marked)
    scores: np.ndarray  # int64 [N + 1]: score before each move, then the final score
    moves: np.ndarray  # uint8 [N], UDLR
    valuation_types: list[str]  # [N], DESIGN.md names
    valuations: np.ndarray  # float64 [N]: h-score (search) or success probability (tuple)
    seconds: float

    @property
    def num_moves(self) -> int:
        return len(self.moves)


class _Error(Exception):
    """A format problem at a line; read_text_game adds the file name."""


def _tile_exponent(value: int) -> int:
    if value < 2 or value & (value - 1) or value.bit_length() - 1 > MAX_EXPONENT:
        raise _Error(f"{value} is not a tile value")
    return value.bit_length() - 1


def _parse_row(line: str) -> tuple[list[int], int]:
    """Exponents of a `|  a |  b | > 2 < |   |` row and the column of its marked tile (or -1)."""
    parts = line.split("|")
    if len(parts) != 6 or parts[0] or parts[5].strip():
        raise _Error(f"expected a board row of 4 cells, got {line!r}")
    cells, marked = [], -1
    for c, text in enumerate(parts[1:5]):
        match = _CELL.match(text)
        if not match:
            raise _Error(f"cannot read cell {text!r}")
        spawned, plain = match.groups()
        if spawned is not None:
            if marked >= 0:
                raise _Error("two tiles marked as spawned in one row")
            marked = c
        value = spawned or plain
        cells.append(_tile_exponent(int(value)) if value else 0)
    return cells, marked


class _Parser:
    """Line-by-line state: the rows of the board being read, and everything read so far."""

    def __init__(self) -> None:
        self.boards, self.spawns, self.scores = [], [], []
        self.moves, self.kinds, self.values = [], [], []
        self.rows: list[list[int]] = []
        self.spawn = -1
        self.end: tuple[str, ...] | None = None

    def feed(self, line: str) -> None:
        if "\b" in line:  # a progress spinner: a character and a backspace
            line = line[line.rindex("\b") + 1 :]
        if self.end is not None or not line.strip() or line.startswith(("---", "Loading ")):
            return
        if line.startswith("|"):
            self._row(line)
        elif m := _SCORE.match(line):
            self._board(line, *map(int, m.groups()))
        elif m := _MOVE.match(line):
            self._move(*m.groups())
        elif m := _END.match(line):
            self.end = m.groups()
        elif self.rows:
            raise _Error(f"unexpected line inside a board: {line!r}")
        elif not line.startswith(("lookups:", "updates:", "entries:")):
            raise _Error(f"unexpected line {line!r}")

    def _row(self, line: str) -> None:
        if len(self.rows) == 4:
            raise _Error("a board has more than 4 rows")
        cells, marked = _parse_row(line)
        if marked >= 0:
            if self.spawn >= 0:
                raise _Error("two tiles marked as spawned in one board")
            self.spawn = 4 * len(self.rows) + marked
        self.rows.append(cells)

    def _board(self, line: str, score: int, max_tile: int, tile_sum: int) -> None:
        if len(self.rows) != 4:
            raise _Error(f"score line after a board of {len(self.rows)} rows")
        if len(self.boards) > len(self.moves):
            raise _Error("two boards without a move between them")
        board = [e for row in self.rows for e in row]
        top = max(board)
        if max_tile != (1 << top if top else 0) or tile_sum != sum(1 << e for e in board if e):
            raise _Error(f"'{line}' does not match the board above it")
        self.boards.append(board)
        self.spawns.append(self.spawn)
        self.scores.append(score)
        self.rows, self.spawn = [], -1

    def _move(self, number: str, name: str, source: str, value: str) -> None:
        if int(number) != len(self.moves) + 1:
            raise _Error(f"move #{number} where #{len(self.moves) + 1} was expected")
        if len(self.boards) != len(self.moves) + 1:
            raise _Error(f"move #{number} without a board before it")
        if source not in VALUATION_TYPES:
            raise _Error(f"unknown move source {source!r}")
        self.moves.append(int(Move.parse(name)))
        self.kinds.append(VALUATION_TYPES[source])
        self.values.append(float(value))

    def finish(self) -> TextGame:
        n = len(self.moves)
        if self.end is None:
            raise _Error(f"truncated: no final 'game# ...' line after {n} moves")
        if self.rows or len(self.boards) != n + 1:
            raise _Error("truncated: the final board is incomplete")
        if int(self.end[1]) != n:
            raise _Error(f"the final line says {self.end[1]} moves, the file holds {n}")
        return TextGame(
            seed=int(self.end[0]),
            exponents=np.array(self.boards, np.uint8).reshape(-1, 16),
            spawn_cells=np.array(self.spawns, np.int8),
            scores=np.array(self.scores, np.int64),
            moves=np.array(self.moves, np.uint8),
            valuation_types=self.kinds,
            valuations=np.array(self.values, np.float64),
            seconds=float(self.end[2]),
        )


def parse_lines(lines) -> TextGame:
    """Parse the lines of one game; _Error (with the line number) on any format problem."""
    parser = _Parser()
    for lineno, raw in enumerate(lines, 1):
        try:
            parser.feed(raw.rstrip("\r\n"))
        except (_Error, ValueError) as e:
            raise _Error(f"line {lineno}: {e}") from None
    return parser.finish()


def read_text_game(path: Path) -> TextGame:
    """Parse one game file (plain or .gz); UserError naming the file on any problem."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            return parse_lines(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a game file") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UserError(f"{path}: damaged or truncated gzip data ({e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (invalid UTF-8)") from None
    except _Error as e:
        raise UserError(f"{path}: {e}") from None


@dataclass
class ReplayReport:
    moves: int
    score: int  # sum of the engine's rewards
    printed_score: int  # the file's final score
    highest_tile: int
    first_mismatch: int  # index of the first move the engine disagrees with, -1 if none
    mismatch: str  # what disagreed there
    final_is_game_over: bool

    @property
    def agrees(self) -> bool:
        return (self.first_mismatch < 0 and self.score == self.printed_score
                and self.final_is_game_over)


def replay(game: TextGame) -> ReplayReport:
    """Check the engine against every move of a text game (vectorised over the whole game)."""
    boards, masks = from_exponents(game.exponents)
    after, after_masks, rewards = apply_moves(boards[:-1], game.moves, masks[:-1])
    landed = game.exponents[1:].copy()
    rows = np.arange(len(landed))
    has_spawn = game.spawn_cells[1:] >= 0
    spawned = landed[rows, np.maximum(game.spawn_cells[1:], 0)]
    landed[rows[has_spawn], game.spawn_cells[1:][has_spawn]] = 0
    expected, expected_masks = from_exponents(landed)
    problems = {
        "no spawn marked on the next board": ~has_spawn,
        "spawned tile is not a 2 or a 4": has_spawn & ~np.isin(spawned, (1, 2)),
        "board after the move differs": (after != expected) | (after_masks != expected_masks),
        "reward differs from the score's increment": rewards != np.diff(game.scores),
    }
    first, what = -1, ""
    for text, bad in problems.items():
        idx = np.flatnonzero(bad)
        if idx.size and (first < 0 or idx[0] < first):
            first, what = int(idx[0]), text
    final = game.exponents[-1]
    return ReplayReport(
        moves=game.num_moves,
        score=int(game.scores[0] + rewards.sum()),
        printed_score=int(game.scores[-1]),
        highest_tile=1 << int(game.exponents.max()),
        first_mismatch=first,
        mismatch=what,
        final_is_game_over=bool(legal_masks(*from_exponents(final[None]))[0] == 0),
    )
