"""`lab2048`: one entry point, a subcommand per step of the pipeline.

Subcommands import their heavy modules (numba, matplotlib) only when they run, so `--help`
answers at once. Errors a user can fix (UserError) print as one line `lab2048: error: ...`
and exit 2; Ctrl-C exits 130 with earlier outputs intact.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab2048 import __version__
from lab2048.config import add_config_args, build_config
from lab2048.data.config import GenerateConfig
from lab2048.errors import UserError
from lab2048.play.config import PlayConfig, ValueSmokeConfig
from lab2048.teacher.config import MAX_TABLE_RANK, MIN_TABLE_RANK, PRESETS

PACK_FORMATS = ("macroxue-jsonl", "macroxue-text")


def _play(args: argparse.Namespace) -> int:
    from lab2048.play.evaluate import run

    run(build_config(PlayConfig, args), overwrite=args.overwrite)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from lab2048.serve.server import serve

    return serve(args.init, tcp=args.tcp, uds=args.uds, device=args.device,
                 max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, threads=args.threads)


def _value_smoke(args: argparse.Namespace) -> int:
    from lab2048.play.value_smoke import run

    run(build_config(ValueSmokeConfig, args), overwrite=args.overwrite)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from lab2048.data.macroxue_text import read_text_game, replay

    failed = 0
    for path in args.files:
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

    root = args.dataset or default_dataset()
    rows = Dataset(root).num_rows
    with progress_bar(not args.quiet, total=rows, unit="step", unit_scale=True,
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

    report = pack(args.input, args.out, fmt=args.format, workers=args.workers,
                  shard_rows=args.shard_rows, overwrite=args.overwrite)
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

    dataset = args.dataset or default_dataset()
    if args.dataset is None and args.output is None:
        raise UserError("the embedded dataset is read-only: pass --output DIR for its sidecar")
    cfg = SidecarConfig(gamma=args.gamma, reward_scale=args.reward_scale, epsilon=args.epsilon)
    meta = build_sidecar(dataset, cfg, output=args.output, workers=args.workers,
                         overwrite=args.overwrite)
    print(format_summary(meta, args.output or dataset))
    return 0


def _train(args: argparse.Namespace) -> int:
    from lab2048.train.config import load_train_config

    cfg = load_train_config(args.config, args.set)
    from lab2048.train.trainer import train

    metrics = train(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"{cfg.train.out}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return 0


def _teacher_build_tables(args: argparse.Namespace) -> int:
    from lab2048.teacher import tables

    path = tables.build(args.rank, args.out or "", progress=not args.quiet)
    print(f"{path}: {tables.FORMATION} table of rank {args.rank}, "
          f"{tables.entries(args.rank):,} entries")
    return 0


def _add_value_sidecar_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", type=Path, metavar="DIR",
                   help="packed dataset (default: the small one embedded in the package)")
    p.add_argument("--gamma", type=float, default=0.997, help="discount (default: 0.997)")
    p.add_argument("--reward-scale", type=float, default=1.0,
                   help="reward_scaled = reward x this (default: 1.0)")
    p.add_argument("--epsilon", type=float, default=0.001,
                   help="eps of the h transform of return_scaled (default: 0.001)")
    p.add_argument("--workers", type=int, default=0, help="threads (0: all cores)")
    p.add_argument("--output", type=Path, metavar="DIR",
                   help="where values-NNNNN.npy and values.json go (default: the dataset)")
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
    p.add_argument("--init", type=Path, required=True, metavar="DIR", help="model init directory")
    p.add_argument("--tcp", metavar="HOST:PORT", help="TCP address (default: 127.0.0.1:50051)")
    p.add_argument("--uds", metavar="PATH", help="Unix domain socket instead of TCP")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    p.add_argument("--max-batch", type=int, default=256, metavar="N",
                   help="boards per forward pass at most (default: 256)")
    p.add_argument("--max-wait-ms", type=float, default=0.5, metavar="T",
                   help="how long a batch waits to fill after its first board (default: 0.5;"
                   " on a CPU, boards arriving during a forward fill the next batch anyway)")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch CPU threads (default 0: torch's default, one per core)")
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
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.set_defaults(run=_replay)

    p = sub.add_parser("check", help="validate a packed dataset and summarise it",
                       description="Check a packed dataset (dtype, run contiguity, step order, "
                       "runs table, legality of every move, boards following from move + one "
                       "spawn, ev_legal against the board) and print a summary. Problems are "
                       "listed per run; exits 1 if there are any. Without DATASET, checks the "
                       "small dataset embedded in the package.")
    p.add_argument("dataset", nargs="?", type=Path, metavar="DATASET")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
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
    p.add_argument("--input", type=Path, required=True, metavar="LOGDIR")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--format", choices=PACK_FORMATS, default=PACK_FORMATS[0])
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: all cores)")
    p.add_argument("--shard-rows", type=int, default=1 << 20, help="rows per steps shard")
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
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML config")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set train.steps=500")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in train.out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run")
    p.set_defaults(run=_train)

    p = sub.add_parser("teacher", help="teacher utilities (build-tables)",
                       description="Utilities of the expectimax teacher.")
    teacher = p.add_subparsers(dest="teacher_command", required=True, metavar="ACTION")
    p = teacher.add_parser("build-tables", help="build the strong teacher's formation table",
                           description="Compute the formation table the strong teacher looks "
                           "moves up in (exhaustive expectimax; see docs/teacher.md for time, "
                           "memory and disk). Shows progress; a killed build resumes when run "
                           "again; an existing complete table is checked and kept.")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="table directory (default: $XDG_CACHE_HOME/lab2048/teacher-tables)")
    strong_rank = PRESETS["strong"]["table_rank"]
    p.add_argument("--rank", type=int, default=strong_rank,
                   choices=range(MIN_TABLE_RANK, MAX_TABLE_RANK + 1),
                   metavar=f"{{{MIN_TABLE_RANK}..{MAX_TABLE_RANK}}}",
                   help="table rank r: the formation builds a 2^(r+1) tile in its target cell "
                   f"(default: {strong_rank}, the strong preset's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_teacher_build_tables)
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
