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

A categorical value head predicts a distribution over a `Support` (evenly spaced atoms in
h-space); `two_hot` turns h-space targets into such distributions and `decode` turns
distributions back into the h-space expectation and the value in points. Decoding is per atom,
sum_i p_i h^-1(atom_i), never h^-1(sum_i p_i atom_i), which is biased low (Jensen: h^-1 is
convex).

Choices
- One function per formula for both array libraries: an argument that is a torch.Tensor gets
  torch operations, anything else NumPy. A tensor can exist only once torch is imported, so the
  test asks `sys.modules` and never imports torch itself (NumPy callers never load it).
- `h_scalar` is compiled by numba when first imported from here (a module `__getattr__`), so
  importing this module does not load numba: the server's import chain stays free of it.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lab2048.value_target import DEFAULT_EPSILON


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _lib(x):
    """torch for a tensor, else NumPy."""
    return sys.modules["torch"] if _is_tensor(x) else np


def h(x, eps: float = DEFAULT_EPSILON):
    """MuZero's transform: sign(x)(sqrt(|x|+1) - 1) + eps x."""
    lib = _lib(x)
    a = lib.abs(x)
    return lib.sign(x) * a / (lib.sqrt(a + 1) + 1) + eps * x  # sqrt(a+1) - 1, rationalised


def _h_scalar(x: float, eps: float) -> float:
    """`h` of one float, callable from numba kernels (same formula, same rounding order)."""
    a = abs(x)
    return math.copysign(a / (math.sqrt(a + 1.0) + 1.0), x) + eps * x


@functools.cache
def _compiled_h_scalar():
    from numba import njit  # lazily: only numba kernels need it

    return njit(cache=True, nogil=True)(_h_scalar)


def __getattr__(name: str):
    if name == "h_scalar":
        return _compiled_h_scalar()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def h_inverse(y, eps: float = DEFAULT_EPSILON):
    """The exact inverse of `h` (rationalised: no cancellation near 0)."""
    lib = _lib(y)
    b = 1 + 2 * eps
    s = 2 * lib.abs(y) / (b + lib.sqrt(b * b + 4 * eps * lib.abs(y)))  # s = sqrt(|x| + 1) - 1
    return lib.sign(y) * s * (s + 2)


@dataclass(frozen=True)
class Support:
    """A categorical value head's atoms: n evenly spaced points on [min, max] in h-space.

    atom_i = min + i step,  step = (max - min) / (n - 1);  n is authoritative (the head's width).
    """

    min: float = 0.0
    max: float = 600.0
    n: int = 601

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min) and math.isfinite(self.max) and self.min < self.max):
            raise ValueError(f"support needs finite min < max, got [{self.min}, {self.max}]")
        if self.n < 2:
            raise ValueError(f"support needs at least 2 atoms, got {self.n}")

    @property
    def step(self) -> float:
        return (self.max - self.min) / (self.n - 1)

    @property
    def atoms(self):
        """The atoms in h-space, float64 NumPy [n] (the last one is exactly `max`)."""
        return np.linspace(self.min, self.max, self.n)


def two_hot(y, support: Support):
    """Probabilities [..., n] putting each h-space value y [...] on its two neighbouring atoms.

        y' = clip(y, min, max),  p = (y' - min) / step,  i = min(floor(p), n - 1)
        probs[i] += 1 - (p - i),  probs[min(i + 1, n - 1)] += p - i

    so sum_i probs_i atom_i = y' and sum_i probs_i = 1. The upper index is clamped and both
    weights are added, so an exact atom, the last atom and out-of-range values all keep mass 1
    on at most two adjacent atoms. `y` is never modified; NumPy in, NumPy out (float64 unless
    given float32), torch in, torch out (y's float dtype and device). Non-finite y raises.
    """
    lib = _lib(y)
    if lib is not np:
        if not y.is_floating_point():
            y = y.float()
        if not bool(lib.isfinite(y).all()):
            raise ValueError("two_hot: non-finite value")
    else:
        y = lib.asarray(y)
        y = y.astype(lib.float32 if y.dtype == lib.float32 else lib.float64)
        if not lib.isfinite(y).all():
            raise ValueError("two_hot: non-finite value")
    pos = (lib.clip(y, support.min, support.max) - support.min) / support.step
    lo = lib.clip(lib.floor(pos), 0, support.n - 1)
    w_hi = pos - lo
    lo_i, hi_i = _index(lib, lo), _index(lib, lib.clip(lo + 1, 0, support.n - 1))
    if lib is not np:
        out = y.new_zeros((*y.shape, support.n))
        out.scatter_add_(-1, lo_i[..., None], (1 - w_hi)[..., None])
        return out.scatter_add_(-1, hi_i[..., None], w_hi[..., None])
    out = lib.zeros((y.size, support.n), y.dtype)
    rows = lib.arange(y.size)
    lib.add.at(out, (rows, lo_i.ravel()), (1 - w_hi).ravel())
    lib.add.at(out, (rows, hi_i.ravel()), w_hi.ravel())
    return out.reshape(*y.shape, support.n)


def _index(lib, x):
    return x.astype(np.int64) if lib is np else x.long()


class Decoded(NamedTuple):
    xform: object  # sum_i p_i atom_i: the expectation in h-space
    points: object  # sum_i p_i h^-1(atom_i): the expectation in raw (return) space


def decode(probs, support: Support, eps: float = DEFAULT_EPSILON) -> Decoded:
    """The h-space expectation and the value in points of distributions probs [..., n].

        xform  = sum_i p_i atom_i
        points = sum_i p_i h^-1(atom_i)      (per-atom decode)

    h^-1 is convex, so h^-1(xform) <= points (Jensen): inverting the h-space mean
    underestimates the mean return, by more the wider the distribution. Decoding each atom
    first gives the mean of the raw values the distribution stands for; for a two-hot target it
    equals interpolating h^-1 linearly between the two atoms. Works on NumPy and torch
    (the result has probs' dtype and device).
    """
    lib = _lib(probs)
    atoms = support.atoms
    raw = h_inverse(atoms, eps)
    if lib is not np:
        atoms = lib.as_tensor(atoms, dtype=probs.dtype, device=probs.device)
        raw = lib.as_tensor(raw, dtype=probs.dtype, device=probs.device)
    else:
        probs = lib.asarray(probs)
        atoms, raw = atoms.astype(probs.dtype), raw.astype(probs.dtype)
    return Decoded((probs * atoms).sum(-1), (probs * raw).sum(-1))
