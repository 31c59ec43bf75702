"""`lab2048 evaluate` and `lab2048 play`: agents play the same seeded games, and the summary.

    lab2048 evaluate --agents policy,value:depth=1,hybrid:top=2,greedy --init DIR --games 64
    lab2048 play --agent greedy --games 16            # one agent: the same loop and summary

Choices
- Every agent plays seeds seed..seed+games-1 with the engine's counter-based spawns, through
  the one lockstep loop (play/games.py): results are paired by seed.
- Per agent: the mean score with its 95% t interval, the median, the share of games reaching
  each tile from 2048 to 65536 with Wilson intervals, moves, moves/s and the boards the model
  valued per move; between agents, the paired mean difference over seeds with its interval
  (play/stats.py).
- Outputs: games.csv (a row per agent and seed), summary.json (`"kind": "evaluation"`) and
  agents.png (score distributions and reach rates side by side), written into a temporary
  directory and renamed into place. `--overwrite` replaces only an earlier evaluation's
  directory (one whose summary.json says so), never another directory.
- Each finished game is appended (and flushed) to a staging file beside --out,
  `.NAME.evaluate-staging.jsonl`, whose first line records what makes the games what they are
  (seeds, move limit, the model's weights, γ); `--resume` plays only the games it lacks, so an
  interrupted evaluation ends with the result of an uninterrupted one. A torn last line (a
  kill mid-write) is dropped. The staging file goes when the outputs are published.
- Speed: each game record carries its agent's running totals (moves, seconds, boards valued)
  at that moment, so moves/s survives a resume (the time of unfinished games lost to an
  interruption is not counted, nor are their moves).
- With --ray ADDRESS (and --init) the games go to Ray actors that each load the init's files:
  chunks of seeds (about four an actor), each played in lockstep there, their games staged here
  as chunks come back, so --resume and the outputs are as above. games.csv is the same bytes as
  a local run on the same device (the model's rows do not depend on the batch on a CPU);
  moves/s sums the actors' seconds.
- `lab2048 play` is the one-agent case with its own outputs (games.csv, summary.json,
  scores.png; any of them replaced only with --overwrite).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from lab2048.engine.conventions import EndReason, tile_value
from lab2048.errors import UserError
from lab2048.io import (
    atomic_files,
    atomic_path,
    claim_outputs,
    disk_errors,
    progress_bar,
    publish_dir,
    temp_dir_beside,
    write_json,
    write_text,
)
from lab2048.play.agents import make_agent
from lab2048.play.config import MODEL_AGENT, AgentSpec, EvaluateConfig, PlayConfig
from lab2048.play.games import GameResults, play_lockstep
from lab2048.play.predictor import open_predictor, value_definition
from lab2048.play.stats import mean_interval, paired_difference, wilson_interval

REACH_TILES = tuple(1 << k for k in range(11, 17))  # 2048 .. 65536
PLAY_REACH_TILES = tuple(1 << k for k in range(8, 17))
EVALUATE_FILES = ("games.csv", "summary.json", "agents.png")
PLAY_FILES = ("games.csv", "summary.json", "scores.png")
KIND = "evaluation"


# ---------------------------------------------------------------------------------------------
# Summaries


def summarize(res: GameResults, timing: dict | None = None,
              reach_tiles: tuple[int, ...] = REACH_TILES) -> dict:
    """One agent's games: score statistics with intervals, reach rates, speed."""
    scores = res.scores
    mean, lo, hi = mean_interval(scores)
    n = len(scores)
    reach = {}
    for t in reach_tiles:
        p, a, b = wilson_interval(int(np.sum(res.highest >= t.bit_length() - 1)), n)
        reach[str(t)] = {"rate": p, "ci95": [a, b]}
    timing = timing or {"moves": int(res.moves.sum()), "seconds": res.seconds,
                        "boards": res.boards_evaluated}
    return {
        "agent": res.agent,
        "games": n,
        "score": {"mean": mean, "ci95": [lo, hi], "median": float(np.median(scores)),
                  "std": float(scores.std()), "min": int(scores.min()), "max": int(scores.max())},
        "moves": {"mean": float(res.moves.mean()), "total": int(res.moves.sum())},
        "reach": reach,
        "end_reasons": {EndReason(int(e)).label: int(c)
                        for e, c in zip(*np.unique(res.ends, return_counts=True), strict=True)},
        "seconds": timing["seconds"],
        "moves_per_second": timing["moves"] / max(timing["seconds"], 1e-9),
        "boards_per_move": timing["boards"] / max(timing["moves"], 1),
    }


