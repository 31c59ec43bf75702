"""Value maths, in one place: MuZero's invertible transform h and its inverse.

    h(x)    = sign(x) (sqrt(|x| + 1) - 1) + eps x
    h^-1(y) = sign(y) (((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1)

h compresses returns of 10^0..10^6 points to a range a network regresses comfortably
(h(10^6) ~ 1999 at eps = 0.001) while staying invertible; eps x sits outside the sign, so h is
odd and strictly increasing. The inverse is computed in a rationalised form: with
s = sqrt(|x| + 1) - 1 >= 0, |y| = (1 + 2 eps) s + eps s^2, so

    s = 2 |y| / (1 + 2 eps + sqrt((1 + 2 eps)^2 + 4 eps |y|)),    h^-1(y) = sign(y) s (s + 2)

(the same root as the textbook form). h itself uses sqrt(|x| + 1) - 1 = |x| / (sqrt(|x| + 1) + 1).
No step subtracts nearly equal numbers, so both keep full relative accuracy near 0, in
float32 too. Both functions work on NumPy arrays (any float dtype, computed in float64 when given
float64) and on torch tensors; `h_scalar` is the same h for one float inside numba kernels.
"""

from __future__ import annotations

import math

from numba import njit

DEFAULT_EPSILON = 1e-3


def _lib(x):
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    import numpy as np

    return np


def h(x, eps: float = DEFAULT_EPSILON):
    """MuZero's transform: sign(x)(sqrt(|x|+1) - 1) + eps x."""
    lib = _lib(x)
    a = lib.abs(x)
    return lib.sign(x) * a / (lib.sqrt(a + 1) + 1) + eps * x  # sqrt(a+1) - 1, rationalised


@njit(cache=True, nogil=True)
def h_scalar(x: float, eps: float) -> float:
    """`h` of one float, callable from numba kernels (same formula, same rounding order)."""
    a = abs(x)
    return math.copysign(a / (math.sqrt(a + 1.0) + 1.0), x) + eps * x


def h_inverse(y, eps: float = DEFAULT_EPSILON):
    """The exact inverse of `h` (rationalised: no cancellation near 0)."""
    lib = _lib(y)
    b = 1 + 2 * eps
    s = 2 * lib.abs(y) / (b + lib.sqrt(b * b + 4 * eps * lib.abs(y)))  # s = sqrt(|x| + 1) - 1
    return lib.sign(y) * s * (s + 2)
