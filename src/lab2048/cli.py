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
from lab2048.errors import UserError
from lab2048.play.config import PlayConfig


def _play(args: argparse.Namespace) -> int:
    from lab2048.play.evaluate import run

    run(build_config(PlayConfig, args), overwrite=args.overwrite)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab2048",
        description="Train, serve and study 2048-playing transformers.",
    )
    parser.add_argument("--version", action="version", version=f"lab2048 {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("play", help="play games with an agent and summarise them",
                       description="Play seeded games with a simple agent; print a summary and "
                       "optionally write games.csv, summary.json and scores.png to --out.")
    add_config_args(p, PlayConfig)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(run=_play)

    p = sub.add_parser("replay", help="check the engine against macroxue/2048-ai text logs",
                       description="Replay macroxue/2048-ai `-v` game logs (.txt or .txt.gz) "
                       "through the engine: every move, reward and the final position must "
                       "agree. Exits 1 if any game disagrees.")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.set_defaults(run=_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as e:
        print(f"lab2048: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lab2048: interrupted; outputs written so far are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
