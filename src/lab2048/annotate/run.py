"""`lab2048 annotate`: run a model over a dataset and write its outputs beside every step.

For each steps shard, in chunks of `batch` rows of the selected runs: the board's exponents
and legal moves go through the model once (policy and value heads), and, with a value head,
the 1-ply Q of each move comes from `lab2048.play.search.q_values` on the same model's value:

    Q(s, a) = r(s, a) + γ Σ_spawns p · V(child)      (V = 0 for a child with no legal move)
    Q(s, a) = r(s, a) + γ V(afterstate)              (afterstate heads)

with γ the one the value head was trained for (the init's value-target.json).

Choices
- Per shard, then resumable: a shard's files are memory-mapped temporaries (never a whole
  shard's outputs in RAM; their space is reserved first), renamed into place, then the
  manifest records the shard as done (with its files' fingerprints). `--resume` skips the
  shards the manifest lists as done when every setting matches (model weights, dataset, γ,
  --where, --no-value-sidecar); a killed run loses at most the shard in progress.
- `--overwrite` removes only annotation files (by their names) and the manifest: annotations
  may live in the dataset's own directory.
- γ: the init's value target; `--gamma` only for inits that record none (a conflicting
  --gamma is a one-line error); then the --sidecar's γ, then DEFAULT_GAMMA with a note.
- In process (`--init`) or through `lab2048 serve` (`--server`): the same outputs, the model
  config from Describe; the weights fingerprint is known only with --init.
- With --ray ADDRESS (and --init), shards go to Ray actors that each load the init's files
  (`--ray-gpus` per actor on GPU clusters) and return a shard's outputs, computed in the same
  batches; the driver writes and publishes them as above, in the order they finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from lab2048 import __version__
from lab2048.annotate.config import AnnotateConfig
from lab2048.annotate.files import (
    BINS_DTYPE,
    FORMAT,
    FORMAT_VERSION,
    KINDS,
    MANIFEST,
    NOT_ANNOTATED,
    PREFIX,
    VALUE_DTYPE,
    dtype_str,
    fingerprint,
    policy_dtype,
    read_manifest,
    shard_file,
)
from lab2048.data.dataset import Dataset, default_dataset, select_runs
from lab2048.data.fingerprint import weights_fingerprint
from lab2048.engine.batch import legal_masks, to_exponents
from lab2048.errors import UserError
from lab2048.io import atomic_path, progress_bar
from lab2048.value_target import DEFAULT_GAMMA, ValueTarget, read_value_target


@dataclasses.dataclass
class Outputs:
    """Model outputs for a batch of boards (None where the head or option is absent)."""

    move_probs: np.ndarray  # float32 [B, 4]
    bin_probs: np.ndarray | None  # float32 [B, 4, classes] (binned_ev)
    value: np.ndarray | None  # float32 [B], points
    value_xform: np.ndarray | None  # float32 [B], h-space
    atom_probs: np.ndarray | None  # float32 [B, atoms] (cross_entropy value heads)


class LocalModel:
    """A model init in this process."""

    def __init__(self, init: str, device: str, threads: int, batch: int):
        import torch

        from lab2048.model import load_init

        if threads > 0:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = load_init(init, device=device)
        self.cfg = self.model.cfg
        self.batch = batch
        self.value_target = read_value_target(init)
        self.source = str(init)

    def infer(self, exponents: np.ndarray, legal: np.ndarray, value: bool) -> Outputs:
        from lab2048.model.heads import mask_illegal, move_logits

        torch, model = self.torch, self.model
        device = next(model.parameters()).device
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16,
                                             enabled=device.type == "cuda"):
            tokens = torch.as_tensor(exponents, device=device).long()
            _, policy_out, value_out = model(tokens, value)
        logits = mask_illegal(move_logits(policy_out, self.cfg.policy_head).float(), legal)
        out = Outputs(torch.softmax(logits, -1).cpu().numpy(), None, None, None, None)
        if self.cfg.policy_head == "binned_ev":
            out.bin_probs = torch.softmax(policy_out.float(), -1).cpu().numpy()
        if value_out is not None:
            xform, points = model.value.decode(value_out)
            out.value, out.value_xform = points.cpu().numpy(), xform.cpu().numpy()
            if self.cfg.value_head.objective == "cross_entropy":
                out.atom_probs = torch.softmax(value_out.float(), -1).cpu().numpy()
        return out

    def values(self, exponents: np.ndarray) -> np.ndarray:
        """value_fn of q_values: V in points, float64 [M]."""
        torch, model = self.torch, self.model
        device = next(model.parameters()).device
        out = np.empty(len(exponents))
        for lo in range(0, len(exponents), self.batch):
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16,
                                                 enabled=device.type == "cuda"):
                tokens = torch.as_tensor(exponents[lo:lo + self.batch], device=device).long()
                hidden = model.encoder(tokens)
                v = model.value(hidden)
            out[lo:lo + len(tokens)] = model.value.decode(v).points.cpu().numpy()
        return out

    def weights_fingerprint(self) -> str:
        return weights_fingerprint(self.source)

    def close(self) -> None:
        pass


class RemoteModel:
    """The model behind `lab2048 serve`."""

    def __init__(self, address: str, init: str, batch: int):
        from lab2048.model.config import ModelConfig
        from lab2048.serve.client import InferenceClient, value_target_of

        self.client = InferenceClient(address)
        desc = self.client.describe()
        self.cfg = ModelConfig.from_dict(json.loads(desc.config_json), address)
        if init and ModelConfig.from_json(Path(init) / "config.json") != self.cfg:
            self.client.close()
            raise UserError(f"{address}: serves a model whose config differs from {init}")
        self.value_target = value_target_of(desc, address) or (
            read_value_target(init) if init else None)
        self.batch = batch
        self.init = init
        self.source = address

    def infer(self, exponents: np.ndarray, legal: np.ndarray, value: bool) -> Outputs:
        out = self.client.infer(exponents, "both" if value else "policy",
                                value_probs=value and self.cfg.value_head.objective ==
                                "cross_entropy")
        return Outputs(out.move_probs, out.bin_probs, out.value, out.value_xform,
                       out.atom_probs)

    def values(self, exponents: np.ndarray) -> np.ndarray:
        out = np.empty(len(exponents))
        for lo in range(0, len(exponents), self.batch):
            part = exponents[lo:lo + self.batch]
            out[lo:lo + len(part)] = self.client.infer(part, "value").value
        return out

    def weights_fingerprint(self) -> str:
        return weights_fingerprint(self.init) if self.init else ""

    def close(self) -> None:
        self.client.close()


def resolve_gamma(target: ValueTarget | None, flag: float | None, sidecar: str,
                  source: str) -> tuple[float, str]:
    """(γ, where it came from): the init's value target (a different --gamma is an error),
    else --gamma (None: not given), else the sidecar's values.json, else DEFAULT_GAMMA with a
    note."""
    if target is not None:
        return target.check_gamma(flag, source), "init"
    if flag is not None:
        return flag, "flag"
    if sidecar:
        from lab2048.data.sidecar import read_meta

        return float(read_meta(Path(sidecar) / "values.json")["gamma"]), "sidecar"
    print(f"lab2048: note: {source} records no value target; 1-ply Q uses gamma "
          f"{DEFAULT_GAMMA} (pass --gamma to choose)", file=sys.stderr)
    return DEFAULT_GAMMA, "default"


def annotate(cfg: AnnotateConfig, *, resume: bool = False, overwrite: bool = False) -> dict:
    """Annotate cfg.dataset into cfg.out (default: the dataset's directory); the manifest."""
    ds = Dataset(Path(cfg.dataset) if cfg.dataset else default_dataset())
    if not cfg.dataset and not cfg.out:
        raise UserError("the embedded dataset is read-only: pass --out DIR for its annotations")
    out = Path(cfg.out) if cfg.out else ds.root
    model = (RemoteModel(cfg.server, cfg.init, cfg.batch) if cfg.server
             else LocalModel(cfg.init, cfg.device, cfg.threads, cfg.batch))
    try:
        return _annotate(cfg, ds, out, model, resume, overwrite)
    finally:
        model.close()


def _annotate(cfg: AnnotateConfig, ds: Dataset, out: Path, model, resume: bool,
              overwrite: bool) -> dict:
    has_value = model.cfg.value_head.enabled
    if cfg.value_sidecar and not has_value:
        print(f"lab2048: note: {model.source} has no value head; writing policy annotations "
              "only", file=sys.stderr)
    with_value = cfg.value_sidecar and has_value
    gamma, gamma_source = (resolve_gamma(model.value_target, cfg.gamma, cfg.sidecar,
                                         model.source) if with_value else (None, ""))
    afterstate = bool(model.value_target and model.value_target.afterstate)
    atoms = (model.cfg.value_head.support.n
             if with_value and model.cfg.value_head.objective == "cross_entropy" else 0)
    pdtype = policy_dtype(model.cfg.policy_head)
    files = {"annotations": {"dtype": dtype_str(pdtype), "shape": [-1]}}
    if with_value:
        files["value"] = {"dtype": dtype_str(VALUE_DTYPE), "shape": [-1]}
        if atoms:
            files["value_bins"] = {"dtype": dtype_str(BINS_DTYPE), "shape": [-1, atoms]}
    selected = select_runs(ds.root, cfg.where) if cfg.where else None
    settings = {
        "model": {"source": model.source, "config": dataclasses.asdict(model.cfg),
                  "weights_fingerprint": model.weights_fingerprint()},
        "value_target": model.value_target.to_dict() if model.value_target else None,
        "gamma": gamma, "gamma_source": gamma_source, "afterstate": afterstate,
        "q_depth": 1 if with_value else 0, "where": cfg.where, "files": files,
    }
    shards = [{"steps": p.name, "rows": len(s), "steps_fingerprint": fingerprint(s),
               "names": {k: shard_file(k, i) for k in files}, "files": {}}
              for i, (p, s) in enumerate(zip(ds.shard_paths, ds.shards, strict=True))]
    manifest = _claim(out, settings, shards, resume, overwrite)
    todo = [i for i, s in enumerate(manifest["shards"]) if not s["files"]]
    rows_todo = sum(len(ds.shards[i]) for i in todo)
    start = time.perf_counter()
    annotated = 0
    shapes = {"annotations": (pdtype, ()), "value": (VALUE_DTYPE, ()),
              "value_bins": (BINS_DTYPE, (atoms,))}
    work = (_shards_on_ray(cfg, ds, todo, selected, gamma, afterstate,
                           {kind: shapes[kind] for kind in files}) if cfg.ray
            else ((i, None) for i in todo))
    with progress_bar(total=rows_todo, unit="step", unit_scale=True, desc="annotate") as bar, \
            contextlib.closing(work):
        for i, computed in work:  # computed: a shard's outputs from a Ray actor, or None
            steps, entry = ds.shards[i], manifest["shards"][i]
            with contextlib.ExitStack() as files_of_shard:  # renamed into place on success
                arrays = {kind: _open_output(files_of_shard, out / entry["names"][kind],
                                             shapes[kind][0], (len(steps), *shapes[kind][1]))
                          for kind in files}
                for a in range(0, len(steps) if computed is None else 0, cfg.batch):
                    annotated += _annotate_rows(model, steps[a:a + cfg.batch], selected, gamma,
                                                afterstate, {k: v[a:a + cfg.batch]
                                                             for k, v in arrays.items()})
                    bar.update(min(cfg.batch, len(steps) - a))
                for kind, arr in arrays.items():
                    if computed is not None:
                        arr[...] = computed[kind]
                    arr.flush()
                entry["files"] = {kind: fingerprint(arr) for kind, arr in arrays.items()}
                entry["annotated_rows"] = int((arrays["annotations"]["model_move"]
                                               != NOT_ANNOTATED).sum())
                del arrays
            if computed is not None:
                annotated += entry["annotated_rows"]
                bar.update(len(steps))
            _write(out / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=2).encode()))
    manifest["seconds"] = time.perf_counter() - start
    manifest["rows_annotated_now"] = annotated
    return manifest