def paired(results: list[GameResults]) -> list[dict]:
    """Every pair of agents: the mean score difference over seeds with its 95% interval."""
    out = []
    for i, a in enumerate(results):
        for b in results[i + 1:]:
            mean, lo, hi = paired_difference(a.scores, b.scores)
            out.append({"a": a.agent, "b": b.agent, "mean_difference": mean, "ci95": [lo, hi]})
    return out


def format_play(s: dict) -> str:
    sc = s["score"]
    reached = [(t, r["rate"]) for t, r in s["reach"].items() if r["rate"] > 0]
    return "\n".join([
        f"agent {s['agent']}: {s['games']} games, {s['moves']['total']:,} moves in "
        f"{s['seconds']:.2f} s ({s['moves_per_second']:,.0f} moves/s)",
        f"score   mean {sc['mean']:,.0f} (95% CI {sc['ci95'][0]:,.0f} to {sc['ci95'][1]:,.0f})"
        f"   median {sc['median']:,.0f}   min {sc['min']:,}   max {sc['max']:,}",
        "reached " + "   ".join(f"{t}: {r:.1%}" for t, r in reached),
        "ended   " + "   ".join(f"{k}: {v}" for k, v in s["end_reasons"].items()),
    ])


def format_evaluation(summary: dict) -> str:
    agents = summary["agents"]
    width = max(8, *(len(a) for a in agents))
    tiles = [t for t in map(str, REACH_TILES)
             if any(s["reach"][t]["rate"] > 0 for s in agents.values())] or ["2048"]
    head = (f"{'agent':{width}}  {'mean':>8} {'95% CI':>17} {'median':>8}  "
            + " ".join(f"{t:>6}" for t in tiles) + f" {'moves':>7} {'moves/s':>8} {'boards/mv':>9}")
    lines = [f"{summary['games']} games per agent, seeds {summary['seed']}.."
             f"{summary['seed'] + summary['games'] - 1}", head]
    for name, s in agents.items():
        sc = s["score"]
        lines.append(
            f"{name:{width}}  {sc['mean']:8,.0f} {sc['ci95'][0]:8,.0f}..{sc['ci95'][1]:<8,.0f}"
            f"{sc['median']:8,.0f}  "
            + " ".join(f"{s['reach'][t]['rate']:6.0%}" for t in tiles)
            + f" {s['moves']['mean']:7,.0f} {s['moves_per_second']:8,.0f}"
            f" {s['boards_per_move']:9,.1f}")
    first = next(iter(agents))
    if len(agents) > 1:
        lines.append(f"paired differences of the mean score from {first} (same seeds), 95% CI "
                     "(every pair: summary.json):")
        for p in (p for p in summary["paired"] if p["a"] == first):
            lines.append(f"  {p['b']} - {first}: {-p['mean_difference']:+,.0f} "
                         f"({-p['ci95'][1]:+,.0f} to {-p['ci95'][0]:+,.0f})")
    return "\n".join(lines)


