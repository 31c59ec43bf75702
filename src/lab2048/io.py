"""Safe outputs: write to a temporary beside the target, then rename over it.

An interrupted run leaves earlier results as they were; existing outputs are replaced only
when the caller passes overwrite=True (the CLI's --overwrite), and only outputs of the same
kind (`claim_dir`). Check every target with `claim_outputs` / `claim_dir` before long work
starts, so a refusal costs nothing.

Choices
- Temporaries are named `.NAME.<pid>-<random>.tmp` beside the target: a later run of the same
  kind removes those whose process is gone (`remove_stale_temps`: killed with SIGKILL, say) and
  never touches a live run's, nor any other file.
- A failed write (a full disk, a read-only directory) is one line, `PATH: cannot write
  (No space left on device)`, and the temporary is removed: nothing half-written is published.
  Files that belong together are published by `atomic_files`: all of them or none.
- Published files get the mode a new file gets under the umask (0666 & ~umask), whatever the
  library that wrote them chose (safetensors writes 0600): `follow_umask`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lab2048.errors import UserError


def claim_outputs(paths: list[Path], overwrite: bool) -> None:
    """Refuse (UserError) if any target exists and overwrite is off; create parent dirs."""
    for path in paths:
        if path.exists() and not overwrite:
            raise UserError(f"{path}: already exists (pass --overwrite to replace it)")
        if path.is_dir():
            raise UserError(f"{path}: is a directory, not a file (--overwrite replaces only "
                            "a file of its own kind)")
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{path.parent}: cannot create directory ({e.strerror})") from None


def claim_dir(out: Path, overwrite: bool, *, marker: str, kind: str,
              inputs: tuple[Path, ...] = ()) -> None:
    """Refuse (UserError, nothing touched) an output directory that may not be written.

    `out` may not be, or contain, any of `inputs`. If it exists it is replaced only with
    overwrite, and only when it is an output of this kind: a directory holding `marker`
    (metadata.db for a dataset)."""
    target = Path(out).resolve()
    for given in inputs:
        source = Path(given).resolve()
        if source == target:
            raise UserError(f"{out}: is the input; choose another output directory")
        if target in source.parents:
            raise UserError(f"{out}: contains the input {given}; choose another output "
                            "directory")
    if not Path(out).exists():
        return
    if not overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace it)")
    if not (Path(out).is_dir() and (Path(out) / marker).is_file()):
        raise UserError(f"{out}: not a {kind} (no {marker}); --overwrite replaces only a "
                        f"{kind}, so nothing was deleted")


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(path: Path) -> None:
    """Give a finished file (or directory) the mode a new one gets under the umask."""
    path = Path(path)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~umask())


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporaries `.NAME.<pid>-*.tmp` beside `path` whose process is gone; the
    removed paths. Another live process's temporaries, and every other file, stay."""
    path = Path(path)
    removed = []
    try:
        entries = list(path.parent.iterdir()) if path.parent.is_dir() else []
    except OSError:
        return removed
    head = f".{path.name}."
    for entry in entries:
        name = entry.name
        if not (name.startswith(head) and name.endswith(".tmp")):
            continue
        pid = name[len(head):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if name.endswith("-old.tmp") and not path.exists():
            continue  # killed between the two renames of publish_dir: the only copy left
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def disk_errors(path: Path, what: str = "") -> Iterator[None]:
    """Turn an OSError inside the block (a full disk, say) into a one-line UserError."""
    try:
        yield
    except OSError as e:
        reason = e.strerror or str(e)
        raise UserError(f"{path}: cannot write{' ' + what if what else ''} ({reason})") from None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, else delete it.
    An OSError while writing (a full disk) is a one-line UserError; `path` stays as it was."""
    path = Path(path)
    remove_stale_temps(path)
    with disk_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with disk_errors(path):
            yield tmp_path
            follow_umask(tmp_path)  # mkstemp makes 0600; outputs get the usual mode
            os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_files(paths: list[Path]) -> Iterator[list[Path]]:
    """`atomic_path` for a set of files that belong together (games.csv, summary.json and
    scores.png, say): temporaries for all, renamed into place only once every one is written,
    so a failure (a full disk) leaves the earlier set whole, never a mix."""
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(_temp_file(Path(p))) for p in paths]
        with disk_errors(Path(paths[0]).parent if paths else Path(".")):
            yield temps
            for tmp in temps:
                follow_umask(tmp)
        for tmp, path in zip(temps, paths, strict=True):
            os.replace(tmp, path)


@contextlib.contextmanager
def _temp_file(path: Path) -> Iterator[Path]:
    remove_stale_temps(path)
    with disk_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def temp_dir_beside(path: Path) -> Path:
    """A new hidden directory beside `path` (same file system, so it can be renamed into
    place), with the usual mode; stale ones of earlier killed runs are removed first.
    UserError if it cannot be made."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise UserError(f"{path}: cannot create ({e.strerror})") from None
    follow_umask(tmp)
    return tmp


def publish_dir(tmp: Path, path: Path) -> None:
    """Rename the finished directory `tmp` to `path`, replacing an existing one (the caller
    checked --overwrite): the old one is moved aside first and removed after, so `path` is
    always either the old or the new directory, never a mix. The files in `tmp` get the
    umask's mode first."""
    for entry in tmp.iterdir():
        if entry.is_file() and not entry.is_symlink():
            follow_umask(entry)
    if path.exists():
        old = path.with_name(f"{_temp_prefix(path)}old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def read_json(path: Path, missing: str = "no such file"):
    """The parsed JSON of a file; a one-line UserError naming it if it is missing, unreadable
    or not JSON (`missing` says what to tell when it does not exist)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {missing}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def progress_bar(enabled: bool = True, **kwargs):
    """A tqdm bar on stderr, shown only when stderr is a terminal (logs and pipes stay clean,
    and an error stays one line) and `enabled`."""
    from tqdm import tqdm

    return tqdm(disable=None if enabled else True, dynamic_ncols=True, **kwargs)