# --- Ray (lab2048.scale): actors hold the model (its init's files are sent to them) and
# annotate a whole shard per call, in the same batches as above; the driver writes the files
class ShardAnnotator:
    """A Ray actor: the model of an init (sent as its files) on `threads` torch threads."""

    def __init__(self, init_files: dict[str, bytes], device: str, threads: int, batch: int):
        from lab2048.scale import materialize

        self.init = materialize(init_files)  # kept for the actor's life
        self.model = LocalModel(str(self.init.name), device, threads, batch)
        self.batch = batch

    def shard(self, steps: np.ndarray, selected: np.ndarray | None, gamma: float | None,
              afterstate: bool, layout: dict) -> dict[str, np.ndarray]:
        arrays = {kind: np.zeros((len(steps), *tail), dtype)  # zeros: as a new .npy file
                  for kind, (dtype, tail) in layout.items()}
        for a in range(0, len(steps), self.batch):
            _annotate_rows(self.model, steps[a:a + self.batch], selected, gamma, afterstate,
                           {k: v[a:a + self.batch] for k, v in arrays.items()})
        return arrays


def _shards_on_ray(cfg: AnnotateConfig, ds: Dataset, todo: list[int], selected, gamma,
                   afterstate: bool, layout: dict):
    """(shard index, its outputs) as the cluster's actors finish them."""
    if not todo:
        return
    from lab2048.scale import actor_map, cluster, fit_actors, read_files

    with cluster(cfg.ray) as ray:
        threads = cfg.threads or 1
        actors = fit_actors(ray, len(todo), num_cpus=threads, num_gpus=cfg.ray_gpus)
        device = "cuda" if cfg.ray_gpus > 0 else "cpu"  # Ray shows an actor its own GPUs
        init = (read_files(cfg.init), device, threads, cfg.batch)
        shards = ((np.asarray(ds.shards[i]), selected, gamma, afterstate, layout) for i in todo)
        for position, arrays in actor_map(ray, ShardAnnotator, init, "shard", shards,
                                          actors=actors, num_cpus=threads,
                                          num_gpus=cfg.ray_gpus,
                                          what=lambda p: f"shard {todo[p]}"):
            yield todo[position], arrays
