"""The command line: a light --help, play outputs and their protection, configs, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab2048.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lab2048", *map(str, args)],
                          capture_output=True, text=True)


def test_help_imports_nothing_heavy():
    code = ("import sys; from lab2048.cli import build_parser; build_parser()\n"
            "heavy = ('numba', 'numpy', 'matplotlib', 'tqdm')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    result = run_cli("--help")
    assert result.returncode == 0 and "play" in result.stdout and "replay" in result.stdout


def test_play_writes_outputs_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["play", "--agent", "random", "--games", "6", "--seed", "100",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "agent random: 6 games" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["games"] == 6 and summary["config"]["seed"] == 100
    rows = (out / "games.csv").read_text().splitlines()
    assert rows[0] == "seed,score,moves,highest_tile,end_reason" and len(rows) == 7
    assert rows[1].startswith("100,") and rows[1].endswith(",no-moves")
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(int(r.split(",")[1]) for r in rows[1:]) / 6 == summary["score"]["mean"]

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["play", "--games", "2", "--out", str(out)]) == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing lost

    assert main(["play", "--games", "2", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "summary.json").read_text())["games"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["games.csv", "scores.png", "summary.json"]


def test_config_file_then_flags(tmp_path, capsys):
    cfg = tmp_path / "play.toml"
    cfg.write_text('agent = "corner"\ngames = 3\n')
    assert main(["play", "--config", str(cfg), "--games", "4"]) == 0
    assert "agent corner: 4 games" in capsys.readouterr().out


@pytest.mark.parametrize(("toml", "message"), [
    ('agnet = "random"\n', "unknown key 'agnet'"),
    ("games = 'many'\n", "games must be int"),
    ('agent = "minimax"\n', "agent must be one of random, greedy, corner"),
    ("games = [\n", "not valid TOML"),
    ("games = 0\n", "games must be at least 1"),
])
def test_bad_config_is_one_line_error(tmp_path, toml, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    result = run_cli("play", "--config", cfg)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert str(cfg) in result.stderr and message in result.stderr


def test_missing_config_and_bad_flags():
    result = run_cli("play", "--config", "nowhere.toml")
    assert result.returncode == 2
    assert result.stderr == "lab2048: error: nowhere.toml: no such file\n"
    result = run_cli("play", "--games", "-1")
    assert result.returncode == 2 and "games must be at least 1" in result.stderr


def test_replay_command(tmp_path):
    result = run_cli("replay", FIXTURES / "macroxue-d3-seed2031.txt.gz")
    assert result.returncode == 0
    assert "7303 moves, score 175,624 (printed 175,624), highest tile 8192: engine agrees" in (
        result.stdout)
    result = run_cli("replay", tmp_path / "missing.txt")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "missing.txt: no such file" in result.stderr
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes((FIXTURES / "macroxue-d3-seed2031.txt.gz").read_bytes()[:30_000])
    result = run_cli("replay", cut)
    assert result.returncode == 2 and "cut.txt.gz: damaged or truncated gzip" in result.stderr
