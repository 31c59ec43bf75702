"""The training loop, nanoGPT-style: `train(cfg)` reads top to bottom (set up, data, model,
optimiser, one loop); `build_model` makes the model, `outputs` is the one forward path.

Choices
- Modes: `scratch` co-trains policy and value heads from a fresh model; `joint` fine-tunes an
  init (its value head kept when the configs match, else fresh); `value_only` trains the value
  head of an init alone: the policy head is frozen, the encoder too with `freeze_trunk` (then it
  is in eval mode and gets no gradient). A head whose loss weight is 0 is frozen as well.
  Frozen parameters are left out of the optimizer, so weight decay cannot move them either.
- One forward path: every mode calls the same `forward` (the model, or `torch.compile(model)`
  with `train.compile`, under DistributedDataParallel with several processes) on one tensor of
  static shape: the boards, or for afterstate values the boards and their afterstates
  concatenated (policy from the first part, value from the rest): the recorded move's
  afterstate, or with the ranking loss those of all four moves.
- Loss = policy_weight x policy loss + value_weight x value loss + rank_weight x ranking loss
  (objectives.py, float32). The ranking loss (afterstate heads) is the cross-entropy of
  softmax(Q / T) over the legal moves against the recorded move, with the 1-ply
  Q(s, a) = r(s, a) + γ V(afterstate of a) that `value:depth=1` plays by: Monte Carlo returns
  alone fit values across states but rank the moves within one badly (docs/value-learning.md).
  Validation reports that Q's agreement with the recorded move as `value_agreement`.
- AdamW (weight decay on matrices and embeddings only), linear warmup then warmup-stable-decay
  (linear decay over the last `decay_fraction` of steps) or cosine, down to min_lr_ratio x lr
  (`lr_factor`, a pure function); global gradient-norm clipping. bf16 autocast on CUDA,
  float32 on CPU.
- A fresh value head starts at the mean training return (the head's `prior`).
- Data (loader.py) lives on the training device; a step does no host work. Losses are summed
  on the device and read back only every LOG_EVERY steps, at validations and checkpoints:
  there a non-finite loss or gradient norm stops the run (one line, exit 2) before anything
  is written, so the last checkpoint and init stay the last good ones.
- Several processes (`torchrun --nproc-per-node N -m lab2048 train ...`): DDP, each rank its
  slice of every global batch (gradients averaged: the same as one process with the whole
  batch), losses averaged over ranks; rank 0 validates and writes. Resume is exact when
  dropout is 0 (the default): with dropout, ranks other than 0 restart their dropout streams.
- Run directory: `metrics.jsonl` (kind "train" records every LOG_EVERY steps and at
  validations and checkpoints, averaging the steps since the last one; kind "val" at each
  validation), `curves.png`, `checkpoint.pt` and `init/` (config.json, model.safetensors,
  training-config.json, value-target.json with a value head, tokenizer.json for binned_ev).
  A checkpoint writes the new init and checkpoint into temporaries first and renames them
  into place together: a full disk (one line) leaves the previous pair intact and consistent.
- Resume: the checkpoint holds model, optimizer, schedule, the step and torch's RNG states;
  the data order and augmentation are pure functions of (seed, step). A run killed at any
  moment continues from its last checkpoint exactly as if it had not been interrupted;
  metrics recorded after that checkpoint (and a torn last line) are dropped and recomputed,
  and init/ is republished from the checkpoint if a crash came between the two renames.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from lab2048.errors import UserError
from lab2048.io import atomic_path, progress_bar, publish_dir, temp_dir_beside
from lab2048.model import EvBins, Model, load_init, save_init, torch_device
from lab2048.train.config import TrainConfig, model_config
from lab2048.train.loader import (
    Batch,
    Batches,
    Spec,
    ev_classes,
    fit_edges,
    make_batch,
    open_source,
    read_columns,
    sample_rows,
    val_batches,
)
from lab2048.train.objectives import (
    ValueStats,
    agreement,
    one_ply_q,
    policy_loss,
    q_agreement,
    rank_loss,
    value_loss,
)
from lab2048.value_target import ValueTarget

CHECKPOINT, METRICS, CURVES, INIT = "checkpoint.pt", "metrics.jsonl", "curves.png", "init"
LOG_EVERY = 10
VAL_BATCH = 1024
# keys that may change between a run and its resumption
_RESUMABLE = {"train.progress", "train.device", "train.compile", "train.out",
              "train.max_seconds", "train.threads", "data.placement"}
_STATE_KEYS = {"step", "model", "optimizer", "scheduler", "rng", "config", "train_rows"}


def lr_factor(step: int, cfg, total: int) -> float:
    """Learning-rate multiplier at `step` (0-based) of `total` steps, warmup w:

        step < w:   (step + 1) / w
        cosine:     m + (1 - m) (1 + cos(π min(1, (step - w) / (total - w)))) / 2
        wsd:        1 until total - ⌊decay_fraction total⌋ = d, then 1 - (1 - m) (step - d + 1)
                    / (total - d)
    with m = min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    m = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * min(t, 1)))
    decay_start = total - int(cfg.decay_fraction * total)
    if step < max(decay_start, cfg.warmup_steps):
        return 1.0
    t = (step - decay_start + 1) / max(1, total - decay_start)
    return 1 - (1 - m) * min(t, 1.0)


