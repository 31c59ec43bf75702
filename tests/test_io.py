"""Safe outputs (lab2048.io): atomic files, stale temporaries, the overwrite rule, full disks."""

import errno
import os
import pathlib
import subprocess
import sys

import pytest

from lab2048.errors import UserError
from lab2048.io import (
    atomic_path,
    claim_dir,
    claim_outputs,
    remove_stale_temps,
    temp_dir_beside,
    write_text,
)


def _dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    return int(proc.stdout)


def test_stale_temporaries_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    dead = _dead_pid()
    out = tmp_path / "ds"
    stale_dir = tmp_path / f".ds.{dead}-x1.tmp"
    stale_dir.mkdir()
    (stale_dir / "steps-00000.npy").write_bytes(b"x")
    stale_file = tmp_path / f".ds.{dead}-x2.tmp"
    stale_file.write_text("x")
    keep = [tmp_path / f".ds.{os.getppid()}-x3.tmp",  # a live process's
            tmp_path / f".other.{dead}-x4.tmp",  # another output's
            tmp_path / ".ds.notes.tmp",  # not one of ours
            tmp_path / f".ds.{dead}-old.tmp"]  # killed mid-publish, ds missing: the only copy
    for path in keep:
        path.write_text("keep")
    assert sorted(remove_stale_temps(out)) == sorted([stale_dir, stale_file])
    assert all(path.exists() for path in keep)
    out.mkdir()  # once ds is there again, the moved-aside old copy is stale too
    assert remove_stale_temps(out) == [tmp_path / f".ds.{dead}-old.tmp"]
    made = temp_dir_beside(out)
    assert made.name.startswith(f".ds.{os.getpid()}-") and made.name.endswith(".tmp")


def test_claim_dir_and_claim_outputs_refuse_in_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    claim_dir(tmp_path / "new", False, marker="metadata.db", kind="dataset")
    with pytest.raises(UserError, match="already exists"):
        claim_dir(tmp_path / "in", False, marker="metadata.db", kind="dataset")
    with pytest.raises(UserError, match="not a dataset"):
        claim_dir(tmp_path / "in", True, marker="metadata.db", kind="dataset")
    with pytest.raises(UserError, match="is the input"):
        claim_dir(tmp_path / "in" / ".." / "in", True, marker="x", kind="y",
                  inputs=(tmp_path / "in",))
    with pytest.raises(UserError, match="contains the input"):
        claim_dir(tmp_path, True, marker="x", kind="y", inputs=(tmp_path / "in" / "a.txt",))
    (tmp_path / "in" / "metadata.db").write_bytes(b"")
    claim_dir(tmp_path / "in", True, marker="metadata.db", kind="dataset")
    with pytest.raises(UserError, match="is a directory, not a file"):
        claim_outputs([tmp_path / "in"], overwrite=True)


def test_a_full_disk_leaves_the_earlier_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    write_text(target, "earlier")
    real = pathlib.Path.write_text

    def full(self, *args, **kwargs):
        if self.name.endswith(".tmp"):
            real(self, "half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(UserError, match=r"summary\.json: cannot write \(No space left on "
                       r"device\)$"):
        write_text(target, "new")
    assert target.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == [
        "summary.json"]
    with pytest.raises(UserError, match="No space left"), atomic_path(tmp_path / "x.png") as t:
        t.write_text("png")
    assert not (tmp_path / "x.png").exists()


def test_play_out_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    from lab2048.play.arena import run_play
    from lab2048.play.config import PlayConfig

    real = pathlib.Path.write_text

    def full(self, *args, **kwargs):
        if self.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(UserError, match=r"games\.csv: cannot write \(No space left on device\)"):
        run_play(PlayConfig(agent="random", games=2, max_moves=20, out=str(tmp_path / "out")))
    assert list((tmp_path / "out").iterdir()) == []


def test_atomic_files_publish_all_or_none(tmp_path):
    from lab2048.io import atomic_files

    names = [tmp_path / "games.csv", tmp_path / "summary.json", tmp_path / "scores.png"]
    with atomic_files(names) as temps:
        for tmp in temps:
            tmp.write_text("old")
    with pytest.raises(UserError, match=r"cannot write \(No space left on device\)"), \
            atomic_files(names) as temps:
        temps[0].write_text("new")
        temps[1].write_text("new")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # writing the picture
    assert [p.read_text() for p in names] == ["old"] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in names)
