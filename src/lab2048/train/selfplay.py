"""`train.mode = "td"`: self-play rounds with TD(λ) value targets and a teacher-distilled policy.

    lab2048 train --config configs/train/td.toml      # train.init: the model the rounds start from

Round r, in the run directory (train.out):

    round-RRR/buffer/   the replay buffer: a packed dataset of the last `selfplay.buffer` rounds'
                        games (`lab2048 generate --agent SPEC --init CURRENT --label teacher
                        --include PREVIOUS --include-where "id > ..."`), and its value sidecar:
                        TD(λ) returns bootstrapped on CURRENT's values (`value-sidecar
                        --bootstrap CURRENT --lambda L`)
    round-RRR/train/    a `joint` run from CURRENT on that buffer (train.steps steps): the value
                        head fits the λ-returns, the policy the teacher's moves
                        (objective.policy_label = "teacher"); its init is the next CURRENT
    selfplay.jsonl      a line a round ("kind": "val"): the mean score of its games, the
                        round's last validation metrics
    selfplay.png        the games' mean score by round
    init/               the last round's init, its training-config.json this run's config

Choices
- Every piece is a project command's function on files (generate, build_sidecar, train), so
  every game, target and model of every round stays on disk, inspectable with `lab2048 check`,
  `annotate` and `evaluate`, and a killed run resumes: a round's finished parts are kept
  (generate resumes its staged games, the sidecar is rebuilt only if missing, training
  resumes from its checkpoint).
- The games are played by the agent spec `selfplay.agent` of the current model (value search
  by default: the states the value head must rank are those its own search reaches) on seeds
  seed + r·games ..; the teacher (default settings) labels each state, so the policy is
  distilled from the teacher on the student's own states (DAgger) while the value head learns
  from the student's realised rewards.
- The replay buffer is a sliding window of whole games: round r's dataset copies the runs of
  round r - 1's that belong to the last `buffer` - 1 rounds (run ids grow by `games` a round),
  then adds its own games. TD(λ) targets are recomputed on the whole buffer with the current
  model each round (fresh bootstrap values, the λ-return of the data as it stands).
- The value target's γ is the starting init's (value-target.json); objective.target_kind
  must be "lambda".
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

from lab2048.errors import UserError
from lab2048.io import atomic_path, publish_dir, temp_dir_beside
from lab2048.train.config import TrainConfig, model_config

LOG, PLOT = "selfplay.jsonl", "selfplay.png"


def check_config(cfg: TrainConfig) -> None:
    o = cfg.objective
    if o.target_kind != "lambda":
        raise UserError("train.mode = 'td' trains on TD(lambda) returns: set "
                        "objective.target_kind = 'lambda'")
    if o.policy_weight > 0 and o.policy_label != "teacher":
        raise UserError("train.mode = 'td' distills the policy from the teacher: set "
                        "objective.policy_label = 'teacher' (or objective.policy_weight = 0)")
    if not model_config(cfg).value_head.enabled:
        raise UserError("train.mode = 'td' needs a model with a value head")


def round_dir(out: Path, r: int) -> Path:
    return out / f"round-{r:03d}"


def run_selfplay(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Play, target and train `selfplay.rounds` rounds (module docstring); the last round's
    validation metrics."""
    from lab2048.data.config import GenerateConfig
    from lab2048.data.generate import generate
    from lab2048.data.sidecar import SidecarConfig, build_sidecar
    from lab2048.train.trainer import train
    from lab2048.value_target import DEFAULT_GAMMA, read_value_target

    check_config(cfg)
    sp, t = cfg.selfplay, cfg.train
    out = Path(t.out)
    _claim(out, resume, overwrite)
    current = Path(t.init)
    target = read_value_target(current)
    gamma = target.check_gamma(cfg.objective.gamma, current / "value-target.json") \
        if target else DEFAULT_GAMMA
    log: list[dict] = _read_log(out / LOG) if resume else []
    last: dict = {}
    for r in range(sp.rounds):
        rd = round_dir(out, r)
        buffer, run = rd / "buffer", rd / "train"
        if r < len(log):  # finished before an interruption
            current = run / "init"
            continue
        print(f"round {r + 1}/{sp.rounds}: games of {sp.agent} ({current})", file=sys.stderr)
        first_kept = (r - sp.buffer + 1) * sp.games  # run ids above this stay in the buffer
        if not (buffer / "metadata.db").exists():
            generate(GenerateConfig(
                out=str(buffer), games=sp.games, seed=sp.seed + r * sp.games, workers=1,
                max_moves=sp.max_moves, agent=sp.agent, init=str(current),
                include=str(round_dir(out, r - 1) / "buffer") if r else "",
                include_where=f"id > {first_kept}" if r and first_kept > 0 else "",
                device="cpu" if t.device == "auto" else t.device, threads=t.threads or 1),
                progress=t.progress)
        if not (buffer / "values.json").exists():
            build_sidecar(buffer, SidecarConfig(gamma=gamma, kind="lambda", lam=sp.lam),
                          workers=1, progress=t.progress, bootstrap=current)
        round_cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, dataset=str(buffer), sidecar=""),
            objective=dataclasses.replace(cfg.objective, gamma=gamma),
            train=dataclasses.replace(t, mode="joint", init=str(current), out=str(run)))
        last = train(round_cfg, resume=(run / "checkpoint.pt").exists(), overwrite=True)
        current = run / "init"
        log.append({"kind": "val", "round": r, "games": sp.games,
                    **_buffer_figures(buffer, r * sp.games), **last})
        _write_log(out / LOG, log)
        _plot(log, out / PLOT)
    _plot(log, out / PLOT)
    tmp = temp_dir_beside(out / "init")
    shutil.copytree(current, tmp, dirs_exist_ok=True)
    (tmp / "training-config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    publish_dir(tmp, out / "init")
    return {**last, "rounds": len(log)}


def _claim(out: Path, resume: bool, overwrite: bool) -> None:
    """A fresh run needs an empty train.out, or --overwrite of an earlier self-play run."""
    if resume or not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace it, or --resume)")
    if not (out / LOG).exists() and not (out / "round-000").exists():
        raise UserError(f"{out}: not a self-play run; --overwrite replaces only those")
    shutil.rmtree(out)


def _buffer_figures(buffer: Path, last_id: int) -> dict:
    """The mean score of the round's own games (the buffer's runs with ids above `last_id`,
    the previous round's largest) and the runs the buffer holds."""
    from lab2048.data.dataset import read_runs

    runs = read_runs(buffer / "metadata.db", ("id", "max_score"))
    mine = runs["id"] > last_id
    return {"mean_score": float(runs["max_score"][mine].mean()), "buffer_runs": len(runs["id"])}


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_log(path: Path, log: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in log))


def _plot(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["round"] + 1 for r in log], [r["mean_score"] for r in log], "o-")
    ax.set_xlabel("round")
    ax.set_ylabel("mean score of the round's games")
    ax.set_title("self-play")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