# --- end Ray


def _open_output(stack: contextlib.ExitStack, path: Path, dtype: np.dtype,
                 shape: tuple[int, ...]) -> np.ndarray:
    """A .npy memory-mapped at a temporary beside `path` (renamed to it when `stack` closes
    without an error), its space reserved at once: a full disk is one line, not a crash."""
    tmp = stack.enter_context(atomic_path(path))
    try:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        with open(tmp, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None
    return arr


def _write(path: Path, write) -> None:
    """Write a file through a temporary renamed into place; a full disk is one line."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            write(f)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror or e})") from None


def _claim(out: Path, settings: dict, shards: list[dict], resume: bool, overwrite: bool) -> dict:
    """The manifest to fill: the existing one to resume, or a new one (after removing old
    annotation files with --overwrite)."""
    path = out / MANIFEST
    fresh = {"format": FORMAT, "format_version": FORMAT_VERSION,
             "writer": f"lab2048 {__version__}", **settings, "shards": shards}
    if path.exists() and resume and not overwrite:
        old = read_manifest(path)
        same = {k: old.get(k) for k in settings} == json.loads(json.dumps(settings))
        keys = ("steps", "rows", "steps_fingerprint")
        same_data = [{k: s[k] for k in keys} for s in old["shards"]] == \
            [{k: s[k] for k in keys} for s in shards]
        if not (same and same_data):
            what = "the dataset" if not same_data else ", ".join(
                k for k in settings if old.get(k) != json.loads(json.dumps(settings[k])))
            raise UserError(f"{path}: made with another {what}; cannot resume (pass "
                            "--overwrite to start again)")
        return old
    if (path.exists() or _annotation_files(out)) and not overwrite:
        raise UserError(f"{path if path.exists() else out}: annotations already exist (pass "
                        "--resume to continue them or --overwrite to replace them)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create directory ({e.strerror})") from None
    path.unlink(missing_ok=True)
    for old in _annotation_files(out):
        old.unlink()
    _write(path, lambda f: f.write(json.dumps(fresh, indent=2).encode()))
    return fresh


def _annotation_files(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    return sorted(p for p in out.glob("annotations-*.npy")
                  if any(p.name[len(PREFIX[k]):-4].isdigit() for k in KINDS
                         if p.name.startswith(PREFIX[k])))


def _annotate_rows(model, rows: np.ndarray, selected: np.ndarray | None, gamma: float | None,
                   afterstate: bool, out: dict[str, np.ndarray]) -> int:
    """Fill `out`'s arrays (views of this chunk's rows); the number of rows annotated."""
    pol = out["annotations"]
    for arr in out.values():
        if arr.dtype.names:
            arr["run_id"], arr["step_index"] = rows["run_id"], rows["step_index"]
    pol["teacher_move"] = rows["move_dir"]
    boards, masks = np.ascontiguousarray(rows["board"]), np.ascontiguousarray(
        rows["tile_65536_mask"])
    legal = legal_masks(boards, masks)
    pol["legal"] = legal
    pick = np.ones(len(rows), bool) if selected is None else np.isin(rows["run_id"], selected)
    pol["model_move"][~pick] = NOT_ANNOTATED
    pol["move_probs"][~pick] = np.nan
    if "value" in out:
        for name in ("value", "value_xform", "q"):
            out["value"][name][~pick] = np.nan
    if "value_bins" in out:
        out["value_bins"][~pick] = np.nan
    if not pick.any():
        return 0
    idx = np.flatnonzero(pick)
    res = model.infer(to_exponents(boards[idx], masks[idx]), legal[idx], "value" in out)
    pol["move_probs"][idx] = res.move_probs
    pol["model_move"][idx] = np.argmax(res.move_probs, 1)
    if res.bin_probs is not None:
        pol["p_winner"][idx] = res.bin_probs[..., -1]
        pol["p_failure"][idx] = res.bin_probs[..., 1]
        pol["bin_class"][idx] = np.argmax(res.bin_probs, -1)
    if "value" in out:
        from lab2048.play.search import q_values

        val = out["value"]
        val["value"][idx], val["value_xform"][idx] = res.value, res.value_xform
        val["q"][idx] = q_values(boards[idx], masks[idx], model.values, depth=1, gamma=gamma,
                                 afterstate=afterstate)
        if "value_bins" in out:
            out["value_bins"][idx] = res.atom_probs
    return len(idx)


def format_summary(manifest: dict, out: Path) -> str:
    rows = sum(s["rows"] for s in manifest["shards"])
    done = sum(s.get("annotated_rows", 0) for s in manifest["shards"])
    kinds = ", ".join(manifest["files"])
    gamma = "" if manifest["gamma"] is None else (
        f", 1-ply Q with gamma {manifest['gamma']} ({manifest['gamma_source']})")
    rate = manifest["rows_annotated_now"] / max(manifest["seconds"], 1e-9)
    return (f"{out}: {done:,} of {rows:,} steps annotated in {len(manifest['shards'])} "
            f"shard(s) ({kinds}){gamma}; {manifest['rows_annotated_now']:,} now in "
            f"{manifest['seconds']:.1f} s ({rate:,.0f} steps/s)")
