"""The binned_ev policy target's classes, saved as `tokenizer.json` beside a binned_ev model.

Each move's head classifies the teacher's per-move disadvantage (the best move's value minus
this move's value, >= 0) into
    ILLEGAL, FAILURE, BIN_0 .. BIN_{k-1}, WINNER
where the k quantile bins are half-open intervals [edges[i], edges[i+1]) of the disadvantage,
fitted on a dataset by training. Schema:
    {"format": "lab2048-ev-bins", "version": 1, "classes": [...], "edges": [k + 1 floats]}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from lab2048.engine.conventions import ev_class_names
from lab2048.errors import UserError
from lab2048.io import read_json

FORMAT, VERSION = "lab2048-ev-bins", 1


@dataclass(frozen=True)
class EvBins:
    edges: tuple[float, ...]  # k + 1 increasing, finite bin edges of the disadvantage

    def __post_init__(self) -> None:
        e = tuple(float(x) for x in self.edges)
        object.__setattr__(self, "edges", e)
        if len(e) < 2 or not all(map(math.isfinite, e)) or any(a >= b for a, b in pairwise(e)):
            raise ValueError(f"bin edges must be at least 2 finite increasing numbers, got {e}")

    @property
    def bins(self) -> int:
        return len(self.edges) - 1

    @property
    def classes(self) -> list[str]:
        return ev_class_names(self.bins)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, "classes": self.classes,
                           "edges": list(self.edges)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, path: str | Path) -> EvBins:
        path = Path(path)
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{path}: not a {FORMAT} file")
        if data.get("version") != VERSION:
            raise UserError(f"{path}: version {data.get('version')!r}, expected {VERSION}")
        edges = data.get("edges")
        if not isinstance(edges, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in edges):
            raise UserError(f"{path}: edges must be a list of numbers")
        try:
            bins = cls(tuple(edges))
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
        if data.get("classes") != bins.classes:
            raise UserError(f"{path}: classes do not match the {bins.bins} bins of its edges")
        return bins
