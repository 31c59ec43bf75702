"""The strong teacher: the corner evaluation and its search against plain Python written from the
docstrings, formation tables (a rank-3 table, built in seconds) against their recurrence, the
build's resume, refusals of missing or corrupt tables, the CLI, and games mixing both kinds of
moves."""

import itertools
import random

import numpy as np
import pytest

from lab2048.cli import main
from lab2048.engine import kernels
from lab2048.errors import UserError
from lab2048.teacher import TeacherConfig, play_game, search, search_boards
from lab2048.teacher import tables as T
from lab2048.teacher.corner import TT_DTYPE, corner_eval, corner_line
from lab2048.teacher.search import TT_DTYPE as LINES_TT_DTYPE
from lab2048.teacher.search import root_values

MOVE_XOR, LINE_REWARD = kernels.tables()
RANK = 3  # tuple11's smallest rank, the tests' table
RANK10 = 5  # tuple10's smallest rank
RANKS = {"tuple11": RANK, "tuple10": RANK10}
SHAPE = T.shape(RANK)


def caps_of(formation: str) -> dict[int, int]:
    """{free cell: cap} of the tests' table of a formation."""
    rank = RANKS[formation]
    return dict(zip(T.free_cells(formation).tolist(), T.caps(rank, formation).tolist(),
                    strict=True))


def board_from(grid) -> np.uint64:
    b = 0
    for r in range(4):
        for c in range(4):
            v = grid[r][c]
            b |= (v.bit_length() - 1 if v else 0) << (60 - 4 * (4 * r + c))
    return np.uint64(b)


def cells(b) -> list[int]:
    return [(int(b) >> (60 - 4 * i)) & 15 for i in range(16)]


# ---------------------------------------------------------------------------------------------
# The corner evaluation and search


def py_corner_line(e) -> float:
    w = [x * 2 ** x if x else 0 for x in e]
    score = w[0]
    for a, b in itertools.pairwise(w):
        score += (a + b + (a if a == b else 0)) if a >= b else 12 * (a - b)
    return score


def py_corner_eval(b) -> float:
    e = cells(b)
    rows = [e[4 * r: 4 * r + 4] for r in range(4)]
    cols = [e[c::4] for c in range(4)]
    return sum(py_corner_line(x) for x in rows + cols)


def test_corner_line_golden():
    # 8 4 2 2: w = 24, 8, 2, 2 -> 24 + (24 + 8) + (8 + 2) + (2 + 2 + 2) = 72
    assert corner_line(0x3211) == 72.0
    # a smaller tile first: 2 8 . . -> 2 + 12 (2 - 24) + (24 + 0) + 0 = -238
    assert corner_line(0x1300) == -238.0
    assert corner_line(0) == 0.0


def test_corner_eval_matches_python_and_transpose():
    rng = random.Random(3)
    for _ in range(200):
        b = np.uint64(rng.getrandbits(64))
        assert corner_eval(b) == py_corner_eval(b)
        assert corner_eval(np.uint64(kernels.transpose(b))) == corner_eval(b)  # rows <-> cols


def py_corner_values(b, depth, cutoff):
    """V(d) of corner.py's docstring, written out plainly (no table)."""
    top = max(cells(b))
    weight = top * 2 ** top
    pass_score = 2 * weight if py_corner_eval(b) >= 0 else -np.inf
    lost = -max(2 ** 17, 2 * weight)

    def tiles(a, k, q):
        score = py_corner_eval(a)
        if score < pass_score or k < 0 or q < cutoff:
            return score
        empty = [i for i, e in enumerate(cells(a)) if e == 0]
        total = 0.0
        for i in empty:
            for tile, p in ((1, 0.9), (2, 0.1)):
                c = np.uint64(int(a) | tile << (60 - 4 * i))
                best = lost
                for d in range(4):
                    nb, _, _ = kernels.move(c, 0, d, MOVE_XOR, LINE_REWARD)
                    if nb != c:
                        best = max(best, tiles(nb, k - 1, q * p / len(empty)))
                total += p * best
        return total / len(empty)

    out = {}
    for d in range(4):
        nb, _, _ = kernels.move(b, 0, d, MOVE_XOR, LINE_REWARD)
        if nb != b:
            out[d] = tiles(nb, depth - 1, 1.0)
    return out


