"""`lab2048 evaluate --dataset DIR`: how a model ranks the moves of recorded positions.

    lab2048 evaluate --dataset DIR --init DIR --rows 1000 [--sidecar DIR] [--where SQL]

Scores the agents' moves on `rows` evenly spaced positions of the dataset (of the runs that
`--where` selects, e.g. held-out ones) without playing a game:
- agreement: the share of positions where the agent plays the expert's move (with a Wilson
  interval): `data.dataset.teacher_moves`, the best of the row's branch_evs, which is the
  recorded move on an expert's own games and the teacher's on student games (`generate
  --agent`); the policy's argmax agreement is always reported;
- regret, on the rows valued by search (valuation type "search", whose `branch_evs` are the
  recording player's values of all four moves; rows whose branch_evs are all 0, as in
  imported text logs that carry no per-move values, are left out): max over legal moves of
  branch_evs minus the branch_evs of the agent's move, in branch_evs units, and the share of
  zero-regret choices;
- the value head against the sidecar's returns: R² = 1 - Σ(G - V)² / Σ(G - Ḡ)² and MAE in
  points, V(s) against G_t (`return_raw`) for a board head, V(afterstate of the recorded move)
  against G_{t+1} = (G_t - r_t)/γ for an afterstate head. The sidecar must have the head's γ.

Choices
- Legality comes from the engine (the recorded `ev_legal` can differ on table-valued rows).
- Positions are scored in chunks of 64 (value search over every child of a chunk at once).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from lab2048.data.dataset import Dataset, select_runs, teacher_moves
from lab2048.data.sidecar import open_sidecar
from lab2048.engine.arrays import legal_bools
from lab2048.engine.batch import apply_moves, legal_masks, to_exponents
from lab2048.errors import UserError
from lab2048.io import progress_bar, publish_dir, temp_dir_beside, write_json
from lab2048.play.agents import make_agent
from lab2048.play.arena import KIND, check_out, open_model
from lab2048.play.predictor import value_definition
from lab2048.play.stats import wilson_interval

CHUNK = 64


def evenly_spaced(n_total: int, rows: int) -> np.ndarray:
    """`rows` indices spread evenly over 0..n_total-1 (all of them when rows >= n_total)."""
    if rows >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, rows).round().astype(np.int64))


def select_rows(ds, run_ids: np.ndarray | None, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(shard index, row within shard) of evenly spaced rows of the chosen runs."""
    shard_of, row_of = [], []
    for k, shard in enumerate(ds.shards):
        keep = np.arange(len(shard)) if run_ids is None else \
            np.flatnonzero(np.isin(shard["run_id"], run_ids))
        shard_of.append(np.full(len(keep), k))
        row_of.append(keep)
    shard_of, row_of = np.concatenate(shard_of), np.concatenate(row_of)
    pick = evenly_spaced(len(row_of), rows)
    return shard_of[pick], row_of[pick]


