"""Value targets of one episode as pure functions: Monte Carlo, n-step and λ-returns.

Notation: an episode of T moves, rewards r_0 .. r_{T-1} (r_t is the reward of the move taken at
step t), values V_0 .. V_{T-1} (V_t a model's estimate of the return from the board before
step t), and `bootstrap` = V_T, the value of the state after the last move (0.0 for a finished
game). All arithmetic is float64.

    discounted_returns(r, γ, V_T)       G_t = r_t + γ G_{t+1},               G_T = V_T
    n_step_returns(r, V, γ, n, V_T)     G_t = Σ_{k<m} γ^k r_{t+k} + γ^m V_{t+m},  m = min(n, T−t)
    lambda_returns(r, V, γ, λ, V_T)     G_t = r_t + γ ((1−λ) V_{t+1} + λ G_{t+1}),  G_T = V_T

Identities (tests/test_returns.py): λ = 1 is the Monte Carlo return, λ = 0 the one-step TD
target (= n_step with n = 1); n ≥ T is the Monte Carlo return; γ = 1 gives the sum of the
remaining rewards plus V_T.

Choices
- numba functions (cache=True, nogil=True): callable from Python on NumPy arrays and from the
  sidecar builder's kernels on slices of a chunk, so one definition serves both.
- The n-step return uses the Monte Carlo identity G^(n)_t = G_t − γ^n G_{t+n} + γ^n V_{t+n}
  (one backward pass, O(T) for any n); the cancellation costs about 1e-16 of the return's
  size, far below the float32 the sidecar stores.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def discounted_returns(rewards, gamma, bootstrap=0.0):
    """G_t = r_t + γ G_{t+1} backwards from G_T = bootstrap: float64 [T].

    At γ = 1 and bootstrap 0, G_t = Σ_{k≥t} r_k (the final score minus the score before t)."""
    n = len(rewards)
    out = np.empty(n, np.float64)
    g = np.float64(bootstrap)
    for t in range(n - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


@njit(cache=True, nogil=True)
def n_step_returns(rewards, values, gamma, n, bootstrap=0.0):
    """G_t = Σ_{k<m} γ^k r_{t+k} + γ^m V_{t+m} with m = min(n, T−t) and V_T = bootstrap:
    float64 [T]. `values[t]` is V_t; n ≥ 1. For n ≥ T this is the Monte Carlo return."""
    if n < 1:
        raise ValueError("n_step_returns needs n >= 1")
    mc = discounted_returns(rewards, gamma, bootstrap)  # reaches V_T for every t
    total = len(rewards)
    out = mc.copy()
    gn = gamma ** n
    for t in range(total - n):  # t + n < T: cut the tail at t + n and bootstrap on V_{t+n}
        out[t] = mc[t] - gn * mc[t + n] + gn * values[t + n]
    return out


@njit(cache=True, nogil=True)
def lambda_returns(rewards, values, gamma, lam, bootstrap=0.0):
    """G_t = r_t + γ ((1−λ) V_{t+1} + λ G_{t+1}) backwards from G_T = V_T = bootstrap:
    float64 [T]. `values[t]` is V_t (V_0 is not used). λ = 1: Monte Carlo;
    λ = 0: r_t + γ V_{t+1}."""
    n = len(rewards)
    out = np.empty(n, np.float64)
    g = np.float64(bootstrap)
    v_next = np.float64(bootstrap)
    for t in range(n - 1, -1, -1):
        g = rewards[t] + gamma * ((1.0 - lam) * v_next + lam * g)
        out[t] = g
        v_next = values[t]
    return out
