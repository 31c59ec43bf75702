"""Value maths: h and its inverse (golden values, identities, float32 accuracy near 0), the
support, two-hot projection and per-atom decoding, on NumPy and torch."""

import math

import numpy as np
import pytest
import torch

from lab2048.value_transform import (
    DEFAULT_EPSILON,
    Support,
    decode,
    h,
    h_inverse,
    h_scalar,
    two_hot,
)

# Supports with step sizes 1 (the default), 0.25, 2.5 and 100, one of them off zero
SUPPORTS = [Support(), Support(0.0, 50.0, 201), Support(-10.0, 290.0, 121), Support(0, 600, 7)]


def test_h_golden_values():
    assert h(1.0) == pytest.approx(math.sqrt(2) - 1 + 0.001, rel=1e-15)
    assert h(-1.0) == pytest.approx(-(math.sqrt(2) - 1 + 0.001), rel=1e-15)
    assert h(0.0) == 0.0
    assert h(3.0) == pytest.approx(1 + 0.003, rel=1e-15)
    assert h(8.0, eps=0.01) == pytest.approx(2 + 0.08, rel=1e-15)
    assert h(1e6) == pytest.approx(math.sqrt(1e6 + 1) - 1 + 1000, rel=1e-15)
    assert h_scalar(3.0, DEFAULT_EPSILON) == h(3.0)


@pytest.mark.parametrize("eps", [1e-3, 1e-2, 0.1])
def test_h_odd_increasing_and_inverse_is_exact(eps):
    x = np.concatenate([-np.logspace(-6, 7, 400)[::-1], [0.0], np.logspace(-6, 7, 400)])
    y = h(x, eps)
    assert np.all(np.diff(y) > 0)
    np.testing.assert_array_equal(h(-x, eps), -y)
    np.testing.assert_allclose(h_inverse(y, eps), x, rtol=1e-12)
    np.testing.assert_allclose(h(h_inverse(y, eps), eps), y, rtol=1e-12)


def test_h_and_inverse_keep_relative_accuracy_near_zero_in_float32():
    x = np.logspace(-30, 5, 200).astype(np.float32)
    for lib_x in (x, torch.from_numpy(x)):
        y = h(lib_x)
        back = np.asarray(h_inverse(y))
        assert np.asarray(y).dtype == np.float32 and back.dtype == np.float32
        np.testing.assert_allclose(back, x, rtol=2e-6)
        exact = h(x.astype(np.float64))
        np.testing.assert_allclose(np.asarray(y), exact, rtol=2e-6)


def test_support_geometry():
    s = Support()
    assert (s.min, s.max, s.n, s.step) == (0.0, 600.0, 601, 1.0)
    assert s.atoms[0] == 0.0 and s.atoms[-1] == 600.0 and len(s.atoms) == 601
    assert Support(0.0, 1.0, 5).step == 0.25
    for bad in [(0.0, 0.0, 5), (1.0, 0.0, 5), (0.0, 1.0, 1), (0.0, math.inf, 5)]:
        with pytest.raises(ValueError):
            Support(*bad)


def _check_two_hot(probs, y, support):
    probs, y = np.asarray(probs, np.float64), np.asarray(y, np.float64)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert (probs >= 0).all()
    clipped = np.clip(y, support.min, support.max)
    np.testing.assert_allclose(probs @ support.atoms, clipped, rtol=1e-6,
                               atol=1e-6 * support.step)
    nonzero = [np.flatnonzero(row) for row in probs.reshape(-1, support.n)]
    assert all(1 <= len(nz) <= 2 and nz[-1] - nz[0] <= 1 for nz in nonzero)


