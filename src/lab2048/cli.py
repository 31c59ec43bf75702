"""`lab2048`: one entry point, a subcommand per step of the pipeline.

Every subcommand is a dataclass config (lab2048.config: defaults, `--config FILE.toml`,
`--set section.key=value`, flags) and a small `_x(args)` function that imports its heavy
modules (numba, torch, matplotlib) only when it runs, so `--help` answers at once. Errors a
user can fix (UserError) print as one line `lab2048: error: ...` and exit 2; Ctrl-C exits 130
with earlier outputs intact.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lab2048 import __version__
from lab2048.annotate.config import AnnotateConfig, ViewConfig
from lab2048.config import add_config_args, build_config
from lab2048.data.config import (
    CheckConfig,
    GenerateConfig,
    PackConfig,
    ReplayConfig,
    ValueSidecarConfig,
)
from lab2048.errors import UserError
from lab2048.play.config import EvaluateConfig, PlayConfig, ValueSmokeConfig
from lab2048.publish import PublishConfig
from lab2048.serve.config import ServeConfig
from lab2048.teacher.config import BuildTablesConfig
from lab2048.train.config import TrainConfig, load_train_config


def _play(args: argparse.Namespace) -> int:
    from lab2048.play.arena import run_play

    run_play(build_config(PlayConfig, args), overwrite=args.overwrite)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lab2048.play.arena import run_evaluate

    run_evaluate(build_config(EvaluateConfig, args), overwrite=args.overwrite)
    return 0


def _serve(args: argparse.Namespace) -> int:
    cfg = build_config(ServeConfig, args)
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # errors are our one line, not C++ logs
    from lab2048.serve.server import serve

    return serve(cfg)


def _value_smoke(args: argparse.Namespace) -> int:
    from lab2048.play.value_smoke import run

    run(build_config(ValueSmokeConfig, args), overwrite=args.overwrite)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from lab2048.data.macroxue_text import read_text_game, replay

    failed = 0
    for path in map(Path, build_config(ReplayConfig, args).files):
        report = replay(read_text_game(path))
        verdict = "engine agrees" if report.agrees else "ENGINE DISAGREES"
        print(f"{path}: {report.moves} moves, score {report.score:,} "
              f"(printed {report.printed_score:,}), highest tile {report.highest_tile}: {verdict}")
        if report.first_mismatch >= 0:
            print(f"  move #{report.first_mismatch + 1}: {report.mismatch}")
        if not report.final_is_game_over:
            print("  the final board still has a legal move")
        failed += not report.agrees
    return 1 if failed else 0


def _check(args: argparse.Namespace) -> int:
    from lab2048.data.check import check_dataset, format_report
    from lab2048.data.dataset import Dataset, default_dataset
    from lab2048.io import progress_bar

    cfg = build_config(CheckConfig, args)
    root = Path(cfg.dataset) if cfg.dataset else default_dataset()
    rows = Dataset(root).num_rows
    with progress_bar(not cfg.quiet, total=rows, unit="step", unit_scale=True,
                      desc="check") as bar:
        report = check_dataset(root, progress=bar.update)
    print(format_report(report))
    return 0 if report.ok else 1


def _generate(args: argparse.Namespace) -> int:
    from lab2048.data.generate import format_summary, generate

    print(format_summary(generate(build_config(GenerateConfig, args), overwrite=args.overwrite)))
    return 0


def _pack(args: argparse.Namespace) -> int:
    from lab2048.data.pack import pack

    cfg = build_config(PackConfig, args)
    report = pack(Path(cfg.input), Path(cfg.out), fmt=cfg.format, workers=cfg.workers,
                  shard_rows=cfg.shard_rows, overwrite=args.overwrite, ray=cfg.ray)
    print(f"{report.out}: {report.games:,} games, {report.steps:,} steps packed in "
          f"{report.seconds:.1f} s; logged values disagree with the board's legal moves on "
          f"{report.ev_legal_differs:,} steps")
    for name, reason in report.skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    if report.skipped:
        print(f"{len(report.skipped)} game(s) skipped", file=sys.stderr)
    return 1 if report.skipped else 0


def _value_sidecar(args: argparse.Namespace) -> int:
    from lab2048.data.dataset import default_dataset
    from lab2048.data.sidecar import SidecarConfig, build_sidecar, format_summary
    from lab2048.value_target import DEFAULT_GAMMA

    cfg = build_config(ValueSidecarConfig, args)
    dataset = Path(cfg.dataset) if cfg.dataset else default_dataset()
    output = Path(cfg.output) if cfg.output else None
    kind, gamma = "monte_carlo", cfg.gamma
    if cfg.bootstrap:
        from lab2048.data.bootstrap import bootstrap_gamma

        kind = "n_step" if cfg.n_step is not None else "lambda"
        gamma = bootstrap_gamma(Path(cfg.bootstrap), gamma)
        if gamma is None:
            print(f"lab2048: note: {cfg.bootstrap} has no value-target.json; using gamma "
                  f"{DEFAULT_GAMMA}", file=sys.stderr)
    sidecar = SidecarConfig(gamma=gamma or DEFAULT_GAMMA, reward_scale=cfg.reward_scale,
                            epsilon=cfg.epsilon, kind=kind, n=cfg.n_step or 0,
                            lam=cfg.lam or 0.0)
    meta = build_sidecar(dataset, sidecar, output=output, workers=cfg.workers,
                         overwrite=args.overwrite,
                         bootstrap=Path(cfg.bootstrap) if cfg.bootstrap else None)
    print(format_summary(meta, output or dataset))
    return 0


def _train(args: argparse.Namespace) -> int:
    cfg = load_train_config(args.config, args.set)
    from lab2048.train.trainer import train  # torch: only once the config is known good

    metrics = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(f"{cfg.train.out}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from lab2048.publish import publish

    print(f"published {publish(build_config(PublishConfig, args), overwrite=args.overwrite)}")
    return 0


def _annotate(args: argparse.Namespace) -> int:
    from lab2048.annotate.run import annotate, format_summary

    cfg = build_config(AnnotateConfig, args)
    manifest = annotate(cfg, resume=args.resume, overwrite=args.overwrite)
    print(format_summary(manifest, Path(cfg.out or cfg.dataset)))
    return 0


def _teacher_build_tables(args: argparse.Namespace) -> int:
    from lab2048.teacher import tables

    cfg = build_config(BuildTablesConfig, args)
    for formation, rank in (("tuple11", cfg.rank), ("tuple10", cfg.rank10)):
        if rank:
            path = tables.build(rank, cfg.out, progress=not cfg.quiet, formation=formation)
            print(f"{path}: {formation} tables of ranks {tables.min_rank(formation)}..{rank}, "
                  f"{tables.layout(rank, formation)[2]:,} entries")
    for path in tables.earlier_formats(cfg.out):
        print(f"{path}: a table of an earlier format, no longer read (delete it to free "
              f"{path.stat().st_size / 2**20:,.0f} MiB)")
    return 0


def _view(args: argparse.Namespace) -> int:
    from lab2048.viewer.app import serve

    return serve(build_config(ViewConfig, args))


def configure(p: argparse.ArgumentParser, config, run, *, overwrite: str = "",
              flags: bool = True) -> argparse.ArgumentParser:
    """A command's parser: its config's arguments (`add_config_args`), `--overwrite` with this
    help where it writes outputs, and its `run(args)` function."""
    add_config_args(p, config, flags=flags)
    if overwrite:
        p.add_argument("--overwrite", action="store_true", help=overwrite)
    p.set_defaults(run=run)
    return p


def command(sub, name: str, config, run, *, help: str, **kw) -> argparse.ArgumentParser:
    """A subcommand `name` (see `configure`), described by DESCRIPTIONS, else by its
    config's docstring."""
    p = sub.add_parser(name, help=help, description=DESCRIPTIONS.get(name, config.__doc__))
    return configure(p, config, run, **kw)