@pytest.mark.parametrize("depth,cutoff", [(1, 0.0), (2, 1 / 64)])
def test_corner_search_matches_plain_expectimax(depth, cutoff):
    rng = random.Random(depth)
    for _ in range(4):
        grid = [[rng.choice([0, 0, 2, 4, 8, 16, 32, 256]) for _ in range(4)] for _ in range(4)]
        b = board_from(grid)
        expected = py_corner_values(b, depth, cutoff)
        values = np.zeros(4)
        tt = np.zeros(1 << 12, TT_DTYPE)
        legal = root_values(b, 0, depth, True, cutoff, 1, np.zeros(1, LINES_TT_DTYPE), tt,
                            MOVE_XOR, LINE_REWARD, np.zeros(1, np.int64), values)
        assert legal == sum(1 << d for d in expected)
        for d, v in expected.items():
            assert values[d] == pytest.approx(v, rel=1e-5, abs=1e-2)  # the table holds f32


# ---------------------------------------------------------------------------------------------
# Formation tables


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    for formation, rank in RANKS.items():
        T.build(rank, out, progress=False, formation=formation)
    T.build(RANK + 1, out, progress=False)  # for games: rank 3's caps are too tight to play
    return out


def py_goal(e, formation, rank) -> bool:
    """A goal of the formation (its patterns of r − k exponents) on the exponents e."""
    return any(all(e[c] == rank - k for c, k in goal.items())
               for goal in T.FORMATIONS[formation].goals)


def py_q(b, d, table, formation):
    """Q(b, d) of tables.py's docstring for a build board, read from the table."""
    rank = RANKS[formation]
    caps = caps_of(formation)
    nb, _ = kernels.move_fast(b, d, MOVE_XOR, LINE_REWARD)
    if nb == b:
        return None
    before, after = cells(b), cells(nb)
    if any(before[i] != after[i] for i in T.FORMATIONS[formation].locked):
        return 0.0
    if any(after[i] > cap for i, cap in caps.items()):
        return 0.0
    if py_goal(after, formation, rank):
        return 1.0
    empty = [i for i in caps if after[i] == 0]
    total = 0.0
    shape = T.shape(rank, formation)
    for i in empty:
        for tile, p in ((1, 0.9), (2, 0.1)):
            child = np.uint64(int(nb) | tile << (60 - 4 * i))
            total += p * table[T.index_of(child, shape)] / T.SCALE
    return total / len(empty)