def games_csv(results: list[GameResults], with_agent: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow((["agent"] if with_agent else []) + ["seed", "score", "moves", "highest_tile",
                                                     "end_reason"])
    for res in results:
        for i in range(len(res.seeds)):
            w.writerow(([res.agent] if with_agent else []) + [
                int(res.seeds[i]), int(res.scores[i]), int(res.moves[i]),
                tile_value(int(res.highest[i])), EndReason(int(res.ends[i])).label])
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """Into `path` directly: callers write into temporaries (atomic_files, temp_dir_beside)."""
    fig.savefig(path, format="png", dpi=100)


def plot_agents(results: list[GameResults], summaries: dict, path: Path) -> None:
    """Score distributions (box and every game) and reach rates with Wilson intervals."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(10, 2.2 * len(results) + 5), 4.5))
    names = [r.agent for r in results]
    ax1.boxplot([r.scores for r in results], showfliers=False)
    ax1.set_xticks(range(1, len(names) + 1), names)
    rng = np.random.default_rng(0)
    for k, r in enumerate(results):
        ax1.scatter(k + 1 + rng.uniform(-0.15, 0.15, len(r.scores)), r.scores, s=6, alpha=0.5)
        s = summaries[r.agent]["score"]
        ax1.errorbar(k + 1.3, s["mean"], yerr=[[s["mean"] - s["ci95"][0]],
                                               [s["ci95"][1] - s["mean"]]], fmt="D", color="k",
                     ms=4, capsize=3)
    counts = sorted({len(r.scores) for r in results})
    games = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    ax1.set(ylabel="score", title=f"scores of {games} games (mean, 95% CI: ◆)")
    ax1.tick_params(axis="x", labelrotation=20)
    top = max(11, max(int(r.highest.max()) for r in results))  # the four tiles up to the
    exps = range(top - 3, top + 1)  # largest reached, 2048 at least
    tiles = [str(1 << e) for e in exps]
    width = 0.8 / len(results)
    for k, r in enumerate(results):
        ci = np.array([wilson_interval(int(np.sum(r.highest >= e)), len(r.highest))
                       for e in exps])
        rates = ci[:, 0]
        ax2.bar(np.arange(len(tiles)) + k * width, rates, width, capsize=2, label=r.agent,
                yerr=[np.maximum(0, rates - ci[:, 1]), np.maximum(0, ci[:, 2] - rates)])
    ax2.set_xticks(np.arange(len(tiles)) + 0.4 - width / 2, tiles)
    ax2.set(xlabel="tile reached", ylabel="share of games", ylim=(0, 1),
            title="reach rates (95% Wilson intervals)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_scores(res: GameResults, path: Path) -> None:
    """One agent: score histogram and highest-tile distribution, side by side."""
    plt = _pyplot()
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
    _save(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# lab2048 play


def open_model(cfg, needed: bool):
    if not needed:
        return contextlib.nullcontext(None)
    return open_predictor(cfg.init, cfg.server, cfg.device, cfg.threads)


def run_play(cfg: PlayConfig, overwrite: bool = False) -> dict:
    out = Path(cfg.out) if cfg.out else None
    if out is not None:
        claim_outputs([out / name for name in PLAY_FILES], overwrite)
    seeds = np.arange(cfg.games, dtype=np.uint64) + np.uint64(cfg.seed)
    with open_model(cfg, cfg.agent == MODEL_AGENT) as predictor:
        agent = make_agent(cfg.spec, predictor)
        with progress_bar(total=cfg.games, unit="game", desc=cfg.agent) as bar:
            res = play_lockstep(agent, seeds, cfg.max_moves, on_end=lambda i, r: bar.update())
    res.agent = cfg.agent
    summary = summarize(res, reach_tiles=PLAY_REACH_TILES)
    print(format_play(summary))
    if out is not None:
        paths = [out / name for name in PLAY_FILES]
        with atomic_files(paths) as (games, summary_json, scores):  # all three or none
            with disk_errors(paths[0]):
                games.write_text(games_csv([res], with_agent=False))
            with disk_errors(paths[1]):
                summary_json.write_text(json.dumps({"config": vars(cfg), **summary}, indent=2)
                                        + "\n")
            with disk_errors(paths[2]):
                plot_scores(res, scores)
        print(f"wrote {out}/{{{','.join(PLAY_FILES)}}}")
    return summary


# ---------------------------------------------------------------------------------------------
# lab2048 evaluate


def check_out(out: Path, overwrite: bool) -> None:
    """An --out that exists is replaced only with --overwrite, and only if it is an earlier
    evaluation's output (or empty)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if not any(out.iterdir()):
        return
    try:
        kind = json.loads((out / "summary.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != KIND:
        raise UserError(f"{out}: exists and is not an evaluation output; not replacing it")
    if not overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace it)")


def staging_path(out: Path) -> Path:
    return out.parent / f".{out.name}.evaluate-staging.jsonl"


def _weights_fingerprint(init: str) -> str:
    path = Path(init) / "model.safetensors"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class Staging:
    """The finished games of an evaluation, one JSON line each, after an identity line."""

    def __init__(self, path: Path, identity: dict, resume: bool, overwrite: bool):
        self.path = path
        self.games: dict[str, dict[int, dict]] = {}
        if path.exists() and not resume:
            if not overwrite:
                raise UserError(f"{path}: an interrupted evaluation is staged here; pass "
                                "--resume to continue it or --overwrite to start over")
            path.unlink()
        if path.exists():
            self._load(identity)
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    tmp.write_text(json.dumps({"identity": identity}) + "\n")
            except OSError as e:
                raise UserError(f"{path}: cannot write ({e.strerror})") from None
        self.file = open(path, "a")  # noqa: SIM115 (kept open while games finish)
        self.session = uuid.uuid4().hex[:12]

    def _load(self, identity: dict) -> None:
        try:
            lines = self.path.read_text().split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{self.path}: cannot read ({e})") from None
        records, keep = [], 0  # keep: the bytes of whole lines
        for k, line in enumerate(lines):
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if k == len(lines) - 1:  # torn by a kill mid-write: that game is replayed
                    break
                raise UserError(f"{self.path}: line {k + 1} is not JSON") from None
            keep += len(line.encode()) + 1
        if not records or records[0].get("identity") is None:
            raise UserError(f"{self.path}: not an evaluation staging file")
        staged = records[0]["identity"]
        for key in sorted(set(staged) | set(identity)):
            if staged.get(key) != identity.get(key):
                raise UserError(f"{self.path}: staged with {key} = {staged.get(key)!r}, this "
                                f"run has {identity.get(key)!r}; pass --overwrite to start over")
        if lines[-1]:  # the last line lacks its newline: drop it if torn, else end it
            with open(self.path, "r+b") as f:
                f.truncate(keep - 1)
                f.seek(0, 2)
                f.write(b"\n")
        for r in records[1:]:
            self.games.setdefault(r["agent"], {})[int(r["seed"])] = r

    def add(self, record: dict) -> None:
        record["session"] = self.session
        self.games.setdefault(record["agent"], {})[record["seed"]] = record
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def results(self, name: str, seeds: np.ndarray) -> tuple[GameResults, dict]:
        """The agent's games in seed order, and its timing summed over sessions."""
        rows = [self.games[name][int(s)] for s in seeds]
        res = GameResults(name, seeds.copy(), np.array([r["score"] for r in rows], np.int64),
                          np.array([r["moves"] for r in rows], np.int64),
                          np.array([r["highest"] for r in rows], np.uint8),
                          np.array([r["end"] for r in rows], np.uint8), 0.0)
        last: dict[str, dict] = {}
        for r in rows:  # the latest running totals of each session
            if r["session"] not in last or r["run"]["seconds"] > last[r["session"]]["seconds"]:
                last[r["session"]] = r["run"]
        timing = {k: sum(t[k] for t in last.values()) for k in ("moves", "seconds", "boards")}
        res.seconds, res.boards_evaluated = timing["seconds"], timing["boards"]
        return res, timing

    def close(self) -> None:
        self.file.close()


def _identity(cfg: EvaluateConfig, predictor, uses_value: bool) -> tuple[dict, float, bool]:
    """What makes the games what they are (checked on --resume), and the value head's (γ,
    afterstate): recorded whenever the model has a value head, so a resume may add agents."""
    identity = {"seed": cfg.seed, "games": cfg.games, "max_moves": cfg.max_moves, "model": "",
                "gamma": None, "afterstate": None}
    if predictor is None:
        return identity, 0.0, False
    identity["model"] = (cfg.server + " " if cfg.server else "") + (
        _weights_fingerprint(cfg.init) if cfg.init else
        hashlib.sha256(predictor.description.config_json.encode()).hexdigest()[:16])
    if not predictor.has_value:
        return identity, 0.0, False
    gamma, afterstate = value_definition(predictor, cfg.gamma or None, note=uses_value)
    identity["gamma"], identity["afterstate"] = gamma, afterstate
    return identity, gamma, afterstate


def run_evaluate(cfg: EvaluateConfig, overwrite: bool = False) -> dict:
    if cfg.dataset:
        from lab2048.play.ranking import run_ranking

        return run_ranking(cfg, overwrite)
    out = Path(cfg.out)
    check_out(out, overwrite)
    seeds = np.arange(cfg.games, dtype=np.uint64) + np.uint64(cfg.seed)
    specs: list[AgentSpec] = cfg.specs
    uses_value = any(s.uses_value for s in specs)
    with open_model(cfg, bool(cfg.init or cfg.server)) as predictor:  # recorded, even if unused
        if uses_value:
            predictor.require_value()
        identity, gamma, afterstate = _identity(cfg, predictor, uses_value)
        staging = Staging(staging_path(out), identity, cfg.resume, overwrite)
        try:
            if cfg.ray:
                _play_all_on_ray(cfg, specs, seeds, staging, gamma, afterstate)
            else:
                _play_all(specs, seeds, cfg.max_moves, staging, predictor, gamma, afterstate)
        finally:
            staging.close()
    results, summaries = [], {}
    for spec in specs:
        res, timing = staging.results(spec.name, seeds)
        results.append(res)
        summaries[spec.name] = summarize(res, timing)
    summary = {"kind": KIND, "config": cfg.settings(), "games": cfg.games, "seed": cfg.seed,
               "gamma": gamma if uses_value else None,
               "afterstate": afterstate, "agents": summaries, "paired": paired(results)}
    print(format_evaluation(summary))
    tmp = temp_dir_beside(out)
    try:
        write_text(tmp / "games.csv", games_csv(results, with_agent=True))
        write_json(tmp / "summary.json", summary)
        plot_agents(results, summaries, tmp / "agents.png")
        check_out(out, overwrite)
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    staging.path.unlink(missing_ok=True)
    print(f"wrote {out}/{{{','.join(EVALUATE_FILES)}}}")
    return summary


def _play_all(specs, seeds, max_moves, staging: Staging, predictor, gamma, afterstate) -> None:
    total = len(specs) * len(seeds)
    done = sum(len(staging.games.get(s.name, {})) for s in specs)
    with progress_bar(total=total, initial=done, unit="game", desc="evaluate") as bar:
        for spec in specs:
            have = staging.games.get(spec.name, {})
            todo = np.array([s for s in seeds if int(s) not in have], np.uint64)
            if not len(todo):
                continue
            agent = make_agent(spec, predictor, gamma, afterstate)
            bar.set_description(spec.name)

            def on_end(i: int, res: GameResults, name=spec.name) -> None:
                staging.add(_record(name, res, i, {
                    "moves": int(res.moves.sum()), "seconds": res.seconds,
                    "boards": int(res.boards_evaluated)}))
                bar.update()

            res = play_lockstep(agent, todo, max_moves, on_end=on_end)
            bar.write(f"{spec.name}: {len(todo)} games, mean score {res.scores.mean():,.0f}, "
                      f"{res.moves.sum() / max(res.seconds, 1e-9):,.0f} moves/s")


def _record(name: str, res: GameResults, i: int, run: dict) -> dict:
    """The staged record of game i of `res`, with the agent's running totals `run`."""
    return {"agent": name, "seed": int(res.seeds[i]), "score": int(res.scores[i]),
            "moves": int(res.moves[i]), "highest": int(res.highest[i]), "end": int(res.ends[i]),
            "run": run}


# --- Ray (lab2048.scale): chunks of seeds go to actors that hold the model; each chunk is
# played in lockstep there, and its games are staged here as chunks come back
class GamePlayer:
    """A Ray actor: the model of an init (sent as its files; None for model-free agents)."""

    def __init__(self, init_files: dict[str, bytes] | None, device: str, threads: int):
        from lab2048.play.predictor import open_predictor
        from lab2048.scale import materialize

        self.predictor = None
        if init_files is not None:
            self.init = materialize(init_files)  # kept for the actor's life
            self.context = open_predictor(self.init.name, device=device, threads=threads)
            self.predictor = self.context.__enter__()

    def play(self, spec: AgentSpec, seeds: np.ndarray, max_moves: int, gamma: float,
             afterstate: bool) -> GameResults:
        return play_lockstep(make_agent(spec, self.predictor, gamma, afterstate), seeds,
                             max_moves)


def _play_all_on_ray(cfg: EvaluateConfig, specs, seeds, staging: Staging, gamma,
                     afterstate) -> None:
    from lab2048.scale import actor_map, cluster, fit_actors, read_files

    todo = [(spec, np.array([s for s in seeds if int(s) not in staging.games.get(spec.name, {})],
                            np.uint64)) for spec in specs]
    games = sum(len(t) for _, t in todo)
    if not games:
        return
    with cluster(cfg.ray) as ray:
        threads = cfg.threads or 1
        actors = fit_actors(ray, games, num_cpus=threads, num_gpus=cfg.ray_gpus)
        chunk = -(-games // (4 * actors))  # 4 chunks an actor: even ends, frequent staging
        work = [(spec, t[i:i + chunk], cfg.max_moves, gamma, afterstate)
                for spec, t in todo for i in range(0, len(t), chunk)]
        files = read_files(cfg.init) if any(s.uses_model for s in specs) else None
        device = "cuda" if cfg.ray_gpus > 0 else "cpu"  # Ray shows an actor its own GPUs
        init = (files, device, threads)
        totals: dict[str, dict] = {}  # per agent: moves, actor seconds, boards valued
        total = len(specs) * len(seeds)
        with progress_bar(total=total, initial=total - games, unit="game",
                          desc="evaluate") as bar:
            for position, res in actor_map(
                    ray, GamePlayer, init, "play", work, actors=actors, num_cpus=threads,
                    num_gpus=cfg.ray_gpus, what=lambda p: f"{work[p][0].name} seeds "
                    f"{int(work[p][1][0])}..{int(work[p][1][-1])}"):
                name = work[position][0].name
                run = totals.setdefault(name, {"moves": 0, "seconds": 0.0, "boards": 0})
                run["moves"] += int(res.moves.sum())
                run["seconds"] += res.seconds
                run["boards"] += int(res.boards_evaluated)
                for i in range(len(res.seeds)):
                    staging.add(_record(name, res, i, dict(run)))
                    bar.update()
# --- end Ray