def regret(branch_evs: np.ndarray, legal: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """max over legal moves of branch_evs - branch_evs[move], per row."""
    best = np.where(legal_bools(legal), branch_evs, -np.inf).max(1)
    return best - branch_evs[np.arange(len(moves)), moves]


def value_fit(pred: np.ndarray, target: np.ndarray) -> dict:
    """R² = 1 - Σ(target - pred)² / Σ(target - mean)², and the mean absolute error."""
    resid = float(np.sum((target - pred) ** 2))
    total = float(np.sum((target - target.mean()) ** 2))
    return {"rows": len(pred), "r2": 1 - resid / total if total > 0 else float("nan"),
            "mae": float(np.mean(np.abs(target - pred)))}


def run_ranking(cfg, overwrite: bool = False) -> dict:
    out = Path(cfg.out)
    check_out(out, overwrite)
    ds = Dataset(Path(cfg.dataset))
    run_ids = select_runs(ds.root, cfg.where) if cfg.where else None
    if run_ids is not None and not len(run_ids):
        raise UserError(f"{ds.root}: no run matches --where {cfg.where!r}")
    shard_of, row_of = select_rows(ds, run_ids, cfg.rows)
    if not len(row_of):
        raise UserError(f"{ds.root}: no rows to score")
    steps = np.concatenate([ds.shards[k][row_of[shard_of == k]] for k in range(len(ds.shards))])
    sidecar_dir = Path(cfg.sidecar) if cfg.sidecar else ds.root
    returns = None
    if (sidecar_dir / "values.json").exists():
        meta, values = open_sidecar(ds, sidecar_dir)
        returns = np.concatenate([values[k][row_of[shard_of == k]]
                                  for k in range(len(ds.shards))])
    elif cfg.sidecar:
        raise UserError(f"{sidecar_dir / 'values.json'}: no such file")
    boards, masks = steps["board"].copy(), steps["tile_65536_mask"].copy()
    recorded = steps["move_dir"].astype(np.int64)  # its afterstate is the value's target
    expert = teacher_moves(steps).astype(np.int64)
    legal = legal_masks(boards, masks)
    search_type = ds.valuation_types.get("search")
    searched = (steps["valuation_type"] == search_type if search_type is not None else
                np.zeros(len(steps), bool)) & (np.abs(steps["branch_evs"]).max(1) > 0)
    n = len(steps)
    with open_model(cfg, True) as predictor:
        uses_value = any(s.uses_value for s in cfg.specs) or returns is not None
        gamma, afterstate = 0.0, False
        if uses_value and predictor.has_value:
            gamma, afterstate = value_definition(predictor, cfg.gamma)
        elif any(s.uses_value for s in cfg.specs):
            predictor.require_value()
        if returns is not None and predictor.has_value and meta["gamma"] != gamma:
            raise UserError(f"{sidecar_dir / 'values.json'}: returns discounted at gamma "
                            f"{meta['gamma']}, the value head's gamma is {gamma}")
        agents = [make_agent(s, predictor, gamma, afterstate) for s in cfg.specs]
        policy_moves = np.zeros(n, np.int64)
        chosen = np.zeros((len(agents), n), np.int64)
        predicted = np.zeros(n)
        with progress_bar(total=n, unit="row", desc="rank") as bar:
            for lo in range(0, n, CHUNK):
                sl = slice(lo, min(n, lo + CHUNK))
                b, m, lg = boards[sl], masks[sl], legal[sl]
                probs = predictor.policy(to_exponents(b, m), lg)
                policy_moves[sl] = np.argmax(np.where(legal_bools(lg), probs, -1.0), 1)
                for a, agent in enumerate(agents):
                    chosen[a, sl] = agent.choose(b, m, lg, steps["seed"][sl].astype(np.uint64),
                                                 steps["step_index"][sl].astype(np.int64))
                if returns is not None and predictor.has_value:
                    if afterstate:
                        b, m, _ = apply_moves(b, recorded[sl], m)
                    predicted[sl] = predictor.values(to_exponents(b, m))
                bar.update(sl.stop - sl.start)
    summary = {"kind": KIND, "mode": "offline", "config": cfg.settings(), "rows": n,
               "search_rows": int(searched.sum()), "gamma": gamma if uses_value else None,
               "afterstate": afterstate, "policy_agreement": _agreement(policy_moves, expert),
               "agents": {}}
    for a, agent in enumerate(agents):
        entry = {"agreement": _agreement(chosen[a], expert),
                 "boards_per_position": agent.boards_evaluated / n}
        if searched.any():
            r = regret(steps["branch_evs"][searched].astype(np.float64), legal[searched],
                       chosen[a][searched])
            entry["regret"] = {"mean": float(r.mean()), "zero_share": float(np.mean(r == 0))}
        summary["agents"][agent.name] = entry
    if returns is not None and predictor.has_value:
        target = returns["return_raw"].astype(np.float64)
        if afterstate:
            target = (target - returns["reward"].astype(np.float64)) / gamma
        summary["value"] = value_fit(predicted, target)
    print(format_ranking(summary))
    tmp = temp_dir_beside(out)
    try:
        write_json(tmp / "summary.json", summary)
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out}/summary.json")
    return summary


def _agreement(moves: np.ndarray, recorded: np.ndarray) -> dict:
    k = int(np.sum(moves == recorded))
    p, lo, hi = wilson_interval(k, len(moves))
    return {"rate": p, "ci95": [lo, hi]}


def format_ranking(s: dict) -> str:
    pa = s["policy_agreement"]
    lines = [f"{s['rows']:,} positions ({s['search_rows']:,} with searched per-move values); "
             f"policy agreement {pa['rate']:.3f} ({pa['ci95'][0]:.3f} to {pa['ci95'][1]:.3f})"]
    width = max(8, *(len(a) for a in s["agents"]))
    lines.append(f"{'agent':{width}}  agreement (95% CI)      regret  zero-regret  boards/pos")
    for name, e in s["agents"].items():
        ag, rg = e["agreement"], e.get("regret")
        lines.append(f"{name:{width}}  {ag['rate']:.3f} ({ag['ci95'][0]:.3f}-{ag['ci95'][1]:.3f})"
                     + (f"  {rg['mean']:10.4f}  {rg['zero_share']:11.3f}" if rg else
                        f"  {'-':>10}  {'-':>11}") + f"  {e['boards_per_position']:10.1f}")
    if "value" in s:
        v = s["value"]
        lines.append(f"value head: R² {v['r2']:.3f}, MAE {v['mae']:,.1f} points over "
                     f"{v['rows']:,} positions"
                     + (" (afterstates against G_t+1)" if s["afterstate"] else ""))
    return "\n".join(lines)
