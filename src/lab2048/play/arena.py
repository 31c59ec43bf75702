"""`lab2048 play`: play games with an agent, print a summary, write games.csv, summary.json and
scores.png.

Agents are the compiled baselines (agents.py) or a model's policy (model_agent.py: --init DIR
in process, --server ADDR through the inference server), which also prints periodic lines.

The summary reports exact scores (sums of rewards), moves, the share of games whose highest
tile reached each power of two from 256 up, why games ended, and the engine's speed.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from lab2048.engine.conventions import EndReason, tile_value
from lab2048.io import atomic_path, claim_outputs, write_json, write_text
from lab2048.play.agents import GameResults, play_games
from lab2048.play.config import MODEL_AGENT, PlayConfig

REACH_TILES = tuple(1 << k for k in range(8, 17))
OUTPUT_FILES = ("games.csv", "summary.json", "scores.png")


def summarize(res: GameResults) -> dict:
    scores = res.scores
    reach = {t: float(np.mean(res.highest >= t.bit_length() - 1)) for t in REACH_TILES}
    return {
        "agent": res.agent,
        "games": len(scores),
        "score": {
            "mean": float(scores.mean()),
            "median": float(np.median(scores)),
            "std": float(scores.std()),
            "min": int(scores.min()),
            "max": int(scores.max()),
        },
        "moves": {"mean": float(res.moves.mean()), "total": int(res.moves.sum())},
        "reach": {str(t): r for t, r in reach.items() if r > 0},
        "end_reasons": {EndReason(int(e)).label: int(c)
                        for e, c in zip(*np.unique(res.ends, return_counts=True), strict=True)},
        "seconds": res.seconds,
        "moves_per_second": float(res.moves.sum() / max(res.seconds, 1e-9)),
    }


def format_summary(s: dict) -> str:
    sc = s["score"]
    lines = [
        f"agent {s['agent']}: {s['games']} games, {s['moves']['total']:,} moves in "
        f"{s['seconds']:.2f} s ({s['moves_per_second']:,.0f} moves/s)",
        f"score   mean {sc['mean']:,.0f}   median {sc['median']:,.0f}   "
        f"min {sc['min']:,}   max {sc['max']:,}",
        "reached " + "   ".join(f"{t}: {r:.1%}" for t, r in s["reach"].items()),
        "ended   " + "   ".join(f"{k}: {v}" for k, v in s["end_reasons"].items()),
    ]
    return "\n".join(lines)


def games_csv(res: GameResults) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["seed", "score", "moves", "highest_tile", "end_reason"])
    for i in range(len(res.seeds)):
        w.writerow([int(res.seeds[i]), int(res.scores[i]), int(res.moves[i]),
                    tile_value(int(res.highest[i])), EndReason(int(res.ends[i])).label])
    return buf.getvalue()


def plot_scores(res: GameResults, path: Path) -> None:
    """Score histogram and highest-tile distribution, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.hist(res.scores, bins=min(40, max(5, len(res.scores) // 4)), color="#4c72b0")
    ax1.axvline(float(np.median(res.scores)), color="k", ls="--", lw=1, label="median")
    ax1.set(xlabel="score (sum of merge rewards)", ylabel="games",
            title=f"{res.agent}: scores of {len(res.scores)} games")
    ax1.legend()
    exps, counts = np.unique(res.highest, return_counts=True)
    ax2.bar([str(tile_value(int(e))) for e in exps], counts / len(res.highest), color="#dd8452")
    ax2.set(xlabel="highest tile", ylabel="share of games", title="highest tile reached")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run(cfg: PlayConfig, overwrite: bool = False) -> dict:
    out = Path(cfg.out) if cfg.out else None
    if out is not None:
        claim_outputs([out / name for name in OUTPUT_FILES], overwrite)
    seeds = np.arange(cfg.games, dtype=np.uint64) + np.uint64(cfg.seed)
    if cfg.agent == MODEL_AGENT:
        from lab2048.play.model_agent import open_predictor, play_model_games

        with open_predictor(cfg.init, cfg.server, cfg.device, cfg.threads) as predict:
            res, _ = play_model_games(predict, seeds, cfg.max_moves)
    else:
        res = play_games(cfg.agent, seeds, cfg.max_moves)
    summary = summarize(res)
    print(format_summary(summary))
    if out is not None:
        write_text(out / "games.csv", games_csv(res))
        write_json(out / "summary.json", {"config": vars(cfg), **summary})
        plot_scores(res, out / "scores.png")
        print(f"wrote {out}/{{{','.join(OUTPUT_FILES)}}}")
    return summary
