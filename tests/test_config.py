"""The one configuration mechanism: defaults < TOML file < --set < flags for every command,
sections, free tables, positionals, one-line errors, the device rule, and the README's
command table parsing as documented."""

import argparse
from dataclasses import dataclass, field

import pytest

from lab2048.cli import build_parser
from lab2048.config import (
    add_config_args,
    build_config,
    check_device,
    check_fields,
    check_table,
    load_config,
)
from lab2048.data.config import (
    CheckConfig,
    GenerateConfig,
    PackConfig,
    ReplayConfig,
    ValueSidecarConfig,
)
from lab2048.errors import UserError
from lab2048.serve.config import ServeConfig
from lab2048.train.config import TrainConfig, load_train_config
from lab2048.value_target import DEFAULT_EPSILON, gamma_field


def parse(*argv):
    return build_parser().parse_args([str(a) for a in argv])


def test_defaults_then_file_then_set_then_flags(tmp_path):
    toml = tmp_path / "gen.toml"
    toml.write_text('out = "from-file"\ngames = 5\nseed = 9\n[teacher]\ndepth = 1\n'
                    "max_depth = 4\n")
    cfg = build_config(GenerateConfig, parse("generate", "--config", toml))
    assert (cfg.out, cfg.games, cfg.seed, cfg.teacher.depth, cfg.teacher.max_depth) == (
        "from-file", 5, 9, 1, 4)
    assert cfg.workers == GenerateConfig.__dataclass_fields__["workers"].default
    cfg = build_config(GenerateConfig, parse("generate", "--config", toml, "--set",
                                             "teacher.depth=3", "--set", "games=6"))
    assert (cfg.games, cfg.teacher.depth, cfg.seed) == (6, 3, 9)
    cfg = build_config(GenerateConfig, parse("generate", "--config", toml, "--set",
                                             "teacher.depth=3", "--depth", "2", "--games", "7"))
    assert (cfg.games, cfg.teacher.depth) == (7, 2)  # flags win over --set and the file


@pytest.mark.parametrize(("sets", "message"), [
    (["teacher.dept=3"], "--set: unknown key 'teacher.dept'"),
    (["games=many"], "--set: games must be int, got 'many'"),
    (["games"], "--set 'games': expected section.key=value"),
    (["teacher=3"], "--set: teacher must be a table [teacher]"),
    (["games.x=1"], "--set: games must be int, got {'x': 1}"),
    (["games=0"], "games must be at least 1, got 0"),
    (["label='nobody'"], "label must be one of teacher, got 'nobody'"),  # TOML too
])
def test_bad_set_items_are_one_line_errors(sets, message):
    argv = ["generate", "--out", "x"] + [a for s in sets for a in ("--set", s)]
    with pytest.raises(UserError) as e:
        build_config(GenerateConfig, parse(*argv))
    assert message in str(e.value) and "\n" not in str(e.value)


@dataclass
class Inner:
    rate: float = 0.5


@dataclass
class WithTable:
    name: str = field(default="", metadata={"help": "a name"})
    inner: Inner = field(default_factory=Inner)
    extra: dict = field(default_factory=dict)  # a free table: file and --set only

    def __post_init__(self) -> None:
        if self.inner.rate < 0:
            raise ValueError(f"inner.rate must be >= 0, got {self.inner.rate}")


