"""Intervals for evaluations: pure functions of the games, with the formula in each docstring.

Games of several agents on the same seeds meet the same spawns, so agents are compared by the
paired differences over seeds, whose spread is smaller than either agent's.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile (Wilson intervals)


def t_within(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with df degrees of freedom (Abramowitz & Stegun 26.7.3-4):
    with θ = atan(t/√ν), c = cos²θ,
        ν odd:  (2/π)(θ + sinθ cosθ Σ_{0<=k<(ν-1)/2} a_k c^k),  a_0 = 1, a_k = a_{k-1}·2k/(2k+1)
        ν even: sinθ Σ_{0<=k<ν/2} b_k c^k,                      b_0 = 1, b_k = b_{k-1}(2k-1)/2k
    (the odd sum is empty for ν = 1)."""
    theta = math.atan(t / math.sqrt(df))
    c = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2:
        for k in range(1, (df - 1) // 2):
            term *= c * (2 * k) / (2 * k + 1)
            total += term
        sincos = math.sin(theta) * math.cos(theta) if df > 1 else 0.0
        return 2 / math.pi * (theta + sincos * total)
    for k in range(1, df // 2):
        term *= c * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(df: int, level: float = 0.95) -> float:
    """The t with P(|T| <= t) = level (the two-sided interval's multiplier), by bisection on
    `t_within` to 1e-12."""
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df}")
    lo, hi = 0.0, 1.0
    while t_within(hi, df) < level:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_within(mid, df) < level else (lo, mid)
    return 0.5 * (lo + hi)


def mean_interval(x) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t interval  x̄ ± t(n-1) · s / √n  (s the sample standard
    deviation); the interval is the mean itself for one value."""
    x = np.asarray(x, np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, mean, mean
    half = t_quantile(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def paired_difference(a, b) -> tuple[float, float, float]:
    """(mean, low, high) of a_i - b_i over pairs (the same seed): the 95% t interval of the
    differences, which is narrower than either mean's when the pairs co-vary."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} and {b.shape}")
    return mean_interval(a - b)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(k/n, low, high): the Wilson score interval of a proportion,
        (p̂ + z²/2n ± z √(p̂(1 - p̂)/n + z²/4n²)) / (1 + z²/n),
    which stays inside [0, 1] and is not empty at k = 0 or k = n."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)