DESCRIPTIONS = {  # of the commands whose config has no docstring of its own (yet)
    "evaluate": """Play the same seeded games (identical spawns) with several agents: policy,
        value:depth=D, hybrid:top=K or hybrid:p=X, teacher, random, greedy, corner; report
        means with 95% intervals, reach rates, speed and paired differences; write games.csv,
        summary.json and agents.png to --out. With --dataset, score the agents' moves on
        recorded positions instead (agreement, regret, value R² and MAE).""",
    "annotate": """Run a model over a packed dataset and write, aligned 1:1 with its steps
        shards, the policy's move probabilities and argmax (annotations-NNNNN.npy), the value
        and the 1-ply Q of each move (annotations-value-NNNNN.npy), the value atoms of
        categorical heads (annotations-value-bins-NNNNN.npy) and annotation_manifest.json. Per
        shard; --resume continues an interrupted run.""",
    "view": """Serve a web page (http://127.0.0.1:8048 by default) to browse a dataset's runs
        step by step: the board, the teacher's and the model's moves and values,
        disagreements, and value rails (predicted value against the realised return). Ctrl-C
        stops it.""",
    "play": """Play seeded games with a baseline agent or a model's policy (--init DIR in
        process, --server ADDR through `lab2048 serve`); print a summary and optionally write
        games.csv, summary.json and scores.png to --out.""",
    "value-smoke": """Play short seeded rollouts with a model's policy and compare the value
        head's prediction at every step with the discounted return realised afterwards in the
        same rollout: MAE, correlation and explained variance in points, value-smoke.json,
        steps.csv and value-smoke.png.""",
    "generate": """Play seeded games with the expectimax teacher in worker processes and
        write a packed dataset. An interrupted run resumes when the same command is run
        again.""",
    "train": """Train the model on a packed dataset joined with its value sidecar: a TOML
        config (sections data, model, objective, optim, train; see configs/train/), then --set
        overrides. Writes metrics.jsonl, curves.png, checkpoint.pt and the init directory to
        train.out.""",
}


