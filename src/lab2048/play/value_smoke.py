"""`lab2048 value-smoke`: does the value head predict the return the model's own play earns?

Plays short seeded rollouts with a model agent (`--agent`: the policy's masked argmax by
default, or the value search a value head was trained for), logs the predicted value V(s_t)
of every board before its move, then computes
the realised discounted return of the same rollout afterwards, backwards in float64:

    G_t = r_t + gamma G_(t+1),   G_T = 0 at the rollout's last move

and reports, in points: MAE |V - G|, Pearson correlation, explained variance
1 - Var(G - V) / Var(G), over all steps and over the steps whose return is complete (the game
ended within the rollout, or the discounted weight gamma^(moves left) of what a truncated
rollout misses is below 1%). γ is the value head's own (its init's value-target.json, or the
server's Describe); --gamma serves inits that record none, and one that contradicts the record
is refused. Writes value-smoke.json, steps.csv and value-smoke.png
(predicted and realised along a few rollouts, and predicted against realised for all steps).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from lab2048.data.returns import discounted_returns
from lab2048.engine.batch import to_exponents
from lab2048.engine.conventions import EndReason
from lab2048.errors import UserError
from lab2048.io import atomic_path, claim_outputs, write_json, write_text
from lab2048.play.agents import make_agent
from lab2048.play.config import ValueSmokeConfig, parse_agent
from lab2048.play.games import play_lockstep
from lab2048.play.predictor import open_predictor, value_definition

OUTPUT_FILES = ("value-smoke.json", "steps.csv", "value-smoke.png")
TAIL_WEIGHT = 0.01  # a truncated return counts as complete when gamma^(moves left) < this


def rollout_returns(rewards: np.ndarray, lengths: np.ndarray, gamma: float) -> np.ndarray:
    """G_t per rollout [G, T] (NaN past a rollout's length) from rewards [G, T]: each rollout's
    `data.returns.discounted_returns`, G_T = 0 after its last move."""
    out = np.full(rewards.shape, np.nan)
    for g, n in enumerate(lengths):
        out[g, :n] = discounted_returns(np.ascontiguousarray(rewards[g, :n]), gamma, 0.0)
    return out


class _WithValues:
    """An agent's moves, keeping the value of every board before its move."""

    def __init__(self, agent, predictor, games: int, moves: int):
        self.agent, self.name, self.predictor = agent, agent.name, predictor
        self.values = np.full((games, moves), np.nan)  # V(s_t) per game and step
        self.rewards = np.zeros((games, moves))  # r_t
        self._steps = self._values = None

    @property
    def boards_evaluated(self) -> int:
        return self.agent.boards_evaluated

    def choose(self, boards, masks, legal, seeds, move_numbers):
        self._values = self.predictor.values(to_exponents(boards, masks))
        self._steps = move_numbers.copy()
        return self.agent.choose(boards, masks, legal, seeds, move_numbers)

    def record(self, idx, moves, rewards) -> None:
        self.values[idx, self._steps] = self._values
        self.rewards[idx, self._steps] = rewards


def metrics(pred: np.ndarray, real: np.ndarray) -> dict:
    """MAE, bias, correlation and explained variance of predictions against realised values."""
    if len(pred) < 2:
        return {"steps": len(pred)}
    err = real - pred
    var = float(np.var(real))
    corr = float(np.corrcoef(pred, real)[0, 1]) if np.std(pred) > 0 and var > 0 else float("nan")
    return {"steps": len(pred), "mae": float(np.mean(np.abs(err))),
            "bias": float(np.mean(pred - real)), "correlation": corr,
            "explained_variance": 1 - float(np.var(err)) / var if var > 0 else float("nan"),
            "mean_realised": float(np.mean(real)), "mean_predicted": float(np.mean(pred))}


def run(cfg: ValueSmokeConfig, overwrite: bool = False) -> dict:
    out = Path(cfg.out) if cfg.out else None
    if out is not None:
        claim_outputs([out / name for name in OUTPUT_FILES], overwrite)
    seeds = np.arange(cfg.games, dtype=np.uint64) + np.uint64(cfg.seed)
    with open_predictor(cfg.init, cfg.server, cfg.device, cfg.threads) as predictor:
        predictor.require_value()
        gamma, afterstate = value_definition(predictor, cfg.gamma)
        if afterstate:
            raise UserError(f"{cfg.init or cfg.server}: an afterstate value head values the "
                            "board after a move; value-smoke compares values of boards")
        player = make_agent(parse_agent(cfg.agent), predictor, gamma, afterstate)
        agent = _WithValues(player, predictor, cfg.games, cfg.moves)
        res = play_lockstep(agent, seeds, cfg.moves, on_ply=agent.record)
    traj = agent
    lengths = res.moves
    returns = rollout_returns(traj.rewards, lengths, gamma)
    steps = np.arange(cfg.moves)[None, :]
    played = steps < lengths[:, None]
    ended = np.isin(res.ends, (int(EndReason.NO_MOVES), int(EndReason.TILE_LIMIT)))
    complete = played & (ended[:, None] | (gamma ** (lengths[:, None] - steps) < TAIL_WEIGHT))
    summary = {
        "games": cfg.games, "agent": cfg.agent, "gamma": gamma, "moves_per_rollout": cfg.moves,
        "rollout_moves": int(lengths.sum()), "games_ended": int(ended.sum()),
        "mean_score": float(res.scores.mean()),
        "all_steps": metrics(traj.values[played], returns[played]),
        "complete_returns": metrics(traj.values[complete], returns[complete]),
    }
    print(format_summary(summary))
    if out is not None:
        write_json(out / "value-smoke.json", {"config": vars(cfg), **summary})
        write_text(out / "steps.csv", _steps_csv(seeds, lengths, traj, returns, complete))
        plot(traj.values, returns, lengths, complete, out / "value-smoke.png", gamma)
        print(f"wrote {out}/{{{','.join(OUTPUT_FILES)}}}")
    return summary


def format_summary(s: dict) -> str:
    lines = [f"value smoke: {s['games']} rollouts of {s['agent']}, up to "
             f"{s['moves_per_rollout']} moves "
             f"({s['rollout_moves']:,} moves, {s['games_ended']} games ended), gamma {s['gamma']}"]
    for key, name in (("all_steps", "all steps"), ("complete_returns", "complete returns")):
        m = s[key]
        if "mae" not in m:
            lines.append(f"{name:17s} {m['steps']} steps: too few to compare")
            continue
        lines.append(f"{name:17s} {m['steps']:,} steps   MAE {m['mae']:,.1f} points   "
                     f"bias {m['bias']:+,.1f}   correlation {m['correlation']:.3f}   "
                     f"explained variance {m['explained_variance']:.3f}")
    return "\n".join(lines)


def _steps_csv(seeds, lengths, traj, returns, complete) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["seed", "step", "reward", "predicted", "realised", "complete"])
    for g, n in enumerate(lengths):
        for t in range(int(n)):
            w.writerow([int(seeds[g]), t, int(traj.rewards[g, t]), f"{traj.values[g, t]:.3f}",
                        f"{returns[g, t]:.3f}", int(complete[g, t])])
    return buf.getvalue()


def plot(values, returns, lengths, complete, path: Path, gamma: float, rollouts: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for g in range(min(rollouts, len(lengths))):
        n = int(lengths[g])
        (line,) = ax1.plot(np.arange(n), returns[g, :n], lw=1.2, label=f"realised, rollout {g}")
        ax1.plot(np.arange(n), values[g, :n], lw=1, ls="--", color=line.get_color(),
                 label=f"predicted, rollout {g}")
    ax1.set(xlabel="step of the rollout", ylabel="points",
            title=f"value along the rollout (gamma {gamma})")
    ax1.legend(fontsize=7)
    played = np.arange(values.shape[1])[None, :] < lengths[:, None]
    ax2.scatter(returns[played & ~complete], values[played & ~complete], s=3, alpha=0.4,
                color="#999999", label="truncated return")
    ax2.scatter(returns[complete], values[complete], s=3, alpha=0.5, color="#4c72b0",
                label="complete return")
    hi = float(np.nanmax([np.nanmax(returns[played]), np.nanmax(values[played]), 1.0]))
    ax2.plot([0, hi], [0, hi], color="k", lw=0.8, ls=":")
    ax2.set(xlabel="realised discounted return (points)", ylabel="predicted value (points)",
            title="predicted vs realised, every step")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
