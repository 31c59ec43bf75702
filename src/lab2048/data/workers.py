"""Worker processes for `pack` and `generate` that die with their parent.

    with process_pool(workers) as pool: ...

Choices
- `spawn` start method: no numba or thread state is forked into the workers.
- A worker must not outlive its parent (a SIGKILLed `generate` would leave processes of
  ~170 MB playing on): on Linux each worker asks the kernel to SIGKILL it when its parent
  dies (prctl PR_SET_PDEATHSIG, through ctypes), and exits at once if the parent is already
  gone. Elsewhere ProcessPoolExecutor's own check (the parent's pipe closing) applies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Worker initializer: SIGKILL this process when the parent dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def process_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_die_with_parent, initargs=(os.getpid(),))
