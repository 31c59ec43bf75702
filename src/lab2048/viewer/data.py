"""What the viewer shows, read from memory-mapped files: runs with their summaries, and one
run's steps joined with its annotations and value sidecar.

Choices
- Opening scans each shard's run_id column once (memory-mapped) to find where every run's
  rows lie (a run may continue into the next shard), and reduces the annotations per run
  segment (`np.add.reduceat`) into the runs list's disagreement rate and mean value error. A
  request then reads only the rows of the run it asks for.
- Annotations and sidecar are optional: a missing or refused one leaves its panels empty with
  the reason (the reader's one-line refusal) and the command that makes it.
- Values that do not exist (illegal moves, rows outside --where) travel as JSON null.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab2048.annotate.files import MANIFEST, NOT_ANNOTATED, Annotations, open_annotations
from lab2048.data.dataset import Dataset
from lab2048.engine.batch import legal_masks
from lab2048.engine.conventions import MOVE_NAMES
from lab2048.errors import UserError

SORT_KEYS = ("id", "score", "highest_tile", "steps", "disagreement", "value_error")
MAX_PAGE = 500


def _nullable(a: np.ndarray, digits: int) -> list:
    """A float array as a JSON-ready list, NaN as None."""
    a = np.asarray(a, np.float64)
    return np.where(np.isnan(a), None, np.round(a, digits)).tolist()


@dataclass
class Segment:
    shard: int
    start: int
    stop: int


class ViewerData:
    """A dataset opened for viewing, with its annotations and value sidecar when present."""

    def __init__(self, dataset: Path, annotations: Path | None = None,
                 sidecar: Path | None = None) -> None:
        self.ds = Dataset(dataset)
        root = self.ds.root
        self.ann: Annotations | None = None
        self.ann_missing = ""
        ann_root = Path(annotations) if annotations else root
        make_ann = (f"make them with `lab2048 annotate --init MODEL --dataset {root} --out "
                    "DIR` and pass --annotations DIR")
        if (ann_root / MANIFEST).exists() or annotations:
            try:
                self.ann = open_annotations(self.ds, ann_root)
            except UserError as e:
                self.ann_missing = f"{e}"
        else:
            self.ann_missing = f"no annotations in {ann_root}: {make_ann}"
        self.values: list[np.ndarray] | None = None
        self.sidecar_meta: dict | None = None
        self.sidecar_missing = ""
        side_root = Path(sidecar) if sidecar else root
        if (side_root / "values.json").exists() or sidecar:
            from lab2048.data.sidecar import open_sidecar

            try:
                self.sidecar_meta, self.values = open_sidecar(self.ds, side_root)
            except UserError as e:
                self.sidecar_missing = f"{e}"
        else:
            self.sidecar_missing = (f"no value sidecar in {side_root}: make it with `lab2048 "
                                    f"value-sidecar --dataset {root} --output DIR` and pass "
                                    "--sidecar DIR")
        self.value_missing = ""
        if self.ann is not None and self.ann.value is None:
            self.value_missing = (f"the annotations in {self.ann.root} hold no values (made "
                                  "with --no-value-sidecar or by a policy-only model): rerun "
                                  "`lab2048 annotate` with a value model")
        self.runs = self.ds.runs
        self._index()

    # ------------------------------------------------------------------------------------------

    def _index(self) -> None:
        """Where each run's rows lie, and the per-run summaries of the annotations."""
        n = len(self.runs["id"])
        self.segments: dict[int, list[Segment]] = {}
        annotated = np.zeros(n)
        disagree = np.zeros(n)
        err_sum, err_n = np.zeros(n), np.zeros(n)
        for s, shard in enumerate(self.ds.shards):
            if not len(shard):
                continue
            run_id = np.asarray(shard["run_id"])
            starts = np.concatenate([[0], np.flatnonzero(np.diff(run_id)) + 1])
            stops = np.append(starts[1:], len(run_id))
            ids = run_id[starts]
            for rid, a, b in zip(ids.tolist(), starts.tolist(), stops.tolist(), strict=True):
                self.segments.setdefault(rid, []).append(Segment(s, a, b))
            pos = np.searchsorted(self.runs["id"], ids)
            pos = np.minimum(pos, n - 1)
            if self.ann is None:
                continue
            pol = self.ann.policy[s]
            done = np.asarray(pol["model_move"]) != NOT_ANNOTATED
            differ = done & (np.asarray(pol["model_move"]) != np.asarray(pol["teacher_move"]))
            np.add.at(annotated, pos, np.add.reduceat(done.astype(np.float64), starts))
            np.add.at(disagree, pos, np.add.reduceat(differ.astype(np.float64), starts))
            if self.ann.value is not None and self.values is not None:
                err = np.abs(np.asarray(self.ann.value[s]["value"], np.float64)
                             - np.asarray(self.values[s]["return_raw"], np.float64))
                ok = done & np.isfinite(err)
                np.add.at(err_sum, pos, np.add.reduceat(np.where(ok, err, 0.0), starts))
                np.add.at(err_n, pos, np.add.reduceat(ok.astype(np.float64), starts))
        with np.errstate(invalid="ignore", divide="ignore"):
            self.annotated = annotated
            self.disagreement = np.where(annotated > 0, disagree / annotated, np.nan)
            self.value_error = np.where(err_n > 0, err_sum / err_n, np.nan)

    def _rows(self, arrays: list[np.ndarray], run_id: int) -> np.ndarray:
        return np.concatenate([np.asarray(arrays[g.shard][g.start:g.stop])
                               for g in self.segments[run_id]])

    # ------------------------------------------------------------------------------------------

    def info(self) -> dict:
        manifest = self.ann.manifest if self.ann else None
        return {
            "dataset": str(self.ds.root), "runs": len(self.runs["id"]),
            "steps": int(self.ds.num_rows),
            "annotations": str(self.ann.root) if self.ann else None,
            "model": manifest["model"]["source"] if manifest else None,
            "policy_head": manifest["model"]["config"]["policy_head"] if manifest else None,
            "gamma": manifest.get("gamma") if manifest else None,
            "sidecar_gamma": self.sidecar_meta["gamma"] if self.sidecar_meta else None,
            "value_bins": bool(self.ann and self.ann.bins is not None),
            "missing": {"annotations": self.ann_missing, "sidecar": self.sidecar_missing,
                        "value": self.value_missing},
            "sort_keys": list(SORT_KEYS),
            "move_names": list(MOVE_NAMES),
        }

    def runs_page(self, query: dict[str, str]) -> dict:
        """A page of the runs list: filters min_/max_ score, highest_tile, steps;
        annotated=1; sort (SORT_KEYS), order asc|desc, offset, limit."""
        r = self.runs
        cols = {"id": r["id"], "score": r["max_score"], "highest_tile": r["highest_tile"],
                "steps": r["steps"], "disagreement": self.disagreement,
                "value_error": self.value_error}
        keep = np.ones(len(r["id"]), bool)
        for name in ("score", "highest_tile", "steps", "disagreement", "value_error"):
            lo, hi = _number(query, f"min_{name}"), _number(query, f"max_{name}")
            if lo is not None:
                keep &= cols[name] >= lo
            if hi is not None:
                keep &= cols[name] <= hi
        if query.get("annotated") == "1":
            keep &= self.annotated > 0
        sort = query.get("sort", "id")
        if sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}")
        order = query.get("order", "asc")
        if order not in ("asc", "desc"):
            raise ValueError("order must be asc or desc")
        idx = np.flatnonzero(keep)
        key = np.asarray(cols[sort], np.float64)[idx]
        key = -key if order == "desc" else key
        idx = idx[np.lexsort((r["id"][idx], np.isnan(key), key))]  # NaN last
        offset, limit = _number(query, "offset"), _number(query, "limit")
        offset, limit = int(0 if offset is None else offset), int(50 if limit is None else limit)
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"offset must be >= 0 and limit in 1..{MAX_PAGE}")
        page = idx[offset:offset + limit]
        rows = [{"id": int(r["id"][i]), "seed": int(r["seed"][i]), "steps": int(r["steps"][i]),
                 "score": int(r["max_score"][i]), "highest_tile": int(r["highest_tile"][i]),
                 "annotated": int(self.annotated[i]),
                 "disagreement": _nullable(self.disagreement[i:i + 1], 4)[0],
                 "value_error": _nullable(self.value_error[i:i + 1], 1)[0]} for i in page]
        return {"total": len(idx), "offset": offset, "limit": limit, "sort": sort,
                "order": order, "runs": rows}

    def run(self, run_id: int) -> dict | None:
        """One run's steps with everything known about each (None: no such run)."""
        i = int(np.searchsorted(self.runs["id"], run_id))
        if i >= len(self.runs["id"]) or self.runs["id"][i] != run_id or \
                run_id not in self.segments:
            return None
        steps = self._rows(self.ds.shards, run_id)
        names = {v: k for k, v in self.ds.valuation_types.items()}
        out = {
            "id": run_id, "seed": int(self.runs["seed"][i]), "steps": len(steps),
            "score": int(self.runs["max_score"][i]),
            "highest_tile": int(self.runs["highest_tile"][i]),
            "boards": [f"{b:016x}" for b in steps["board"].tolist()],
            "masks": steps["tile_65536_mask"].tolist(),
            "teacher_move": steps["move_dir"].tolist(),
            "branch_evs": _nullable(steps["branch_evs"], 3),
            "has_branch_evs": bool(np.any(steps["branch_evs"] != 0)),
            "valuation": sorted({names.get(v, str(v)) for v in steps["valuation_type"].tolist()}),
            "legal": legal_masks(np.ascontiguousarray(steps["board"]),
                                 np.ascontiguousarray(steps["tile_65536_mask"])).tolist(),
            "policy": None, "value": None, "returns": None, "gamma": None,
            "missing": {"policy": self.ann_missing, "value": self.ann_missing or
                        self.value_missing, "returns": self.sidecar_missing},
        }
        if self.ann is not None:
            pol = self._rows(self.ann.policy, run_id)
            done = pol["model_move"] != NOT_ANNOTATED
            moves = np.where(done, pol["model_move"].astype(np.int16), -1)
            out["policy"] = {"move_probs": _nullable(pol["move_probs"], 4),
                             "model_move": moves.tolist()}
            if not done.any():
                out["missing"]["policy"] = (f"run {run_id} was left out of the annotations "
                                            f"(--where {self.ann.manifest['where']!r})")
                out["missing"]["value"] = out["missing"]["policy"]
            if self.ann.value is not None:
                val = self._rows(self.ann.value, run_id)
                out["value"] = {"value": _nullable(val["value"], 2), "q": _nullable(val["q"], 2),
                                "bins": self.ann.bins is not None}
                out["gamma"] = self.ann.gamma
        if self.values is not None:
            ret = self._rows(self.values, run_id)
            out["returns"] = {"reward": ret["reward"].astype(np.int64).tolist(),
                              "return_raw": _nullable(ret["return_raw"], 2),
                              "gamma": self.sidecar_meta["gamma"]}
        return out

    def value_bins(self, run_id: int, step: int) -> dict | None:
        """The value head's atom probabilities at one step, with the atoms in points."""
        if self.ann is None or self.ann.bins is None or run_id not in self.segments:
            return None
        for g in self.segments[run_id]:
            first = int(self.ds.shards[g.shard]["step_index"][g.start])
            if first <= step < first + g.stop - g.start:
                probs = np.asarray(self.ann.bins[g.shard][g.start + step - first], np.float64)
                break
        else:
            return None
        from lab2048.value_transform import Support, h_inverse

        head = self.ann.manifest["model"]["config"]["value_head"]
        atoms = Support(**head["support"]).atoms
        points = h_inverse(atoms, head["epsilon"]) / head["reward_scale"]
        return {"step": step, "points": _nullable(points, 1), "probs": _nullable(probs, 5)}


def _number(query: dict[str, str], name: str) -> float | None:
    text = query.get(name, "")
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite")
    return value
