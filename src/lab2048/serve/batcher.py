"""Server-side micro-batching: concurrent requests share one forward pass.

Choices:
- One collector task on the server's event loop. It takes the first waiting board, then keeps
  filling the batch until it holds `max_batch` boards or `max_wait_ms` has passed since that
  first board, whichever comes first. A request larger than the room left is split: its first
  boards go into this batch, the rest into the next ones (so no forward ever exceeds
  max_batch, and a full queue gives full batches).
- The forward pass runs in one dedicated inference thread (torch releases the GIL), so the
  event loop keeps receiving and answering requests meanwhile; batches run one after another.
- Outputs are written straight into each request's preallocated arrays at the request's own
  offsets, and a request's future resolves when its last board is done.
- The value head runs only on the rows of requests that asked for a value (a batch of
  policy-only requests never runs it); the trunk runs once for all rows.
- A forward that raises fails every request with a board in that batch (`BatchFailed`); the
  collector carries on with the next batch. A cancelled request (its caller went away) is
  dropped when the collector reaches it and never blocks others.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from lab2048.model import Model, move_logits, move_probs


class BatchFailed(RuntimeError):
    """The forward pass of a batch holding some of this request's boards raised."""


@dataclass
class BatchOutputs:
    """What a runner returns for a batch of B rows (V of them asked for a value)."""

    move_probs: np.ndarray  # float32 [B, 4], illegal moves 0 (all 0 if none is legal)
    bin_probs: np.ndarray | None  # float32 [B, 4, classes], binned_ev only
    value: np.ndarray | None  # float32 [V], points, for the rows flagged in need_value
    value_xform: np.ndarray | None  # float32 [V], h-space
    atom_probs: np.ndarray | None  # float32 [V, atoms], cross_entropy heads, when asked


Runner = Callable[[np.ndarray, np.ndarray, np.ndarray, bool], BatchOutputs]


class ModelRunner:
    """The forward pass of a batch: runner(tokens uint8 [B, 16], legal uint8 [B],
    need_value bool [B], atoms: bool) -> BatchOutputs. Same maths as Model.predict."""

    def __init__(self, model: Model):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.kind = model.cfg.policy_head
        self.objective = model.cfg.value_head.objective if model.value is not None else ""

    @torch.no_grad()
    def __call__(self, tokens: np.ndarray, legal: np.ndarray, need_value: np.ndarray,
                 atoms: bool) -> BatchOutputs:
        m = self.model
        t = torch.from_numpy(np.ascontiguousarray(tokens)).to(self.device).long()
        rows = np.flatnonzero(need_value) if m.value is not None else np.empty(0, np.int64)
        with torch.autocast("cuda", torch.bfloat16, enabled=self.device.type == "cuda"):
            hidden = m.encoder(t)
            policy_out = m.policy(hidden)
            value_out = None
            if len(rows):
                sel = hidden if len(rows) == len(t) else hidden[torch.from_numpy(rows).to(
                    self.device)]
                value_out = m.value(sel)
        probs = move_probs(move_logits(policy_out, self.kind), legal)
        out = BatchOutputs(_np(probs), None, None, None, None)
        if self.kind == "binned_ev":
            out.bin_probs = _np(torch.softmax(policy_out.float(), -1))
        if value_out is not None:
            xform, points = m.value.decode(value_out)
            out.value, out.value_xform = _np(points), _np(xform)
            if atoms and self.objective == "cross_entropy":
                out.atom_probs = _np(torch.softmax(value_out.float(), -1))
        return out


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


@dataclass
class Result:
    """One request's outputs (None where not asked for or not available)."""

    move_probs: np.ndarray | None = None  # float32 [n, 4]
    bin_probs: np.ndarray | None = None  # float32 [n, 4, classes]
    value: np.ndarray | None = None  # float32 [n]
    value_xform: np.ndarray | None = None  # float32 [n]
    atom_probs: np.ndarray | None = None  # float32 [n, atoms]


@dataclass(eq=False)
class _Request:
    tokens: np.ndarray
    legal: np.ndarray
    value: bool
    atoms: bool
    future: asyncio.Future
    next: int = 0  # first board not yet put into a batch
    remaining: int = 0  # boards not yet computed
    result: Result = field(default_factory=Result)

    @property
    def n(self) -> int:
        return len(self.tokens)


@dataclass
class BatchStats:
    batches: int = 0
    boards: int = 0
    largest: int = 0
    failed: int = 0
    sizes: collections.Counter = field(default_factory=collections.Counter)

    @property
    def mean(self) -> float:
        return self.boards / max(self.batches, 1)