_VALUE_SIDECAR_OVERWRITE = "replace an existing sidecar"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab2048",
        description="Train, serve and study 2048-playing transformers.",
    )
    parser.add_argument("--version", action="version", version=f"lab2048 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    command(sub, "play", PlayConfig, _play, help="play games with an agent and summarise them",
            overwrite="replace existing outputs")
    command(sub, "evaluate", EvaluateConfig, _evaluate,
            help="compare agents on the same seeded games (or offline)",
            overwrite="replace an earlier evaluation's output (and discard a staged one)")
    command(sub, "serve", ServeConfig, _serve, help="serve a model over gRPC (micro-batched)")
    command(sub, "value-smoke", ValueSmokeConfig, _value_smoke,
            help="predicted values against realised returns", overwrite="replace existing outputs")
    command(sub, "replay", ReplayConfig, _replay,
            help="check the engine against macroxue/2048-ai text logs")
    command(sub, "check", CheckConfig, _check, help="validate a packed dataset and summarise it")
    command(sub, "generate", GenerateConfig, _generate,
            help="play teacher games into a packed dataset", overwrite="replace an existing "
            "dataset (and discard a staged run with other settings)")
    command(sub, "pack", PackConfig, _pack, help="import Macroxue logs into a packed dataset",
            overwrite="replace an existing dataset")
    command(sub, "value-sidecar", ValueSidecarConfig, _value_sidecar,
            help="rewards and discounted returns for a dataset",
            overwrite=_VALUE_SIDECAR_OVERWRITE)
    p = command(sub, "train", TrainConfig, _train, flags=False,
                help="train policy and value heads on a dataset and sidecar",
                overwrite="replace an existing run")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in train.out from its last checkpoint")
    command(sub, "publish", PublishConfig, _publish,
            help="copy a training run's init into the package's model (--init default)",
            overwrite="replace a published model")
    p = command(sub, "annotate", AnnotateConfig, _annotate,
                help="a model's outputs beside every step of a dataset",
                overwrite="replace existing annotations")
    p.add_argument("--resume", action="store_true",
                   help="continue annotations with the same settings, skipping finished shards")
    command(sub, "view", ViewConfig, _view,
            help="a web viewer of a dataset, its annotations and values")
    teacher = sub.add_parser("teacher", help="teacher utilities (build-tables)",
                             description="Utilities of the expectimax teacher.")
    actions = teacher.add_subparsers(dest="action", required=True, metavar="ACTION")
    configure(actions.add_parser("build-tables", help="build the strong teacher's tables",
                                 description=BuildTablesConfig.__doc__),
              BuildTablesConfig, _teacher_build_tables)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    try:
        return args.run(args)
    except UserError as e:
        print(f"lab2048: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lab2048: interrupted; outputs written so far are intact", file=sys.stderr)
        return 130


def value_sidecar_main() -> int:
    """The `value-sidecar` command: `lab2048 value-sidecar` under its own name."""
    parser = argparse.ArgumentParser(prog="value-sidecar", description=ValueSidecarConfig.__doc__)
    configure(parser, ValueSidecarConfig, _value_sidecar, overwrite=_VALUE_SIDECAR_OVERWRITE)
    return _run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
