"""Configs: dataclasses with defaults in code, overridden by a TOML file, then by CLI flags.

Each field of a config dataclass becomes a flag (`max_moves` -> `--max-moves`, bools get
`--x/--no-x`), its help taken from `field(metadata={"help": ...})`. A field holding another
dataclass is a section: a `[name]` table in TOML, its options flat on the command line.
`--config FILE.toml` loads a table of the same names; unknown keys and wrong types are errors
naming the file and key.
Validation of values lives in each dataclass's `__post_init__` (raise ValueError).
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

from lab2048.errors import UserError

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _leaves(cls, prefix: tuple[str, ...] = ()):
    """(path, field, type) of every option; a field holding a dataclass is a section."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            yield from _leaves(typ, (*prefix, f.name))
        else:
            yield (*prefix, f.name), f, _TYPES[typ.__name__]


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """Add --config and one flag per option of `cls` (absent flags leave the value alone).

    Options of a section take their own name as the flag (`teacher.depth` -> `--depth`)."""
    parser.add_argument("--config", type=Path, help="TOML file with values for the options below")
    flags = set()
    for path, f, typ in _leaves(cls):
        flag = "--" + path[-1].replace("_", "-")
        assert flag not in flags, f"two options of {cls.__name__} would share {flag}"
        flags.add(flag)
        helptext = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        if typ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, dest=".".join(path),
                                default=argparse.SUPPRESS, help=helptext)
        else:
            parser.add_argument(flag, type=typ, default=argparse.SUPPRESS, dest=".".join(path),
                                metavar=path[-1].upper(), help=helptext)


def _check_table(cls, data: dict, path: Path, prefix: str = "") -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in data.items():
        if key not in names:
            raise UserError(f"{path}: unknown key {prefix}{key!r} (known: {', '.join(names)})")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise UserError(f"{path}: {prefix}{key} must be a table [{prefix}{key}]")
            out[key] = _check_table(typ, value, path, f"{prefix}{key}.")
            continue
        typ = _TYPES[typ.__name__]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise UserError(f"{path}: {prefix}{key} must be {typ.__name__}, got {value!r}")
        out[key] = value
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's tables; a one-line UserError naming it if missing, unreadable or invalid."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None


def load_toml(cls, path: Path) -> dict[str, Any]:
    """The values a TOML file sets for `cls` (sections as nested tables), type-checked."""
    return _check_table(cls, read_toml(path), path)


def _construct(cls, values: dict[str, Any]):
    hints = typing.get_type_hints(cls)
    kwargs = {k: _construct(hints[k], v) if dataclasses.is_dataclass(hints[k]) else v
              for k, v in values.items()}
    return cls(**kwargs)


def build_config(cls, args: argparse.Namespace):
    """Defaults, then the --config file, then explicit flags; ValueError -> UserError."""
    values = load_toml(cls, args.config) if getattr(args, "config", None) else {}
    for path, _, _ in _leaves(cls):
        dest = ".".join(path)
        if dest in vars(args):
            table = values
            for name in path[:-1]:
                table = table.setdefault(name, {})
            table[path[-1]] = getattr(args, dest)
    try:
        return _construct(cls, values)
    except ValueError as e:
        source = f"{args.config}: " if getattr(args, "config", None) else ""
        raise UserError(f"{source}{e}") from None