class Batcher:
    """Gathers concurrent `submit` calls into forward passes of at most `max_batch` boards."""

    def __init__(self, runner: Runner, max_batch: int = 256, max_wait_ms: float = 0.5):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.runner = runner
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._waiting: collections.deque[_Request] = collections.deque()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the collector on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._collect(), name="batcher")

    async def close(self) -> None:
        """Stop collecting; requests still waiting fail with BatchFailed."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            self._waiting.append(self._queue.get_nowait())
        for req in self._waiting:
            if not req.future.done():
                req.future.set_exception(BatchFailed("the server is shutting down"))
        self._waiting.clear()
        self._executor.shutdown(wait=True)

    async def submit(self, tokens: np.ndarray, legal: np.ndarray, *, policy: bool = True,
                     value: bool = False, atoms: bool = False) -> Result:
        """Outputs for boards tokens uint8 [n, 16] with legal-move masks legal uint8 [n]."""
        n = len(tokens)
        if n == 0:
            raise ValueError("empty batch")
        req = _Request(tokens, legal, value, atoms, asyncio.get_running_loop().create_future(),
                       remaining=n)
        r = req.result
        if policy:
            r.move_probs = np.empty((n, 4), np.float32)
        if value:
            r.value, r.value_xform = np.empty(n, np.float32), np.empty(n, np.float32)
        self._queue.put_nowait(req)
        result = await req.future
        if not policy:
            result.move_probs = result.bin_probs = None
        return result

    # --- the collector --------------------------------------------------------------------

    def _next_waiting(self) -> _Request | None:
        """The oldest request with boards left to batch (dropping cancelled or failed ones)."""
        while True:
            while not self._queue.empty():
                self._waiting.append(self._queue.get_nowait())
            while self._waiting and self._waiting[0].future.done():
                self._waiting.popleft()
            if self._waiting or self._queue.empty():
                return self._waiting[0] if self._waiting else None

    async def _gather(self) -> list[tuple[_Request, int, int]]:
        """(request, start, stop) slices of the next batch: first board, then fill."""
        loop = asyncio.get_running_loop()
        slices: list[tuple[_Request, int, int]] = []
        room, deadline = self.max_batch, None
        while room:
            req = self._next_waiting()
            if req is None:
                if deadline is None:  # nothing yet: wait as long as it takes
                    self._waiting.append(await self._queue.get())
                    continue
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    self._waiting.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
                continue
            if deadline is None:
                deadline = loop.time() + self.max_wait
            take = min(room, req.n - req.next)
            slices.append((req, req.next, req.next + take))
            req.next += take
            room -= take
            if req.next == req.n:
                self._waiting.popleft()
        return slices

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            slices = await self._gather()
            slices = [s for s in slices if not s[0].future.done()]
            if not slices:
                continue
            tokens = np.concatenate([r.tokens[a:b] for r, a, b in slices])
            legal = np.concatenate([r.legal[a:b] for r, a, b in slices])
            need_value = np.concatenate([np.full(b - a, r.value) for r, a, b in slices])
            atoms = any(r.atoms for r, _, _ in slices)
            self.stats.batches += 1
            self.stats.boards += len(tokens)
            self.stats.largest = max(self.stats.largest, len(tokens))
            self.stats.sizes[len(tokens)] += 1
            try:
                out = await loop.run_in_executor(self._executor, self.runner, tokens, legal,
                                                 need_value, atoms)
            except Exception as e:  # fail this batch's requests only, then carry on
                self.stats.failed += 1
                for r, _, _ in slices:
                    if not r.future.done():
                        r.future.set_exception(BatchFailed(f"{type(e).__name__}: {e}"))
                continue
            self._scatter(slices, out)

    @staticmethod
    def _scatter(slices: list[tuple[_Request, int, int]], out: BatchOutputs) -> None:
        row = vrow = 0
        for r, a, b in slices:
            k = b - a
            res = r.result
            if not r.future.done():
                if res.move_probs is not None:
                    res.move_probs[a:b] = out.move_probs[row:row + k]
                if out.bin_probs is not None:
                    if res.bin_probs is None:
                        res.bin_probs = np.empty((r.n, *out.bin_probs.shape[1:]), np.float32)
                    res.bin_probs[a:b] = out.bin_probs[row:row + k]
                if r.value and out.value is not None:
                    res.value[a:b] = out.value[vrow:vrow + k]
                    res.value_xform[a:b] = out.value_xform[vrow:vrow + k]
                    if r.atoms and out.atom_probs is not None:
                        if res.atom_probs is None:
                            res.atom_probs = np.empty((r.n, out.atom_probs.shape[1]), np.float32)
                        res.atom_probs[a:b] = out.atom_probs[vrow:vrow + k]
                r.remaining -= k
                if r.remaining == 0:
                    r.future.set_result(res)
            row += k
            vrow += k if (r.value and out.value is not None) else 0