# -- set-up -------------------------------------------------------------------------------------


def _distributed(device_cfg: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when started by torchrun (then
    each process takes the GPU of its LOCAL_RANK)."""
    device = torch_device(device_cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _read_checkpoint(out: Path, cfg: TrainConfig) -> dict | None:
    """The checkpoint to resume from (None for a run not started yet), checked."""
    ckpt = out / CHECKPOINT
    if not ckpt.is_file():
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{ckpt}: no checkpoint to resume from")
        return None
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file
        raise UserError(f"{ckpt}: not a readable checkpoint ({type(e).__name__}); start "
                        "again with --overwrite") from None
    if not isinstance(state, dict) or not set(state) >= _STATE_KEYS:
        raise UserError(f"{ckpt}: not a checkpoint of `lab2048 train`")
    old = _flatten(json.loads(state["config"]))
    new = _flatten(cfg.to_dict())
    diff = sorted(k for k in set(old) | set(new)
                  if k not in _RESUMABLE and old.get(k) != new.get(k))
    if diff:
        raise UserError(f"{ckpt}: was made with another config ({', '.join(diff[:5])} "
                        "differ); resume with the same config")
    return state


def _clear_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out}: already exists (pass --resume to continue it or "
                            "--overwrite to replace it)")
        if not (out / CHECKPOINT).exists() and not (out / METRICS).exists():
            raise UserError(f"{out}: not a training run; --overwrite replaces only a run")
        for name in (CHECKPOINT, METRICS, CURVES):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / INIT, ignore_errors=True)


def value_target_of(cfg: TrainConfig, meta: dict, head, source: str) -> ValueTarget:
    """The head's ValueTarget, after checking the sidecar against the config (one line)."""
    o = cfg.objective
    kind = meta.get("kind", "monte_carlo")
    if kind != o.target_kind:
        raise UserError(f"{source}: the sidecar holds {kind} returns, objective.target_kind "
                        f"is {o.target_kind!r}")
    if meta["gamma"] != o.gamma:
        raise UserError(f"{source}: the sidecar's gamma is {meta['gamma']}, objective.gamma "
                        f"is {o.gamma} (make them equal)")
    if o.value_target == "return_scaled" and (meta["reward_scale"] != head.reward_scale
                                              or meta["epsilon"] != head.epsilon):
        raise UserError(
            f"{source}: reward_scale {meta['reward_scale']}, eps {meta['epsilon']}; "
            f"model.value_head has {head.reward_scale}, {head.epsilon}: make them equal or "
            "set objective.value_target = 'return_raw'")
    return ValueTarget(gamma=meta["gamma"], reward_scale=head.reward_scale,
                       epsilon=head.epsilon, kind=kind, state=o.value_state,
                       n=int(meta.get("n", 0)), lam=float(meta.get("lam", 0.0)),
                       bootstrap=str(meta.get("bootstrap", "")),
                       sidecar=str(meta.get("checksum", "")))


def build_model(cfg: TrainConfig, train_cols: dict[str, torch.Tensor]) -> Model:
    """The model to train (on the CPU): fresh for scratch, else the init; value-head prior
    from the training returns, binned_ev edges fitted on training rows, frozen parts frozen."""
    mcfg, o, t = model_config(cfg), cfg.objective, cfg.train
    if t.mode == "value_only" and not mcfg.value_head.enabled:
        raise UserError("train.mode = 'value_only' needs [model.value_head] enabled = true")
    sample = sample_rows(train_cols, 1_000_000)
    if mcfg.value_head.enabled:  # a fresh head starts at the mean training return
        prior = round(float(sample["points"][:100_000].double().mean()), 3)
        mcfg = dataclasses.replace(mcfg, value_head=dataclasses.replace(mcfg.value_head,
                                                                        prior=prior))
    torch.manual_seed(t.seed)
    if t.mode == "scratch":
        bins = None
        if mcfg.policy_head == "binned_ev":
            s = make_batch(sample, None)
            bins = EvBins(tuple(fit_edges(s.branch_evs, s.legal, mcfg.ev_bins,
                                          o.failure_value)))
        model = Model(mcfg, bins)
    else:
        model = load_init(t.init, config=mcfg)
    policy_on, value_on = _heads_on(cfg, model)
    for name, p in model.named_parameters():
        head = name.split(".")[0]
        p.requires_grad_((head != "policy" or policy_on) and (head != "value" or value_on)
                         and not (head == "encoder" and t.freeze_trunk))
    return model


def _heads_on(cfg: TrainConfig, model: Model) -> tuple[bool, bool]:
    o, t = cfg.objective, cfg.train
    value_on = model.value is not None and (o.value_weight > 0 or t.mode == "value_only")
    policy_on = t.mode != "value_only" and o.policy_weight > 0
    if not (value_on or policy_on):
        raise UserError("nothing to train: both objective weights are 0 (or the value head "
                        "is off)")
    return policy_on, value_on


# -- the step's computations --------------------------------------------------------------------


def outputs(forward, batch: Batch, *, policy: bool, value: bool, afterstate: bool,
            siblings: bool = False):
    """(policy_out or None, value_out or None) of the one forward pass; value_out is of the
    afterstates of all four moves ([4B, ...], move-major per board) with `siblings`."""
    b = len(batch.move)
    if afterstate and value:
        states = batch.siblings.reshape(-1, 16) if siblings else batch.after
        x = torch.cat([batch.tokens, states]) if policy else states
    else:
        x = batch.tokens
    with torch.autocast("cuda", torch.bfloat16, enabled=x.device.type == "cuda"):
        _, policy_out, value_out = forward(x, with_value=value)
    if afterstate and value and policy:
        return policy_out[:b], value_out[b:]
    return (policy_out if policy else None), value_out


def losses(cfg: TrainConfig, model: Model, edges, batch: Batch, policy_out, value_out,
           policy_on: bool, value_on: bool) -> dict[str, torch.Tensor]:
    """The weighted loss and its parts; with value_out for all four afterstates (siblings), the
    value loss is the recorded move's and `q` (the 1-ply Q, [B, 4]) is returned too."""
    o, kind = cfg.objective, model.cfg.policy_head
    out = {}
    loss = torch.zeros((), device=batch.move.device)
    if policy_out is not None:
        ev_class = None
        if kind == "binned_ev":
            ev_class = ev_classes(batch.branch_evs, batch.legal, edges, o.failure_value)
        out["policy_loss"] = policy_loss(policy_out, kind, batch.legal, batch.label, ev_class)
        if policy_on:
            loss = loss + o.policy_weight * out["policy_loss"]
    if value_out is not None:
        b = len(batch.move)
        chosen = value_out
        if len(value_out) == 4 * b:  # all four afterstates: the recorded move's is the target's
            four = value_out.view(b, 4, *value_out.shape[1:])
            chosen = four[torch.arange(b, device=four.device), batch.move]
            points = model.value.decode(value_out).points.view(b, 4)
            out["q"] = one_ply_q(batch.sibling_rewards, points, o.gamma)
            out["rank_loss"] = rank_loss(out["q"], batch.legal, batch.label, o.rank_temperature)
            if value_on and o.rank_weight > 0:
                loss = loss + o.rank_weight * out["rank_loss"]
        out["value_out"] = chosen
        out["value_loss"] = value_loss(chosen, model.cfg.value_head, batch.target)
        if value_on:
            loss = loss + o.value_weight * out["value_loss"]
    out["loss"] = loss
    return out


@torch.no_grad()
def evaluate(cfg: TrainConfig, model: Model, forward, edges, val_cols, policy_on: bool,
             value_on: bool, afterstate: bool) -> dict[str, float]:
    """Validation: the training losses, policy agreement, value MAE and R² in points, and for
    afterstate heads the agreement of their 1-ply Q's move with the recorded one."""
    model.eval()
    sums: dict[str, float] = {}
    n, stats = 0, ValueStats()
    for batch in val_batches(val_cols, VAL_BATCH):
        siblings = afterstate and value_on and batch.siblings is not None
        policy_out, value_out = outputs(forward, batch, policy=True, value=value_on,
                                        afterstate=afterstate, siblings=siblings)
        out = losses(cfg, model, edges, batch, policy_out if policy_on else None, value_out,
                     policy_on, value_on)
        out["policy_agreement"] = agreement(policy_out, model.cfg.policy_head, batch.legal,
                                            batch.label).mean()
        if "q" in out:
            out["value_agreement"] = q_agreement(out.pop("q"), batch.legal, batch.label).mean()
        b = len(batch.move)
        value_out = out.pop("value_out", None)
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        n += b
        if value_out is not None:
            stats.add(model.value.decode(value_out).points, batch.points)
    return {**{k: v / n for k, v in sums.items()}, **stats.result()} if n else {}


# -- outputs ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _writing(path: Path):
    """OSError (a full disk, above all) while writing `path` -> a one-line UserError."""
    try:
        yield
    except OSError as e:
        why = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or e)
        raise UserError(f"{path}: cannot write ({why}); earlier outputs are intact") from None


