"""The training loop, nanoGPT-style: one function, `train(cfg)`, readable top to bottom.

Choices
- Modes: `scratch` co-trains policy and value heads from a fresh model; `joint` fine-tunes an
  init (its value head kept when the configs match, else fresh); `value_only` trains the value
  head of an init alone: the policy head is frozen, the encoder too with `freeze_trunk` (then it
  runs without gradients and in eval mode). Frozen parameters are left out of the optimizer,
  so weight decay cannot move them either.
- Loss = policy_weight x policy loss + value_weight x value loss (objectives.py, float32).
- AdamW (weight decay on matrices and embeddings only), linear warmup then warmup-stable-decay
  (linear decay over the last `decay_fraction` of steps) or cosine, down to min_lr_ratio x lr;
  global gradient-norm clipping. bf16 autocast and optional torch.compile on CUDA, float32 on
  CPU.
- A fresh value head starts at the mean training return (the head's `prior`), so the first
  steps do not spend themselves learning the offset.
- Run directory: `metrics.jsonl` (one JSON object per record: kind "train" every 10 steps
  and at checkpoints, averaging the steps since the last one; kind "val" at each validation),
  `curves.png`, `checkpoint.pt` and `init/` (config.json, model.safetensors,
  training-config.json, tokenizer.json for binned_ev), each replaced atomically at every
  checkpoint and at the end.
- Resume: the checkpoint holds model, optimizer, schedule, the step and torch's RNG states;
  the data order and augmentation are pure functions of (seed, step) (loader.py). A run killed
  at any moment continues from its last checkpoint exactly as if it had not been interrupted;
  metrics recorded after that checkpoint are dropped and recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from lab2048.errors import UserError
from lab2048.io import atomic_path, progress_bar
from lab2048.model import EvBins, Model, load_init, save_init
from lab2048.train.config import TrainConfig, model_config
from lab2048.train.loader import Batch, Loader, ev_classes, fit_edges
from lab2048.train.objectives import (
    ValueStats,
    agreement,
    policy_loss,
    value_loss,
    value_target,
)

CHECKPOINT, METRICS, CURVES, INIT = "checkpoint.pt", "metrics.jsonl", "curves.png", "init"
LOG_EVERY = 10
# keys that may change between a run and its resumption
_RESUMABLE = {"train.progress", "train.device", "train.compile", "train.out",
              "train.max_seconds", "train.threads"}


def lr_factor(step: int, cfg, total: int) -> float:
    """Learning-rate multiplier at `step` (0-based) of `total` steps."""
    o = cfg
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "cosine":
        t = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1)))
    decay_start = total - int(o.decay_fraction * total)
    if step < max(decay_start, o.warmup_steps):
        return 1.0
    t = (step - decay_start + 1) / max(1, total - decay_start)
    return 1 - (1 - o.min_lr_ratio) * min(t, 1.0)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _tensors(batch: Batch, device: torch.device) -> dict[str, torch.Tensor]:
    return {"tokens": torch.from_numpy(batch.tokens).to(device, torch.long),
            "legal": torch.from_numpy(batch.legal).to(device),
            "move": torch.from_numpy(batch.move).to(device),
            "return_raw": torch.from_numpy(batch.return_raw).to(device),
            "return_scaled": torch.from_numpy(batch.return_scaled).to(device)}


class _Run:
    """The model and what its steps need; `step_loss` and `evaluate` are the two computations."""

    def __init__(self, cfg: TrainConfig, loader: Loader, device: torch.device) -> None:
        self.cfg, self.loader, self.device = cfg, loader, device
        mcfg = model_config(cfg)
        o, t = cfg.objective, cfg.train
        self.value_on = mcfg.value_head.enabled and (o.value_weight > 0 or t.mode == "value_only")
        self.policy_on = t.mode != "value_only" and o.policy_weight > 0
        if t.mode == "value_only" and not mcfg.value_head.enabled:
            raise UserError("train.mode = 'value_only' needs [model.value_head] enabled = true")
        if not (self.value_on or self.policy_on):
            raise UserError("nothing to train: both objective weights are 0 (or the value "
                            "head is off)")
        meta = loader.meta
        vh = mcfg.value_head
        if mcfg.value_head.enabled and o.value_target == "return_scaled" and (
                meta["reward_scale"] != vh.reward_scale or meta["epsilon"] != vh.epsilon):
            raise UserError(
                f"sidecar values.json has reward_scale {meta['reward_scale']}, eps "
                f"{meta['epsilon']}; model.value_head has {vh.reward_scale}, {vh.epsilon}: "
                "make them equal or set objective.value_target = 'return_raw'")
        if mcfg.value_head.enabled:  # a fresh head starts at the mean training return
            sample = loader.sample_train(100_000)
            vh = dataclasses.replace(vh, prior=round(float(sample.return_raw.mean()), 3))
            mcfg = dataclasses.replace(mcfg, value_head=vh)
        torch.manual_seed(t.seed)
        if t.mode == "scratch":
            bins = None
            if mcfg.policy_head == "binned_ev":
                s = loader.sample_train(1_000_000)
                bins = EvBins(tuple(fit_edges(s.branch_evs, s.legal, mcfg.ev_bins,
                                              o.failure_value)))
            model = Model(mcfg, bins)
        else:
            model = load_init(t.init, config=mcfg)
        self.model = model.to(device).train()
        self.mcfg, self.kind = mcfg, mcfg.policy_head
        self.edges = np.array(model.bins.edges) if model.bins is not None else None

        if t.mode == "value_only":
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith("value."))
        self.frozen_trunk = t.mode == "value_only" and t.freeze_trunk
        if t.mode == "value_only" and not t.freeze_trunk:
            for p in model.encoder.parameters():
                p.requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2],
                   "weight_decay": cfg.optim.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=(cfg.optim.beta1,
                                                                     cfg.optim.beta2))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, cfg.optim, t.steps))
        self.forward = model
        if t.compile and device.type == "cuda":
            self.forward = torch.compile(model)
        self._set_train_mode()

    def _set_train_mode(self) -> None:
        self.model.train()
        if self.frozen_trunk:
            self.model.encoder.eval()

    def _outputs(self, x: dict[str, torch.Tensor]):
        with torch.autocast("cuda", torch.bfloat16, enabled=self.device.type == "cuda"):
            if self.frozen_trunk:
                with torch.no_grad():
                    hidden = self.model.encoder(x["tokens"])
                return None, self.model.value(hidden)
            if not self.policy_on:
                hidden = self.model.encoder(x["tokens"])
                return None, self.model.value(hidden)
            _, policy_out, value_out = self.forward(x["tokens"], with_value=self.value_on)
            return policy_out, value_out

    def losses(self, batch: Batch, x: dict[str, torch.Tensor], policy_out, value_out):
        o = self.cfg.objective
        out = {}
        if policy_out is not None:
            ev_class = None
            if self.kind == "binned_ev":
                ev_class = torch.from_numpy(ev_classes(batch.branch_evs, batch.legal, self.edges,
                                                       o.failure_value)).to(self.device)
            out["policy_loss"] = policy_loss(policy_out, self.kind, x["legal"], x["move"],
                                             ev_class)
        if value_out is not None:
            target = value_target(self.mcfg.value_head, o.value_target, x["return_raw"],
                                  x["return_scaled"])
            out["value_loss"] = value_loss(value_out, self.mcfg.value_head, target)
        loss = 0.0
        if self.policy_on:
            loss = loss + o.policy_weight * out["policy_loss"]
        if self.value_on:
            loss = loss + o.value_weight * out["value_loss"]
        out["loss"] = loss
        return out

    def step(self, batch: Batch) -> dict[str, float]:
        x = _tensors(batch, self.device)
        out = self.losses(batch, x, *self._outputs(x))
        out["loss"].backward()
        if self.cfg.optim.grad_clip > 0:
            params = [p for g in self.opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return {k: float(v.detach()) for k, v in out.items()}

    @torch.no_grad()
    def evaluate(self, batch_size: int = 1024) -> dict[str, float]:
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        stats = ValueStats()
        for batch in self.loader.val_batches(batch_size):
            x = _tensors(batch, self.device)
            with torch.autocast("cuda", torch.bfloat16, enabled=self.device.type == "cuda"):
                _, policy_out, value_out = self.model(x["tokens"], with_value=self.value_on)
            out = self.losses(batch, x, policy_out if self.policy_on else None, value_out)
            out["policy_agreement"] = agreement(policy_out, self.kind, x["legal"],
                                                x["move"]).mean()
            b = len(batch.move)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v) * b
            n += b
            if value_out is not None:
                stats.add(self.model.value.decode(value_out).points, x["return_raw"])
        self._set_train_mode()
        if n == 0:
            return {}
        return {**{k: v / n for k, v in sums.items()}, **stats.result()}


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def _prepare_out(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool):
    """The checkpoint to resume from (or None), after refusing what must be refused."""
    ckpt = out / CHECKPOINT
    if resume:
        if not ckpt.is_file():
            if out.exists() and any(out.iterdir()):
                raise UserError(f"{ckpt}: no checkpoint to resume from")
            return None
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        old = _flatten(json.loads(state["config"]))
        new = _flatten(cfg.to_dict())
        diff = sorted(k for k in set(old) | set(new)
                      if k not in _RESUMABLE and old.get(k) != new.get(k))
        if diff:
            raise UserError(f"{ckpt}: was made with another config ({', '.join(diff[:5])} "
                            "differ); resume with the same config")
        return state
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out}: already exists (pass --resume to continue it or "
                            "--overwrite to replace it)")
        import shutil

        for name in (CHECKPOINT, METRICS, CURVES):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / INIT, ignore_errors=True)
    return None


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          stop_after: int | None = None) -> dict:
    """Train as configured; returns the last validation metrics (plus samples/s).

    `stop_after` ends the loop after that many steps as if the process had been killed then
    (tests use it to resume); checkpoints written before remain."""
    t = cfg.train
    out = Path(t.out)
    state = _prepare_out(out, cfg, resume, overwrite)
    device = torch.device("cuda" if t.device == "auto" and torch.cuda.is_available()
                          else "cpu" if t.device == "auto" else t.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device = 'cuda' but no CUDA device is available")
    if t.threads:
        torch.set_num_threads(t.threads)
    loader = Loader(cfg.data, t.batch_size, t.seed)
    run = _Run(cfg, loader, device)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    start = 0
    if state is not None:
        if state["train_rows"] != len(loader.train_rows):
            raise UserError(f"{out / CHECKPOINT}: made for {state['train_rows']} training steps, "
                            f"the data now has {len(loader.train_rows)}")
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        start = state["step"]
        if (out / METRICS).exists():
            records = [r for r in map(json.loads, (out / METRICS).read_text().splitlines())
                       if r["step"] <= start]
    with atomic_path(out / METRICS) as tmp:  # metrics after the checkpoint are recomputed
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics_file = (out / METRICS).open("a")
    config_text = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)

    def record(r: dict) -> None:
        records.append(r)
        metrics_file.write(json.dumps(r) + "\n")
        metrics_file.flush()

    def checkpoint(step: int) -> None:
        save_init(run.model, out / INIT, overwrite=True,
                  extra_json={"training-config.json": cfg.to_dict()})
        blob = {"step": step, "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
                "scheduler": run.sched.state_dict(), "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "config": config_text, "train_rows": len(loader.train_rows)}
        with atomic_path(out / CHECKPOINT) as tmp:
            torch.save(blob, tmp)
        _plot(records, out / CURVES)

    last_val: dict = {}
    window: dict[str, float] = {}
    seen, tick, sps = 0, time.perf_counter(), 0.0
    started, done = time.perf_counter(), start
    with progress_bar(t.progress, total=t.steps, initial=start, unit="step",
                      desc=f"train {t.mode}") as bar:
        for step in range(start, t.steps):
            if stop_after is not None and step >= stop_after:
                break
            lr = run.sched.get_last_lr()[0]
            losses = run.step(loader.train_batch(step))
            for k, v in losses.items():
                window[k] = window.get(k, 0.0) + v
            seen += 1
            done = step + 1
            out_of_time = 0 < t.max_seconds <= time.perf_counter() - started
            if (done % LOG_EVERY == 0 or done == t.steps or done % t.checkpoint_every == 0
                    or out_of_time):
                now = time.perf_counter()
                sps = seen * t.batch_size / (now - tick)
                rec = {"kind": "train", "step": done, "samples": done * t.batch_size, "lr": lr,
                       "samples_per_s": round(sps, 1),
                       **{k: v / seen for k, v in window.items()}}
                record(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}",
                                samples_s=f"{sps:,.0f}", refresh=False)
                window, seen, tick = {}, 0, time.perf_counter()
            if done % t.eval_every == 0 or done == t.steps or out_of_time:
                last_val = run.evaluate()
                if last_val:
                    record({"kind": "val", "step": done, **last_val})
                    bar.write(f"step {done}: " + ", ".join(
                        f"{k} {v:.4g}" for k, v in last_val.items()))
                tick = time.perf_counter()  # validation time is not training throughput
            if done % t.checkpoint_every == 0 or done == t.steps or out_of_time:
                checkpoint(done)
                tick = time.perf_counter()
            bar.update(1)
            if out_of_time:
                bar.write(f"train.max_seconds ({t.max_seconds:g} s) reached after {done} steps")
                break
    metrics_file.close()
    return {**last_val, "samples_per_s": sps}