def test_free_tables_sections_and_load_config_without_argparse(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('name = "a"\n[inner]\nrate = 2\n[extra]\nhidden = 64\n[extra.deep]\nx = 1\n')
    cfg = load_config(WithTable, toml, ["extra.layers=3", "inner.rate=1.5"])
    assert cfg == WithTable("a", Inner(1.5), {"hidden": 64, "deep": {"x": 1}, "layers": 3})
    assert isinstance(load_config(WithTable, toml).inner.rate, float)  # ints widen to float
    with pytest.raises(UserError, match=r"c\.toml: extra must be a table \[extra\]"):
        check_table(WithTable, {"extra": 3}, toml)
    with pytest.raises(UserError, match=r"^--set: inner.rate must be >= 0"):
        load_config(WithTable, None, ["inner.rate=-1"])
    parser = argparse.ArgumentParser()
    add_config_args(parser, WithTable)
    assert "--extra" not in parser.format_help() and "--rate" in parser.format_help()
    args = parser.parse_args(["--name", "b", "--set", "extra.k='v'"])
    assert build_config(WithTable, args) == WithTable("b", Inner(), {"k": "v"})


@dataclass
class Optional:
    gamma: float | None = field(default=None, metadata={"help": "discount (unset: the model's)"})
    lam: float | None = field(default=None, metadata={"help": "TD(lambda)", "flag": "--lambda"})


def test_options_that_may_stay_unset_and_other_flag_names(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_args(parser, Optional)
    assert build_config(Optional, parser.parse_args([])) == Optional(None, None)
    args = parser.parse_args(["--lambda", "0.9", "--set", "gamma=1"])
    assert build_config(Optional, args) == Optional(1.0, 0.9)
    assert "--lam " not in parser.format_help() and "(default" not in parser.format_help()
    with pytest.raises(UserError, match="gamma must be float"):
        load_config(Optional, None, ["gamma='x'"])


@dataclass
class Ranged:
    games: int = field(default=1, metadata={"help": "at least one", "min": 1})
    rate: float = field(default=0.5, metadata={"help": "a fraction", "min": 0, "max": 1})
    lam: float | None = field(default=None, metadata={"flag": "--lambda", "max": 1})
    gamma: float | None = gamma_field("the model's")
    kind: str = field(default="a", metadata={"help": "a or b", "choices": ("a", "b")})

    def __post_init__(self) -> None:
        check_fields(self)


@pytest.mark.parametrize(("values", "message"), [
    ({"games": 0}, "games must be at least 1, got 0"),
    ({"rate": 1.5}, "rate must be in [0, 1], got 1.5"),
    ({"rate": float("nan")}, "rate must be in [0, 1], got nan"),
    ({"lam": 2.0}, "--lambda must be at most 1, got 2.0"),
    ({"gamma": 0.0}, "gamma must be in (0, 1], got 0.0"),  # 0 is a γ, not "unset"
    ({"gamma": 1.01}, "gamma must be in (0, 1], got 1.01"),
    ({"kind": "c"}, "kind must be one of a, b, got 'c'"),
])
def test_ranges_declared_on_fields_are_checked_with_one_wording(values, message):
    with pytest.raises(ValueError) as e:
        Ranged(**values)
    assert str(e.value) == message
    with pytest.raises(UserError) as e:  # the same line through the config mechanism
        load_config(Ranged, None, [f"{k}={v}" for k, v in values.items()])
    assert str(e.value) == f"--set: {message}"


def test_bounds_themselves_and_unset_options_pass():
    assert Ranged(games=1, rate=0.0, lam=None, gamma=None).gamma is None
    assert Ranged(rate=1.0, lam=-5.0, gamma=1.0, kind="b").gamma == 1.0
    bad = Ranged()
    bad.games = 0
    with pytest.raises(ValueError, match=r"^section.games must be at least 1, got 0$"):
        check_fields(bad, "section.")  # a section names its options with its prefix


def test_positionals_take_values_from_the_command_line_or_the_file(tmp_path):
    assert build_config(ReplayConfig, parse("replay", "a.txt", "b.txt.gz")).files == [
        "a.txt", "b.txt.gz"]
    assert build_config(CheckConfig, parse("check")) == CheckConfig("", False)
    assert build_config(CheckConfig, parse("check", "ds", "--quiet")) == CheckConfig("ds", True)
    toml = tmp_path / "check.toml"
    toml.write_text('dataset = "from-file"\n')
    assert build_config(CheckConfig, parse("check", "--config", toml)).dataset == "from-file"
    assert build_config(CheckConfig, parse("check", "--config", toml, "x")).dataset == "x"
    toml.write_text('files = ["a.txt", 3]\n')
    with pytest.raises(UserError, match="files must be list"):
        build_config(ReplayConfig, parse("replay", "--config", toml))


@pytest.mark.parametrize(("device", "ok"), [
    ("auto", True), ("cpu", True), ("cuda", True), ("cuda:0", True), ("cuda:12", True),
    ("tpu", False), ("cuda:", False), ("cuda:x", False), ("cpu:0", False), ("", False),
    ("CUDA", False), ("auto:1", False),
])
def test_one_device_rule(device, ok):
    if ok:
        check_device(device)
    else:
        with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
            check_device(device)


def test_readme_command_table_parses_as_documented():
    """Every row of the README's command table, with its documented flags."""
    cfg = build_config(GenerateConfig, parse("generate", "--out", "D", "--games", "3",
                                             "--depth", "2", "--workers", "1", "--seed", "4"))
    assert (cfg.out, cfg.games, cfg.teacher.depth, cfg.workers, cfg.seed) == ("D", 3, 2, 1, 4)
    cfg = build_config(GenerateConfig, parse(
        "generate", "--agent", "value:depth=1", "--init", "I", "--label", "teacher", "--out",
        "D", "--include", "E", "--include-where", "id < 5"))
    assert (cfg.agent, cfg.init, cfg.label, cfg.include, cfg.include_where) == (
        "value:depth=1", "I", "teacher", "E", "id < 5")
    cfg = build_config(PackConfig, parse("pack", "--input", "L", "--out", "D", "--format",
                                         "macroxue-text", "--workers", "2", "--shard-rows", "9"))
    assert cfg == PackConfig("L", "D", "macroxue-text", 2, 9)
    assert parse("pack", "--input", "L", "--out", "D", "--overwrite").overwrite
    with pytest.raises(SystemExit):  # argparse's own refusal of an unknown format
        parse("pack", "--input", "L", "--out", "D", "--format", "csv")
    cfg = build_config(ValueSidecarConfig, parse(
        "value-sidecar", "--dataset", "D", "--gamma", "0.99", "--reward-scale", "1",
        "--epsilon", "0.01", "--workers", "2", "--output", "O"))
    assert cfg == ValueSidecarConfig("D", 0.99, 1.0, 0.01, 2, "O")
    plain = build_config(ValueSidecarConfig, parse("value-sidecar", "--dataset", "D"))
    assert (plain.gamma, plain.epsilon) == (None, DEFAULT_EPSILON)  # None: the model's, or default
    args = parse("train", "--config", "c.toml", "--set", "train.steps=5", "--resume")
    assert (str(args.config), args.set, args.resume) == ("c.toml", ["train.steps=5"], True)
    cfg = build_config(ServeConfig, parse("serve", "--init", "I", "--tcp", "0.0.0.0:8000"))
    assert (cfg.init, cfg.address) == ("I", "0.0.0.0:8000")
    cfg = build_config(ServeConfig, parse("serve", "--init", "I", "--uds", "/tmp/s.sock"))
    assert cfg.address == "unix:/tmp/s.sock"
    assert build_config(ServeConfig, parse("serve", "--init", "I")).address == "127.0.0.1:50051"
    for argv in (["play", "--init", "I"], ["play", "--server", "A"], ["play", "--agent",
                 "random"], ["value-smoke", "--init", "I"], ["check", "D"], ["replay", "F"]):
        assert parse(*argv).run is not None


@pytest.mark.parametrize(("argv", "message"), [
    (["serve"], "--init DIR is required"),
    (["pack", "--input", "L"], "--input LOGDIR and --out DIR are required"),
    (["value-sidecar"], "the embedded dataset is read-only: pass --output DIR"),
    (["value-sidecar", "--output", "O", "--workers", "-1"], "workers must be at least 0, got -1"),
    (["replay", "--config", "{toml}"], "give at least one FILE"),
])
def test_missing_or_bad_settings_are_one_line_errors(tmp_path, argv, message):
    toml = tmp_path / "empty.toml"
    toml.write_text("")
    args = parse(*(a.format(toml=toml) for a in argv))
    cls = {"serve": ServeConfig, "pack": PackConfig, "value-sidecar": ValueSidecarConfig,
           "replay": ReplayConfig}[argv[0]]
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_config(cls, args)


def test_training_config_keeps_its_loader(tmp_path):
    toml = tmp_path / "t.toml"
    toml.write_text("[train]\nsteps = 3\n[model]\nhidden = 64\nheads = 4\n")
    cfg = load_train_config(toml, ["optim.lr=0.01"])
    assert (cfg.train.steps, cfg.optim.lr, cfg.model["hidden"]) == (3, 0.01, 64)
    assert load_config(TrainConfig, toml, ["optim.lr=0.01"]) == cfg  # the generic one agrees