def _save(out: Path, model: Model, blob: dict, extra_json: dict) -> None:
    """Write init/ and checkpoint.pt into temporaries, then rename both into place."""
    staging = temp_dir_beside(out / INIT)
    try:
        with _writing(out / INIT):
            save_init(model, staging / INIT, extra_json=extra_json)
        data = io.BytesIO()  # torch.save reports a full disk as a RuntimeError: write it here
        torch.save(blob, data)
        with _writing(out / CHECKPOINT):
            (staging / CHECKPOINT).write_bytes(data.getbuffer())
        os.replace(staging / CHECKPOINT, out / CHECKPOINT)
        publish_dir(staging / INIT, out / INIT)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _init_matches(init: Path, weights: dict[str, torch.Tensor]) -> bool:
    """Whether init/ holds these weights (it does unless a run died between the renames)."""
    try:
        saved = load_file(str(init / "model.safetensors"))
    except Exception:  # missing or damaged: republish
        return False
    return saved.keys() == weights.keys() and all(torch.equal(saved[k], weights[k])
                                                  for k in saved)


def _read_metrics(path: Path, last_step: int) -> list[dict]:
    """Records up to `last_step`; a torn last line (a crash mid-write) is dropped."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for i, line in enumerate(lines):
        try:
            r = json.loads(line)
            step = r["step"]
        except (json.JSONDecodeError, TypeError, KeyError):
            if i == len(lines) - 1:
                break
            raise UserError(f"{path}: line {i + 1} is not a metrics record") from None
        if step <= last_step:
            records.append(r)
    return records


def _append(path: Path, record: dict) -> None:
    """One line onto metrics.jsonl; on failure the file is cut back to what it was."""
    with _writing(path), open(path, "a") as f:
        size = f.tell()
        try:
            f.write(json.dumps(record) + "\n")
            f.flush()
        except OSError:
            f.truncate(size)
            raise


def _plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [r for r in records if r["kind"] == "train"]
    va = [r for r in records if r["kind"] == "val"]
    panels = [("training loss", tr, ("loss", "policy_loss", "value_loss")),
              ("validation loss", va, ("policy_loss", "value_loss")),
              ("validation policy agreement / value R²", va, ("policy_agreement", "value_r2")),
              ("learning rate", tr, ("lr",))]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (title, recs, keys) in zip(axes.flat, panels, strict=True):
        for k in keys:
            pts = [(r["step"], r[k]) for r in recs if k in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    with _writing(path), atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


# -- the loop -----------------------------------------------------------------------------------


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          stop_after: int | None = None) -> dict:
    """Train as configured; returns the last validation metrics (plus samples/s).

    `stop_after` ends the loop after that many steps as if the process had been killed then
    (tests use it to resume); checkpoints written before remain."""
    if cfg.train.mode == "td":
        from lab2048.train.selfplay import run_selfplay

        return run_selfplay(cfg, resume=resume, overwrite=overwrite)
    rank, world, device = _distributed(cfg.train.device)
    try:
        return _train(cfg, Path(cfg.train.out), rank, world, device, resume, overwrite,
                      stop_after)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(cfg, out, rank, world, device, resume, overwrite, stop_after) -> dict:
    t, o = cfg.train, cfg.objective
    master = rank == 0
    if t.threads:
        torch.set_num_threads(t.threads)
    state = _read_checkpoint(out, cfg) if resume else None
    if not resume and master:
        _clear_out(out, overwrite)

    # data: the columns on the device, batches a pure function of (seed, step)
    source = open_source(cfg.data)
    mcfg = model_config(cfg)
    head = mcfg.value_head
    target = (value_target_of(cfg, source.meta, head, cfg.data.sidecar or "values.json")
              if head.enabled else None)
    afterstate = o.value_state == "afterstate"
    spec = Spec(value_target=o.value_target, reward_scale=head.reward_scale,
                epsilon=head.epsilon, gamma=source.meta["gamma"], afterstate=afterstate,
                siblings=o.rank_weight > 0, branch_evs=mcfg.policy_head == "binned_ev",
                teacher_label=o.policy_label == "teacher")
    train_cols = read_columns(source, source.train_rows, spec)
    val_spec = dataclasses.replace(spec, siblings=afterstate)  # for value_agreement
    val_cols = {k: v.to(device) for k, v in read_columns(source, source.val_rows,
                                                         val_spec).items()}
    batches = Batches(train_cols, t.batch_size, t.seed, device, augment=cfg.data.augment,
                      placement=cfg.data.placement, rank=rank, world=world)

    # model, optimiser, schedule, forward
    model = build_model(cfg, train_cols).to(device).train()
    del train_cols
    policy_on, value_on = _heads_on(cfg, model)
    edges = (torch.tensor(model.bins.edges, device=device) if model.bins is not None
             else None)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = cfg.optim.weight_decay
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1, cfg.optim.beta2),
                            fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.optim, t.steps))
    start = 0
    if state is not None:
        if state["train_rows"] != len(source.train_rows):
            raise UserError(f"{out / CHECKPOINT}: made for {state['train_rows']} training "
                            f"steps, the data now has {len(source.train_rows)}")
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{out / CHECKPOINT}: does not fit this model ({e})".split("\n")[0]
                            ) from None
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        start = state["step"]
    compiled = torch.compile(model) if t.compile else model
    forward = compiled
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(compiled, device_ids=[device.index]
                                          if device.type == "cuda" else None)

    def train_mode() -> None:
        model.train()
        if t.freeze_trunk:
            model.encoder.eval()

    train_mode()
    records: list[dict] = []
    config_json = cfg.to_dict()
    extra = {"training-config.json": config_json}
    if target is not None:
        extra["value-target.json"] = target.to_dict()
    if master:
        with _writing(out):
            out.mkdir(parents=True, exist_ok=True)
        records = _read_metrics(out / METRICS, start)
        with _writing(out / METRICS), atomic_path(out / METRICS) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        if state is not None and not _init_matches(out / INIT, state["model"]):
            _save(out, model, state, extra)  # an interruption between the two renames

    def record(r: dict) -> None:
        records.append(r)
        _append(out / METRICS, r)

    keys = ["loss", *(["policy_loss"] if policy_on else []),
            *(["value_loss"] if value_on else []),
            *(["rank_loss"] if value_on and spec.siblings else []), "grad_norm"]
    window = torch.zeros(len(keys), dtype=torch.float64, device=device)
    last_val: dict = {}
    last_ckpt = start
    seen, sps, tick = 0, 0.0, time.perf_counter()
    started = time.perf_counter()
    clip = cfg.optim.grad_clip or math.inf
    with progress_bar(t.progress and master, total=t.steps, initial=start, unit="step",
                      desc=f"train {t.mode}") as bar:
        for step in range(start, t.steps):
            if stop_after is not None and step >= stop_after:
                break
            lr = sched.get_last_lr()[0]
            batch = batches.get(step)
            policy_out, value_out = outputs(forward, batch, policy=policy_on, value=value_on,
                                            afterstate=afterstate, siblings=spec.siblings)
            out_t = losses(cfg, model, edges, batch, policy_out, value_out, policy_on, value_on)
            out_t["loss"].backward()
            out_t["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            window += torch.stack([out_t[k].detach().double() for k in keys])
            seen += 1
            done = step + 1

            evaluate_now = done % t.eval_every == 0 or done == t.steps
            save_now = done % t.checkpoint_every == 0 or done == t.steps
            if not (done % LOG_EVERY == 0 or evaluate_now or save_now):
                bar.update(1)
                continue
            # a boundary: read the losses back (the only host sync), check, record
            flags = torch.tensor([0 < t.max_seconds <= time.perf_counter() - started],
                                 dtype=torch.float64, device=device)
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(window)
                dist.broadcast(flags, 0)
                window /= world
            means = (window / seen).tolist()
            out_of_time = bool(flags[0])
            if not all(math.isfinite(v) for v in means):
                bad = ", ".join(f"{k} {v}" for k, v in zip(keys, means, strict=True)
                                if not math.isfinite(v))
                raise UserError(f"{out}: step {done}: {bad} is not finite; stopped (the last "
                                f"checkpoint, step {last_ckpt}, and its init are kept; lower "
                                "optim.lr or check the data)")
            now = time.perf_counter()
            sps = seen * t.batch_size / (now - tick)
            if master:
                rec = {"kind": "train", "step": done, "samples": done * t.batch_size, "lr": lr,
                       "samples_per_s": round(sps, 1), **dict(zip(keys, means, strict=True))}
                record(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}",
                                samples_s=f"{sps:,.0f}", refresh=False)
            window.zero_()
            seen = 0
            if master and (evaluate_now or save_now or out_of_time):
                if evaluate_now or out_of_time:
                    last_val = evaluate(cfg, model, compiled, edges, val_cols, policy_on,
                                        value_on, afterstate)
                    train_mode()
                    if last_val:
                        record({"kind": "val", "step": done, **last_val})
                        bar.write(f"step {done}: " + ", ".join(
                            f"{k} {v:.4g}" for k, v in last_val.items()))
                if save_now or out_of_time:
                    blob = {"step": done, "model": model.state_dict(),
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                            "rng": torch.get_rng_state(),
                            "cuda_rng": (torch.cuda.get_rng_state()
                                         if device.type == "cuda" else None),
                            "config": json.dumps(config_json, indent=2, sort_keys=True),
                            "train_rows": len(source.train_rows)}
                    _save(out, model, blob, extra)
                    _plot(records, out / CURVES)
                    last_ckpt = done
            tick = time.perf_counter()  # validation and saving are not training throughput
            bar.update(1)
            if out_of_time:
                bar.write(f"train.max_seconds ({t.max_seconds:g} s) reached after {done} steps")
                break
    return {**last_val, "samples_per_s": sps}
