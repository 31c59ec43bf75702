"""Configs: dataclasses with defaults in code, overridden by a TOML file, then by CLI flags.

Each field of a config dataclass becomes a flag (`max_moves` -> `--max-moves`, bools get
`--x/--no-x`), its help taken from `field(metadata={"help": ...})`. `--config FILE.toml` loads a
flat table of the same names; unknown keys and wrong types are errors naming the file and key.
Validation of values lives in each dataclass's `__post_init__` (raise ValueError).
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from lab2048.errors import UserError

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _fields(cls) -> list[tuple[dataclasses.Field, type]]:
    return [(f, _TYPES[f.type if isinstance(f.type, str) else f.type.__name__])
            for f in dataclasses.fields(cls)]


def add_config_args(parser: argparse.ArgumentParser, cls) -> None:
    """Add --config and one flag per field of `cls` (absent flags leave the value alone)."""
    parser.add_argument("--config", type=Path, help="TOML file with values for the options below")
    for f, typ in _fields(cls):
        flag = "--" + f.name.replace("_", "-")
        helptext = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        if typ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=helptext)
        else:
            parser.add_argument(flag, type=typ, default=argparse.SUPPRESS, dest=f.name,
                                metavar=f.name.upper(), help=helptext)


def load_toml(cls, path: Path) -> dict[str, Any]:
    """The values a TOML file sets for `cls`, type-checked."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML ({e})") from None
    types = {f.name: typ for f, typ in _fields(cls)}
    for key, value in data.items():
        if key not in types:
            raise UserError(f"{path}: unknown key {key!r} (known: {', '.join(types)})")
        typ = types[key]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise UserError(f"{path}: {key} must be {typ.__name__}, got {value!r}")
        data[key] = value
    return data


def build_config(cls, args: argparse.Namespace):
    """Defaults, then the --config file, then explicit flags; ValueError -> UserError."""
    values = load_toml(cls, args.config) if getattr(args, "config", None) else {}
    for f in dataclasses.fields(cls):
        if f.name in vars(args):
            values[f.name] = getattr(args, f.name)
    try:
        return cls(**values)
    except ValueError as e:
        source = f"{args.config}: " if getattr(args, "config", None) else ""
        raise UserError(f"{source}{e}") from None
