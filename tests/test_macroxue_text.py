"""Real games of the public macroxue/2048-ai player replayed through the engine, and the reader's
refusal of damaged files."""

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from lab2048.data.macroxue_text import parse_lines, read_text_game, replay
from lab2048.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"
GAME_8192 = FIXTURES / "macroxue-d3-seed2031.txt.gz"  # 7,303 moves, reaches 8192
GAME_32768 = FIXTURES / "macroxue-d3-seed1068.txt.gz"  # 15,602 moves, reaches 32768


def lines_of(path):
    with gzip.open(path, "rt", newline="") as f:
        return f.read().splitlines(keepends=True)


@pytest.mark.parametrize(("path", "moves", "score", "top"), [
    (GAME_8192, 7303, 175_624, 8192),
    (GAME_32768, 15_602, 464_860, 32768),
])
def test_engine_replays_real_games_exactly(path, moves, score, top):
    game = read_text_game(path)
    assert game.num_moves == moves and game.scores[0] == 0
    report = replay(game)
    assert report.first_mismatch == -1, report.mismatch
    assert report.score == report.printed_score == score
    assert report.final_is_game_over and report.agrees
    assert report.highest_tile == top


def test_reader_fields():
    game = read_text_game(GAME_8192)
    assert game.seed == 2031
    assert game.exponents.shape == (7304, 16) and game.exponents.dtype == np.uint8
    assert game.moves[0] == 0  # "#1: up"
    assert game.valuation_types[0] == "search" and game.valuations[0] == pytest.approx(0.035)
    assert set(game.valuation_types) == {"search", "tuple11", "tuple10"}
    # the opening board: a marked 2 in cell 0 and a 2 in cell 13
    assert game.spawn_cells[0] == 0 and np.flatnonzero(game.exponents[0]).tolist() == [0, 13]
    assert np.all(game.spawn_cells[1:] >= 0)


def test_replay_finds_a_wrong_board():
    lines = lines_of(GAME_8192)
    # line 499 is a row of the board before move #46; keep the sum line consistent
    assert lines[498].rstrip() == "|    64 |    16 |     8 |     4 |"
    assert lines[506].startswith("score 380 max 64 sum 100")
    lines[498] = "|    64 |    16 |     8 |     8 |\n"
    lines[506] = "score 380 max 64 sum 104\n"
    report = replay(parse_lines(lines))
    assert not report.agrees
    assert report.first_mismatch == 44  # move #45 lands on a board it cannot make
    assert report.mismatch == "board after the move differs"


def test_replay_finds_a_wrong_score():
    lines = lines_of(GAME_8192)
    i = next(i for i, s in enumerate(lines) if s.startswith("score 8 max 4 sum 12"))
    lines[i] = "score 12 max 4 sum 12\n"
    report = replay(parse_lines(lines))
    assert report.mismatch == "reward differs from the score's increment"
    assert not report.agrees


@pytest.mark.parametrize(("edit", "message"), [
    (lambda ls: ls[:5000], "truncated: no final 'game# ...' line"),
    (lambda ls: ls[:-5] + ls[-4:], "truncated"),
    (lambda ls: [*ls[:100], "| 3 | | | |\n", *ls[100:]], "line 101: 3 is not a tile value"),
    (lambda ls: ls[:14] + ls[15:], "line 22: score line after a board of 3 rows"),
    (lambda ls: [s.replace("#7:", "#8:") for s in ls], "move #8 where #7 was expected"),
    (lambda ls: [*ls[:4], "garbage\n", *ls[4:]], "line 5: unexpected line inside a board"),
    (lambda ls: [s.replace("game# 2031 moves 7303", "game# 2031 moves 7304") for s in ls],
     "the final line says 7304 moves"),
])
def test_damaged_games_are_refused_with_the_line(tmp_path, edit, message):
    path = tmp_path / "game.txt"
    path.write_text("".join(edit(lines_of(GAME_8192))))
    with pytest.raises(UserError, match=r"game\.txt: .*" + re.escape(message)):
        read_text_game(path)


def test_unreadable_files_are_refused(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_text_game(tmp_path / "missing.txt.gz")
    truncated = tmp_path / "cut.txt.gz"
    truncated.write_bytes(GAME_8192.read_bytes()[:20_000])
    with pytest.raises(UserError, match=r"cut\.txt\.gz: damaged or truncated gzip"):
        read_text_game(truncated)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(UserError, match=r"bin\.txt: not a text file"):
        read_text_game(binary)
    with pytest.raises(UserError, match="is a directory"):
        read_text_game(tmp_path)