def test_formation_caps_and_sizes():
    # tuple11 rank 7: 7 in (1, 2), 6 in column 3 and row 2, 5 in row 3
    assert T.caps(7).tolist() == [6, 7, 6, 6, 6, 6, 6, 5, 5, 5, 5]  # cells 3, 6, 7, 8..15
    assert T.free_cells().tolist() == [3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    assert caps_of("tuple11") == {3: 2, 6: 3, 7: 2, 8: 2, 9: 2, 10: 2, 11: 2, 12: 2, 13: 2,
                                  14: 2, 15: 2}  # never below 2
    # tuple10 rank 10: 9 and 8 down column 3 and along row 2, 7 elsewhere
    assert T.caps(10, "tuple10").tolist() == [9, 8, 9, 8, 7, 7, 7, 7, 7, 7]
    assert T.free_cells("tuple10").tolist() == [3, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    assert T.entries(7) == 8 * 7 ** 6 * 6 ** 4 == 1_219_784_832  # as documented
    assert T.entries(10, "tuple10") == 10 * 9 * 10 * 9 * 8 ** 6 == 2_123_366_400
    shape = T.shape(9, "tuple10")
    assert shape[4].tolist()[:3] == [4, 5, 6] and shape[5, :2].tolist() == [0, 5]
    assert shape[6].tolist() == [0] * 8 + [8, 7, 6, 0, 0, 0, 6, 0]  # (2, 0..2) and (3, 2)


@pytest.mark.parametrize("formation", list(T.FORMATIONS))
def test_table_satisfies_its_recurrence(table_dir, formation):
    rank = RANKS[formation]
    table = T.load(rank, table_dir, formation)
    shape = T.shape(rank, formation)
    caps = caps_of(formation)
    assert len(table) == np.prod([c + 1 for c in caps.values()]) == T.entries(rank, formation)
    assert not np.any(table == T.UNSET)
    rng = random.Random(0)
    for _ in range(300):
        index = rng.randrange(len(table))
        b = T.board_of(index, shape)
        assert T.index_of(b, shape) == index
        qs = [q for q in (py_q(b, d, table, formation) for d in range(4)) if q is not None]
        p = max(qs, default=0.0)
        assert table[index] / T.SCALE == pytest.approx(p, abs=0.5 / T.SCALE + 1e-12)  # rounded


def test_table_golden_positions(table_dir):
    table = T.load(RANK, table_dir)
    # tuple11 rank 3: an 8 in (1, 2), a 4 below it; Up brings the 4 of (3, 1) to (2, 1), the
    # ready pair beside (2, 2): a goal
    b = board_from([[0] * 4, [0, 0, 8, 0], [0, 0, 4, 0], [0, 4, 0, 0]])
    assert table[T.index_of(b, SHAPE)] == T.SCALE
    # the free region full of tiles that cannot merge: no move at all
    grid = [[0, 0, 0, 2], [0, 0, 8, 4], [4, 2, 4, 2], [2, 4, 2, 4]]
    assert table[T.index_of(board_from(grid), SHAPE)] == 0
    # tuple10 rank 5: 16, 8, 4 down column 3 and a 4 at (3, 2): Right completes the chain
    table, shape = T.load(RANK10, table_dir, "tuple10"), T.shape(RANK10, "tuple10")
    b = board_from([[0, 0, 0, 16], [0, 0, 0, 8], [0, 0, 0, 4], [0, 0, 4, 0]])
    assert table[T.index_of(b, shape)] == T.SCALE
    grid = [[0, 0, 0, 4], [0, 0, 0, 2], [2, 4, 2, 4], [4, 2, 4, 2]]
    assert table[T.index_of(board_from(grid), shape)] == 0


def test_file_of_a_rank_holds_the_smaller_ranks(table_dir, tmp_path):
    T.build(RANK + 1, tmp_path, progress=False)
    both = T.load(RANK + 1, tmp_path)
    # table_dir holds rank 3 and rank 4, the latter started from the former: the same bytes
    assert T.table_path(table_dir, RANK + 1).read_bytes() == \
        T.table_path(tmp_path, RANK + 1).read_bytes()
    shapes, offsets, total = T.layout(RANK + 1)
    assert np.array_equal(shapes[RANK], T.shape(RANK))
    assert len(both) == total == T.entries(RANK + 1) + T.entries(RANK)
    assert offsets[RANK + 1] == 0 and offsets[RANK] == T.entries(RANK + 1)
    assert both[offsets[RANK]:].tobytes() == T.load(RANK, table_dir).tobytes()
    # tuple11's rank is one less than the smaller of (0, 2) and (1, 1), at most top
    grid = [[4096, 2048, 64, 0], [512, 32, 0, 0], [0] * 4, [0] * 4]
    assert T.table_rank(board_from(grid), RANK + 1, SHAPE) == 4
    assert T.table_rank(board_from(grid), RANK, SHAPE) == RANK
    # tuple10's is the smallest tile of the second row
    grid = [[4096, 2048, 1024, 0], [128, 256, 64, 0], [0] * 4, [0] * 4]
    assert T.table_rank(board_from(grid), 7, T.shape(RANK10, "tuple10")) == 6


def test_killed_build_resumes_to_the_same_table(table_dir, tmp_path):
    n = T.entries(RANK)
    path = T.table_path(tmp_path, RANK)
    partial = path.with_name(path.name + ".partial")
    work = np.full(n, T.UNSET, np.uint16)
    T._build_range(0, n // 3, SHAPE, work, MOVE_XOR, LINE_REWARD)  # a third, then "killed"
    assert 0 < np.count_nonzero(work != T.UNSET) < n
    work.tofile(partial)
    T.build(RANK, tmp_path, progress=False)
    assert not partial.exists()
    assert T.table_path(tmp_path, RANK).read_bytes() == T.table_path(table_dir, RANK).read_bytes()


def test_missing_or_corrupt_tables_are_refused(table_dir, tmp_path):
    with pytest.raises(UserError, match="lab2048 teacher build-tables --rank 3"):
        T.load(RANK, tmp_path)
    with pytest.raises(UserError, match="build-tables"):
        play_game(1, TeacherConfig.preset("strong", table_rank=RANK, tables_dir=str(tmp_path)))
    half = T.build(RANK, tmp_path / "half", progress=False).parent  # tuple11 only
    with pytest.raises(UserError, match="build-tables --rank10 5 --out"):
        play_game(1, TeacherConfig.preset("strong", table_rank=RANK, table10_rank=RANK10,
                                           tables_dir=str(half)))
    data = bytearray(T.table_path(table_dir, RANK).read_bytes())
    data[T.HEADER.size + 1000] ^= 1
    T.table_path(tmp_path, RANK).write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum"):
        T.load(RANK, tmp_path)
    T.table_path(tmp_path, RANK).write_bytes(bytes(data[:5000]))
    with pytest.raises(UserError, match="not a complete"):
        T.load(RANK, tmp_path)


def test_build_tables_command(table_dir, tmp_path, capsys):
    args = ["teacher", "build-tables", "--rank", "3", "--rank10", "5", "--out", str(tmp_path)]
    assert main([*args, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"tuple11 tables of ranks 3..3, {T.entries(RANK):,} entries" in out
    assert f"tuple10 tables of ranks 5..5, {T.entries(RANK10, 'tuple10'):,} entries" in out
    for formation, rank in RANKS.items():
        built = T.table_path(tmp_path, rank, formation).read_bytes()
        assert built == T.table_path(table_dir, rank, formation).read_bytes()
    T.table_path(tmp_path, RANK10, "tuple10").write_bytes(b"junk")
    assert main(args) == 2
    assert "not a formation table" in capsys.readouterr().err
    (tmp_path / "tuple11-r6.bin").write_bytes(b"x" * 2**20)  # the format before the f-suffix
    assert main(["teacher", "build-tables", "--rank", "0", "--rank10", "0", "--out",
                 str(tmp_path)]) == 0
    stale = "tuple11-r6.bin: a table of an earlier format, no longer read (delete it to free 1 MiB)"
    assert stale in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Games


def test_strong_game_mixes_table_and_search_moves(table_dir):
    cfg = TeacherConfig.preset("strong", table_rank=RANK + 1, table10_rank=RANK10,
                               tables_dir=str(table_dir))
    g = play_game(5, cfg, max_moves=1500)
    assert set(np.unique(g.valuation)) == {0, 1, 2}  # search, tuple11, tuple10
    table_rows = g.valuation > 0
    legal = (g.ev_legal[:, None] >> np.arange(4)) & 1
    assert np.all(g.branch_evs[table_rows] >= 0) and np.all(g.branch_evs[table_rows] <= 1)
    for kind, formation in ((1, "tuple11"), (2, "tuple10")):
        assert np.all(g.branch_evs[g.valuation == kind].max(axis=1) >= T.MIN_PROB[formation])
    assert np.all(g.branch_evs[legal == 0] == 0)
    picked = g.branch_evs[np.arange(len(g.moves)), g.moves]
    assert np.all(picked == np.where(legal, g.branch_evs, -np.inf).max(axis=1))
    for i in range(0, len(g.moves), 37):  # a row is the search of its board alone
        evs, move, ev_legal, value = search(g.boards[i], g.masks[i], cfg)
        assert np.array_equal(evs, g.branch_evs[i]) and move == g.moves[i]
        assert ev_legal == g.ev_legal[i]
        assert value == g.board_eval[i] == int(np.floor(corner_eval(g.boards[i]) + 0.5))
    again = play_game(5, cfg, max_moves=1500)
    assert np.array_equal(again.moves, g.moves) and again.score == g.score


def test_presets():
    assert TeacherConfig.preset("default") == TeacherConfig()
    strong = TeacherConfig.preset("strong", table_rank=4)
    assert strong.evaluation == "corner" and strong.table_rank == 4
    with pytest.raises(ValueError, match="preset"):
        TeacherConfig.preset("weak")
    with pytest.raises(ValueError, match="evaluation"):
        TeacherConfig(evaluation="diagonal")
    with pytest.raises(ValueError, match="table_rank"):
        TeacherConfig(table_rank=9)
    with pytest.raises(ValueError, match="table10_rank"):
        TeacherConfig(table10_rank=2)


def test_tuple10_move_where_tuple11_does_not_apply(table_dir):
    # six locked tiles, the smallest of the second row 32 (rank 5): 16, 8, 4 down column 3;
    # Up (to (2, 2)) and Right (to (3, 3)) both bring the 4 of (3, 2) beside the chain's end,
    # tuple10's goal, and Up is the first; tuple11 does not apply (32 in its cell (1, 2) is
    # above the cap of its rank-3 table)
    grid = [[4096, 2048, 1024, 16], [512, 128, 32, 8], [0, 0, 0, 4], [0, 0, 4, 0]]
    cfg = TeacherConfig.preset("strong", table_rank=RANK, table10_rank=RANK10,
                               tables_dir=str(table_dir))
    out = search_boards(np.array([board_from(grid)]), np.zeros(1, np.uint16), cfg)
    assert out["valuation"][0] == 2 and out["move_dir"][0] == 0  # tuple10, Up
    assert out["branch_evs"][0, 0] == out["branch_evs"][0, 3] == 1.0
    assert np.all((out["branch_evs"][0] >= 0) & (out["branch_evs"][0] <= 1))


def test_corner_search_takes_the_depth_rule():
    few = [[8, 4, 0, 0], [2, 0, 0, 0], [0] * 4, [0] * 4]  # 3 distinct tiles: depth 1
    many = [[512, 256, 128, 64], [4, 8, 16, 32], [2, 0, 0, 0], [0] * 4]  # 10: depth 2
    boards = np.array([board_from(few), board_from(many)])
    cfg = TeacherConfig(evaluation="corner", depth=1, max_depth=2, depth_offset=7)
    out = search_boards(boards, np.zeros(2, np.uint16), cfg)
    assert out["plies"].tolist() == [cfg.plies(3), cfg.plies(10)] == [1, 2]
    assert out["nodes"][1] > out["nodes"][0]
