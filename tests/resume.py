"""The resume check shared by the generate tests (local and on Ray): a `lab2048 generate`
killed once some games were staged is rerun, keeps the staged games and plays the rest."""

from __future__ import annotations

from pathlib import Path


def assert_resumes(cli, args, out: Path, at_least: int, games: int):
    """Rerun `cli(*args)` after a kill left `at_least` or more (and fewer than `games`) games
    staged beside `out` and no dataset; returns the rerun's result."""
    from lab2048.data.generate import staging_dir

    kept = len(list(staging_dir(out).glob("game-*.npz")))
    assert at_least <= kept < games and not out.exists()
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert f"resuming: {kept} of {games} games already played" in result.stderr
    assert f"{games} games ({games - kept} played now)" in result.stdout
    return result
