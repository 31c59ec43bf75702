"""Annotation files: their dtypes, the manifest, and the reader that refuses stale ones.

Aligned 1:1 with a dataset's steps shards (docs/design.md, "Annotations"):
- `annotations-NNNNN.npy`: `policy_dtype(kind)` rows: run_id, step_index, move_probs (4,
  UDLR, illegal 0), model_move (the argmax), teacher_move, legal (the board's legal-move
  bits), and for binned_ev heads p_winner, p_failure (4 each) and bin_class (each move's most
  likely class). Rows of runs left out by `--where` keep their keys and have model_move
  NOT_ANNOTATED and NaN probabilities.
- `annotations-value-NNNNN.npy`: VALUE_DTYPE rows: run_id, step_index, value (points),
  value_xform (h-space), q (4, the 1-ply Q of each move in points, NaN where illegal).
- `annotations-value-bins-NNNNN.npy`: float16 [rows, atoms], categorical value heads only.
- `annotation_manifest.json`: the settings (model config and weights fingerprint, γ, --where),
  each file's dtype and shape, and per shard the steps fingerprint and the fingerprints of
  the files written for it.

Choices
- One row per step row, even for runs not selected: any step finds its annotation at the same
  shard and row, with no index to keep.
- Fingerprints are the value sidecar's (`data.fingerprint.fingerprint`, a sum over the
  data's 8-byte words): a changed dataset or a swapped file is refused with one line saying
  what to rerun.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab2048.data.dataset import Dataset, check_keys, load_npy
from lab2048.data.fingerprint import fingerprint
from lab2048.errors import UserError
from lab2048.io import read_json

FORMAT = "lab2048-annotations"
FORMAT_VERSION = 1
MANIFEST = "annotation_manifest.json"
NOT_ANNOTATED = 255  # model_move of rows outside --where
KINDS = ("annotations", "value", "value_bins")
PREFIX = {"annotations": "annotations-", "value": "annotations-value-",
          "value_bins": "annotations-value-bins-"}
VALUE_DTYPE = np.dtype([("run_id", "<u4"), ("step_index", "<u4"), ("value", "<f4"),
                        ("value_xform", "<f4"), ("q", "<f4", (4,))])
BINS_DTYPE = np.dtype("<f2")

__all__ = ["MANIFEST", "NOT_ANNOTATED", "Annotations", "fingerprint", "open_annotations",
           "policy_dtype", "shard_file"]


def policy_dtype(policy_head: str) -> np.dtype:
    fields = [("run_id", "<u4"), ("step_index", "<u4"), ("move_probs", "<f4", (4,)),
              ("model_move", "u1"), ("teacher_move", "u1"), ("legal", "u1")]
    if policy_head == "binned_ev":
        fields += [("p_winner", "<f4", (4,)), ("p_failure", "<f4", (4,)), ("bin_class", "u1", (4,))]
    return np.dtype(fields)


def shard_file(kind: str, shard: int) -> str:
    return f"{PREFIX[kind]}{shard:05d}.npy"


def dtype_str(dtype: np.dtype) -> str:
    """A dtype as the manifest records it (NumPy's descr, as a string)."""
    return str(dtype.descr if dtype.names else dtype.str)


@dataclass
class Annotations:
    """A verified annotation directory: manifest and memory-mapped shards (one per steps
    shard; `value` and `bins` None when not written)."""

    root: Path
    manifest: dict
    policy: list[np.ndarray]
    value: list[np.ndarray] | None
    bins: list[np.ndarray] | None

    @property
    def gamma(self) -> float | None:
        return self.manifest.get("gamma")


def _rerun(manifest: dict) -> str:
    source = manifest.get("model", {}).get("source", "")
    return f"rerun `lab2048 annotate` with --overwrite (model {source})"


def read_manifest(path: Path) -> dict:
    manifest = read_json(path, "no such file (make annotations with `lab2048 annotate --init "
                               "DIR --dataset DIR`)")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{path}: not an annotation manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: format version {manifest.get('format_version')!r}, this "
                        f"lab2048 reads {FORMAT_VERSION} ({_rerun(manifest)})")
    return manifest


def _load(path: Path, kind: str, entry: dict, manifest: dict, fingerprints: bool) -> np.ndarray:
    spec = manifest["files"][kind]
    arr = load_npy(path, f"no such file (the manifest lists it; {_rerun(manifest)})")
    shape = [entry["rows"], *spec["shape"][1:]]
    if dtype_str(arr.dtype) != spec["dtype"] or list(arr.shape) != shape:
        raise UserError(f"{path}: {arr.shape} of {dtype_str(arr.dtype)}, the manifest says "
                        f"{tuple(shape)} of {spec['dtype']}")
    if fingerprints and fingerprint(arr) != entry["files"][kind]:
        raise UserError(f"{path}: does not match {MANIFEST} (fingerprint differs; "
                        f"{_rerun(manifest)})")
    return arr


def open_annotations(dataset: Path | Dataset, root: Path | None = None,
                     fingerprints: bool = True) -> Annotations:
    """The annotations of a dataset, verified against the manifest and the dataset.

    Refuses (one-line UserError) a missing or incomplete manifest, annotations made for other
    shards, row counts or shard contents (stale), files whose dtype, shape or fingerprint
    differ from the manifest, and rows whose (run_id, step_index) differ from the steps.
    `fingerprints=False` skips hashing (a full read of every file) but not the row check."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    root = Path(root) if root else ds.root
    path = root / MANIFEST
    manifest = read_manifest(path)
    shards = manifest["shards"]
    names = [p.name for p in ds.shard_paths]
    if [s["steps"] for s in shards] != names:
        raise UserError(f"{path}: made for shards {[s['steps'] for s in shards]}, the dataset "
                        f"{ds.root} has {names} (stale annotations; {_rerun(manifest)})")
    done = sum(bool(s.get("files")) for s in shards)
    if done < len(shards):
        raise UserError(f"{path}: incomplete ({done} of {len(shards)} shards annotated); "
                        "finish it with the same `lab2048 annotate` command and --resume")
    kinds = [k for k in KINDS if k in manifest["files"]]
    out: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    for entry, steps_path, steps in zip(shards, ds.shard_paths, ds.shards, strict=True):
        if entry["rows"] != len(steps):
            raise UserError(f"{path}: {steps_path.name} has {len(steps)} rows, the annotations "
                            f"were made for {entry['rows']} (stale; {_rerun(manifest)})")
        if fingerprints and fingerprint(steps) != entry["steps_fingerprint"]:
            raise UserError(f"{steps_path}: changed since it was annotated (fingerprint "
                            f"differs; {_rerun(manifest)})")
        for kind in kinds:
            arr = _load(root / entry["names"][kind], kind, entry, manifest, fingerprints)
            if kind != "value_bins":
                check_keys(steps, arr, root / entry["names"][kind])
            out[kind].append(arr)
    return Annotations(root, manifest, out["annotations"], out.get("value"),
                       out.get("value_bins"))


