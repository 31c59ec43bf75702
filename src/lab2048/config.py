"""The one configuration mechanism of every command: a dataclass with defaults in code,
overridden by a TOML file, then by `--set section.key=value`, then by flags.

    from lab2048.config import add_config_args, build_config, load_config
    add_config_args(parser, ServeConfig)        # --config, --set and one flag per option
    cfg = build_config(ServeConfig, args)       # defaults < file < --set < flags
    cfg = load_config(TrainConfig, path, sets)  # the same without argparse

Choices
- Each field of a config dataclass becomes a flag (`max_moves` -> `--max-moves`, bools get
  `--x/--no-x`), its help taken from `field(metadata={"help": ...})`. A field holding another
  dataclass is a section: a `[name]` table in TOML, dotted in `--set` (`--set
  teacher.depth=3`), its options flat on the command line (two options sharing a flag name
  are an error when the parser is built). A field typed `dict` is a free table (TOML and
  `--set` only; its owner checks it); `add_config_args(..., flags=False)` gives a config of
  many sections only `--config` and `--set`.
- A field typed `X | None` (default None) may stay unset: TOML cannot say None, so it is
  None until a file, `--set` or a flag gives a value.
- Field metadata besides "help": "metavar", "choices" (also given to argparse), "flag"
  (another flag name, e.g. "--lambda" for a field `lam`), "positional": True for a
  positional argument (`list[str]` fields take any number of values; the config's own check
  says how many it needs, so a file can give them too), and a number's range: "min" (at
  least), "above" (more than), "max" (at most). `check_fields(self)` at the start of the
  dataclass's `__post_init__` checks "choices" and ranges, whichever way the value came (one
  rule and one wording for every bound and every list of choices).
- Unknown keys and wrong types are one-line UserErrors naming the file (or `--set`) and the
  key; values are validated in each dataclass's `__post_init__` (raise ValueError), which
  `build_config` turns into a one-line UserError.
- One device rule (`check_device`: auto, cpu, cuda or cuda:N) for every command.
- One name for the model shipped in the package: an option naming a model init directory
  (a field called `init` or `bootstrap`, in any section) given as `default` means
  `default_init()`, the directory src/lab2048/model/default; `./default` names a local one.
- Standard library only: the command line builds its parsers before importing numpy.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from lab2048.errors import UserError

_SCALARS = {"int": int, "float": float, "str": str, "bool": bool}
DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = "torch device: auto (cuda when available, else cpu), cpu, cuda or cuda:N"


def check_device(device: str) -> None:
    """The one device rule: auto, cpu, cuda or cuda:N; ValueError naming the option else."""
    kind, sep, index = device.partition(":")
    if kind not in DEVICES or (sep and not (kind == "cuda" and index.isdigit())):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")


def check_fields(cfg, prefix: str = "") -> None:
    """ValueError naming the first option of `cfg` (a config dataclass; its own fields, not
    its sections') that its metadata refuses: a value outside "choices", or a number outside
    its range ("min", "above", "max"). The option is named by prefix + its field name, or by
    its "flag"; an unset (None) option passes, NaN never does."""
    for f in dataclasses.fields(cfg):
        meta, value = f.metadata, getattr(cfg, f.name)
        name = meta.get("flag", prefix + f.name)
        if value is None:
            continue
        if "choices" in meta and value not in meta["choices"]:
            raise ValueError(f"{name} must be one of {', '.join(map(str, meta['choices']))}, "
                             f"got {value!r}")
        if {"min", "above", "max"} & meta.keys() and not (
                value >= meta.get("min", value) and value <= meta.get("max", value)
                and ("above" not in meta or value > meta["above"])):
            raise ValueError(f"{name} must be {_range_words(meta)}, got {value}")


def _range_words(meta) -> str:
    low = (f"[{meta['min']}" if "min" in meta else f"({meta['above']}" if "above" in meta
           else None)
    if "max" not in meta:
        return f"at least {meta['min']}" if "min" in meta else f"above {meta['above']}"
    return f"at most {meta['max']}" if low is None else f"in {low}, {meta['max']}]"


DEFAULT_INIT = "default"  # the value of an init option that names the shipped model
INIT_FIELDS = ("init", "bootstrap")  # the options that name a model init directory


def default_init() -> Path:
    """The model init shipped in the package (`make default-model` rebuilds it)."""
    return Path(__file__).resolve().parent / "model" / DEFAULT_INIT


def _leaf_type(typ) -> type:
    """int, float, str, bool, list (of str), or dict (a free table) for a field's type hint
    (X for X | None)."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        (typ,) = [t for t in typing.get_args(typ) if t is not type(None)]
    origin = typing.get_origin(typ) or typ
    if origin in (list, dict):
        return origin
    return _SCALARS[typ.__name__]


def _leaves(cls, prefix: tuple[str, ...] = ()):
    """(path, field, type) of every option; a field holding a dataclass is a section."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            yield from _leaves(typ, (*prefix, f.name))
        else:
            yield (*prefix, f.name), f, _leaf_type(typ)


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def add_config_args(parser: argparse.ArgumentParser, cls, *, sets: bool = True,
                    flags: bool = True) -> None:
    """Add --config, --set (unless sets=False) and one argument per option of `cls` (unless
    flags=False: configs with many sections, such as training's, are set by file and --set);
    absent flags leave the value alone. Options of a section take their own name as the flag
    (`teacher.depth` -> `--depth`)."""
    parser.add_argument("--config", type=Path, metavar="FILE.toml",
                        help="TOML file with values for the options below")
    if sets:
        parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                            help="set one option by its dotted TOML name (repeatable)")
    seen = set()
    for path, f, typ in _leaves(cls) if flags else ():
        if typ is dict:
            continue
        meta, dest = f.metadata, ".".join(path)
        kwargs = {"default": argparse.SUPPRESS, "help": meta.get("help", "")}
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
        if meta.get("positional"):
            parser.add_argument(dest, nargs="*" if typ is list else "?",
                                metavar=meta.get("metavar", path[-1].upper()), **kwargs)
            continue
        flag = meta.get("flag", "--" + path[-1].replace("_", "-"))
        assert flag not in seen, f"two options of {cls.__name__} would share {flag}"
        seen.add(flag)
        if _default(f) not in ("", None):  # then the help says what unset means
            kwargs["help"] += f" (default: {_default(f)!r})"
        if typ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, dest=dest, **kwargs)
        else:
            parser.add_argument(flag, type=typ, dest=dest, **kwargs,
                                metavar=meta.get("metavar", path[-1].upper()))


def check_table(cls, data: dict, source: str | Path, prefix: str = "") -> dict[str, Any]:
    """`data` (a TOML table) checked against `cls`'s fields and types: unknown keys, wrong
    types and non-tables for sections are one-line UserErrors naming `source` and the key.
    Ints are accepted for floats; a `dict` field takes any table."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for key, value in data.items():
        if key not in names:
            raise UserError(f"{source}: unknown key '{prefix}{key}' (known: {', '.join(names)})")
        typ = hints[key]
        if dataclasses.is_dataclass(typ) or _leaf_type(typ) is dict:
            if not isinstance(value, dict):
                raise UserError(f"{source}: {prefix}{key} must be a table [{prefix}{key}]")
            out[key] = (check_table(typ, value, source, f"{prefix}{key}.")
                        if dataclasses.is_dataclass(typ) else value)
            continue
        typ = _leaf_type(typ)
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if typ is list:
            ok = ok and all(isinstance(v, str) for v in value)
        if not ok:
            raise UserError(f"{source}: {prefix}{key} must be {typ.__name__}, got {value!r}")
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
    return check_table(cls, read_toml(path), path)


def parse_set(items: list[str]) -> list[tuple[list[str], Any]]:
    """`section.key=value` strings -> (path, value); values parse as TOML literals, anything
    that is not one is a string."""
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            raise UserError(f"--set {item!r}: expected section.key=value")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        out.append((path, value))
    return out


def _put(values: dict, path: list[str] | tuple[str, ...], value, source: str) -> None:
    table = values
    for name in path[:-1]:
        table = table.setdefault(name, {})
        if not isinstance(table, dict):
            raise UserError(f"{source}: {name} is not a table")
    table[path[-1]] = value


def construct(cls, values: dict[str, Any]):
    """`cls` built from checked values (nested tables build their sections)."""
    hints = typing.get_type_hints(cls)
    kwargs = {k: construct(hints[k], v) if dataclasses.is_dataclass(hints[k])
              else str(default_init()) if k in INIT_FIELDS and v == DEFAULT_INIT else v
              for k, v in values.items()}
    return cls(**kwargs)


def load_values(cls, path: Path | None = None, sets: list[str] | None = None) -> dict[str, Any]:
    """The checked values of a TOML file (if any) with `--set` items applied after it."""
    values = load_toml(cls, path) if path else {}
    for keys, value in parse_set(sets or []):
        name = f"--set {'.'.join(keys)}"
        _put(values, keys, value, name)
        values = check_table(cls, values, "--set")
    return values


def _make(cls, values: dict[str, Any], source: str):
    try:
        return construct(cls, values)
    except ValueError as e:
        raise UserError(f"{source}{e}") from None


def load_config(cls, path: Path | None = None, sets: list[str] | None = None):
    """Defaults, then the TOML file, then `--set` items; ValueError -> one-line UserError."""
    values = load_values(cls, path, sets)
    return _make(cls, values, f"{path}: " if path else "--set: " if sets else "")


def build_config(cls, args: argparse.Namespace):
    """Defaults, then the --config file, then --set, then explicit flags (add_config_args)."""
    path, sets = getattr(args, "config", None), getattr(args, "set", None)
    values = load_values(cls, path, sets)
    for leaf, _, _ in _leaves(cls):
        dest = ".".join(leaf)
        if dest in vars(args):
            _put(values, leaf, getattr(args, dest), dest)
    return _make(cls, values, f"{path}: " if path else "")


# The names train/config.py imports (its loader predates the public ones above)
_check_table, _construct = check_table, construct
