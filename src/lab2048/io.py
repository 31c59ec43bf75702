"""Safe outputs: write to a temporary file beside the target, then rename over it.

An interrupted run leaves earlier results as they were; existing outputs are replaced only
when the caller passes overwrite=True (the CLI's --overwrite). Check every target with
`claim_outputs` before long work starts, so a refusal costs nothing.
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
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{path.parent}: cannot create directory ({e.strerror})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, else delete it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def temp_dir_beside(path: Path) -> Path:
    """A new hidden directory beside `path` (same file system, so it can be renamed into
    place), with the usual mode; UserError if it cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise UserError(f"{path}: cannot create ({e.strerror})") from None
    tmp.chmod(0o777 & ~_umask())
    return tmp


def publish_dir(tmp: Path, path: Path) -> None:
    """Rename the finished directory `tmp` to `path`, replacing an existing one (the caller
    checked --overwrite): the old one is moved aside first and removed after, so `path` is
    always either the old or the new directory, never a mix."""
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
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