@pytest.mark.parametrize("support", SUPPORTS, ids=lambda s: f"step{s.step:g}")
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_two_hot_properties(support, lib):
    rng = np.random.default_rng(0)
    inside = rng.uniform(support.min, support.max, 501)
    special = np.concatenate([support.atoms[[0, 1, support.n // 2, -2, -1]],
                              [support.min - 1, support.max + 1, -1e9, 1e9]])
    y = np.concatenate([inside, special]).reshape(3, -1)
    given = torch.tensor(y) if lib == "torch" else y
    before = given.clone() if lib == "torch" else given.copy()
    probs = two_hot(given, support)
    assert tuple(probs.shape) == (*y.shape, support.n)
    assert type(probs) is type(given)
    _check_two_hot(probs, y, support)
    assert (given == before).all()  # the input is never modified
    # exact atoms, the last atom and out-of-range values: the whole mass on one atom
    for value, atom in [(support.atoms[-1], -1), (support.max + 1, -1), (support.min - 5, 0),
                        (support.atoms[2], 2)]:
        row = np.asarray(two_hot(np.array([value]), support))[0]
        assert row[atom] == pytest.approx(1.0, abs=1e-9)


def test_two_hot_keeps_float32_and_device_in_torch():
    y = torch.tensor([0.5, 3.25, 600.0], dtype=torch.float32)
    probs = two_hot(y, Support())
    assert probs.dtype == torch.float32 and probs.device == y.device
    assert probs[0, 0] == 0.5 and probs[1, 3] == 0.75 and probs[1, 4] == 0.25
    assert probs[2, 600] == 1.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_two_hot_refuses_non_finite(bad):
    with pytest.raises(ValueError, match="non-finite"):
        two_hot(np.array([1.0, bad]), Support())
    with pytest.raises(ValueError, match="non-finite"):
        two_hot(torch.tensor([1.0, bad]), Support())


@pytest.mark.parametrize("support", SUPPORTS, ids=lambda s: f"step{s.step:g}")
def test_decode_of_two_hot_gives_the_value_and_interpolates_in_raw_space(support):
    y = np.linspace(support.min, support.max, 37)
    out = decode(two_hot(y, support), support)
    np.testing.assert_allclose(out.xform, y, rtol=1e-9, atol=1e-9)
    # points: h^-1 interpolated linearly between the two atoms around y
    lo = np.clip(np.floor((y - support.min) / support.step), 0, support.n - 2).astype(int)
    a, b = support.atoms[lo], support.atoms[lo + 1]
    t = (y - a) / (b - a)
    expected = (1 - t) * h_inverse(a) + t * h_inverse(b)
    np.testing.assert_allclose(out.points, expected, rtol=1e-9, atol=1e-9)
    # on the atoms themselves, exact
    atoms_out = decode(two_hot(support.atoms, support), support)
    np.testing.assert_allclose(atoms_out.points, h_inverse(support.atoms), rtol=1e-9, atol=1e-9)


def test_decode_torch_matches_numpy():
    support = Support()
    logits = torch.randn(5, support.n, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits, -1)
    t = decode(probs, support)
    n = decode(probs.double().numpy(), support)
    assert t.points.dtype == torch.float32 and t.points.shape == (5,)
    np.testing.assert_allclose(t.xform.numpy(), n.xform, rtol=1e-5)
    np.testing.assert_allclose(t.points.numpy(), n.points, rtol=1e-5)


@pytest.mark.parametrize("support", SUPPORTS[:3], ids=lambda s: f"step{s.step:g}")
def test_decoding_the_mean_two_hot_of_noisy_returns_recovers_their_mean(support):
    """Lognormal returns: per-atom decoding is unbiased to 1%, inverting the h-space mean is not."""
    rng = np.random.default_rng(1)
    top = float(h_inverse(support.max))
    returns = np.minimum(rng.lognormal(math.log(top / 20), 0.8, 200_000), top)
    mean_probs = two_hot(h(returns), support).mean(0)
    out = decode(mean_probs, support)
    assert out.points == pytest.approx(returns.mean(), rel=0.01)
    assert h_inverse(out.xform) < 0.9 * returns.mean()  # the Jensen bias per-atom decode avoids


def test_importing_the_maths_loads_neither_numba_nor_torch():
    import subprocess
    import sys

    code = ("import sys; from lab2048.value_transform import h, two_hot, Support\n"
            "import numpy as np; two_hot(h(np.arange(5.0)), Support())\n"
            "print('numba' in sys.modules, 'torch' in sys.modules)\n"
            "from lab2048.value_transform import h_scalar\n"
            "from numba import njit\n"
            "f = njit(lambda x: h_scalar(x, 0.001))\n"
            "print('numba' in sys.modules, f(3.0) == h(3.0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False", "True", "True"]


def test_dispatch_is_by_type():
    x = np.array([0.5, 3.0])
    assert isinstance(h(x), np.ndarray) and isinstance(h(torch.from_numpy(x)), torch.Tensor)
    assert isinstance(h_inverse(torch.tensor([1.0])), torch.Tensor)
    np.testing.assert_allclose(h(torch.from_numpy(x)).numpy(), h(x), rtol=1e-15)
    with pytest.raises(AttributeError):
        from lab2048 import value_transform

        value_transform.not_a_name  # noqa: B018
