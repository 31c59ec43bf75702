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
from lab2048.config import add_config_args, build_config
from lab2048.data.config import (
    CheckConfig,
    GenerateConfig,
    PackConfig,
    ReplayConfig,
    ValueSidecarConfig,
)
from lab2048.errors import UserError
from lab2048.play.config import PlayConfig, ValueSmokeConfig
from lab2048.serve.config import ServeConfig
from lab2048.train.config import TrainConfig, load_train_config


def _play(args: argparse.Namespace) -> int:
    from lab2048.play.evaluate import run

    run(build_config(PlayConfig, args), overwrite=args.overwrite)
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

    cfg = build_config(ValueSidecarConfig, args)
    dataset = Path(cfg.dataset) if cfg.dataset else default_dataset()
    output = Path(cfg.output) if cfg.output else None
    sidecar = SidecarConfig(gamma=cfg.gamma, reward_scale=cfg.reward_scale, epsilon=cfg.epsilon)
    meta = build_sidecar(dataset, sidecar, output=output, workers=cfg.workers,
                         overwrite=args.overwrite)
    print(format_summary(meta, output or dataset))
    return 0


def _train(args: argparse.Namespace) -> int:
    cfg = load_train_config(args.config, args.set)
    from lab2048.train.trainer import train  # torch: only once the config is known good

    metrics = train(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"{cfg.train.out}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return 0


def _add_value_sidecar_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p, ValueSidecarConfig)
    p.add_argument("--overwrite", action="store_true", help="replace an existing sidecar")
    p.set_defaults(run=_value_sidecar)


_VALUE_SIDECAR_HELP = ("Compute per-step rewards and discounted returns (raw, and h-transformed "
                       "of the scaled rewards) aligned 1:1 with a packed dataset's shards: "
                       "values-NNNNN.npy and values.json.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab2048",
        description="Train, serve and study 2048-playing transformers.",
    )
    parser.add_argument("--version", action="version", version=f"lab2048 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("play", help="play games with an agent and summarise them",
                       description="Play seeded games with a baseline agent or a model's policy "
                       "(--init DIR in process, --server ADDR through `lab2048 serve`); print "
                       "a summary and optionally write games.csv, summary.json and scores.png "
                       "to --out.")
    add_config_args(p, PlayConfig)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(run=_play)

    p = sub.add_parser("serve", help="serve a model over gRPC (micro-batched)",
                       description="Serve a model init directory with the gRPC Inference "
                       "service (proto/lab2048/inference/v1/inference.proto) and the standard "
                       "health service. Concurrent requests share forward passes. Listens on "
                       "127.0.0.1:50051 unless told otherwise; SIGTERM or SIGINT shut it down "
                       "gracefully.")
    add_config_args(p, ServeConfig)
    p.set_defaults(run=_serve)

    p = sub.add_parser("value-smoke", help="predicted values against realised returns",
                       description="Play short seeded rollouts with a model's policy and compare "
                       "the value head's prediction at every step with the discounted return "
                       "realised afterwards in the same rollout: MAE, correlation and explained "
                       "variance in points, value-smoke.json, steps.csv and value-smoke.png.")
    add_config_args(p, ValueSmokeConfig)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(run=_value_smoke)

    p = sub.add_parser("replay", help="check the engine against macroxue/2048-ai text logs",
                       description="Replay macroxue/2048-ai `-v` game logs (.txt or .txt.gz) "
                       "through the engine: every move, reward and the final position must "
                       "agree. Exits 1 if any game disagrees.")
    add_config_args(p, ReplayConfig)
    p.set_defaults(run=_replay)

    p = sub.add_parser("check", help="validate a packed dataset and summarise it",
                       description="Check a packed dataset (dtype, run contiguity, step order, "
                       "runs table, legality of every move, boards following from move + one "
                       "spawn, ev_legal against the board) and print a summary. Problems are "
                       "listed per run; exits 1 if there are any. Without DATASET, checks the "
                       "small dataset embedded in the package.")
    add_config_args(p, CheckConfig)
    p.set_defaults(run=_check)

    p = sub.add_parser("generate", help="play teacher games into a packed dataset",
                       description="Play seeded games with the expectimax teacher in worker "
                       "processes and write a packed dataset. An interrupted run resumes when "
                       "the same command is run again.")
    add_config_args(p, GenerateConfig)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset (and discard a staged run with other "
                   "settings)")
    p.set_defaults(run=_generate)

    p = sub.add_parser("pack", help="import Macroxue logs into a packed dataset",
                       description="Import Macroxue logs (NAME.jsonl.gz + NAME.meta.json) or "
                       "macroxue/2048-ai `-v` text output (.txt, .txt.gz) into a packed dataset. "
                       "Malformed or inconsistent games are reported and skipped; the exit "
                       "status is 1 if any was.")
    add_config_args(p, PackConfig)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.set_defaults(run=_pack)

    p = sub.add_parser("value-sidecar", help="rewards and discounted returns for a dataset",
                       description=_VALUE_SIDECAR_HELP)
    _add_value_sidecar_args(p)

    p = sub.add_parser("train", help="train policy and value heads on a dataset and sidecar",
                       description="Train the model on a packed dataset joined with its value "
                       "sidecar: a TOML config (sections data, model, objective, optim, train; "
                       "see configs/train/), then --set overrides. Writes metrics.jsonl, "
                       "curves.png, checkpoint.pt and the init directory to train.out.")
    add_config_args(p, TrainConfig, flags=False)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in train.out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run")
    p.set_defaults(run=_train)
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
    parser = argparse.ArgumentParser(prog="value-sidecar", description=_VALUE_SIDECAR_HELP)
    _add_value_sidecar_args(parser)
    return _run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
