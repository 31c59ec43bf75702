"""Returns maths: golden values by hand and the identities between the three targets."""

import numpy as np
import pytest

from lab2048.data.returns import discounted_returns, lambda_returns, n_step_returns

R = np.array([4.0, 0.0, 4.0])
V = np.array([10.0, 8.0, 6.0])


def test_golden_values_by_hand():
    assert discounted_returns(R, 0.5).tolist() == [5.0, 2.0, 4.0]  # 4 + .5 (0 + .5 4)
    assert discounted_returns(R, 0.5, 2.0).tolist() == [5.25, 2.5, 5.0]  # G_3 = 2
    assert n_step_returns(R, V, 0.5, 1).tolist() == [8.0, 3.0, 4.0]  # r_t + .5 V_{t+1}
    assert n_step_returns(R, V, 0.5, 2).tolist() == [5.5, 2.0, 4.0]  # 4 + .25 V_2 = 5.5
    # G_2 = 4; G_1 = 0 + .5 (.5 6 + .5 4) = 2.5; G_0 = 4 + .5 (.5 8 + .5 2.5) = 6.625
    assert lambda_returns(R, V, 0.5, 0.5).tolist() == [6.625, 2.5, 4.0]
    assert discounted_returns(np.zeros(0), 0.9).shape == (0,)


def _episode(seed, t=60):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 9, t).astype(np.float64) * 4,
            rng.normal(500, 200, t), float(rng.normal(100, 10)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma", [0.9, 0.997, 1.0])
def test_identities(seed, gamma):
    r, v, boot = _episode(seed)
    mc = discounted_returns(r, gamma, boot)
    assert np.allclose(lambda_returns(r, v, gamma, 1.0, boot), mc, rtol=1e-12)
    assert np.allclose(lambda_returns(r, v, gamma, 0.0, boot), n_step_returns(r, v, gamma, 1,
                                                                              boot))
    td = r + gamma * np.append(v[1:], boot)  # one-step TD target, written out
    assert np.allclose(n_step_returns(r, v, gamma, 1, boot), td, rtol=1e-12)
    for n in (len(r), len(r) + 5):
        assert np.allclose(n_step_returns(r, v, gamma, n, boot), mc, rtol=1e-12)
    # the λ-return is the (1-λ) λ^(n-1) weighted mean of the n-step returns (and the MC tail)
    lam, t_len = 0.7, len(r)
    nsteps = np.stack([n_step_returns(r, v, gamma, n, boot) for n in range(1, t_len + 1)])
    want = np.empty(t_len)
    for t in range(t_len):
        k = t_len - t  # n-step returns from t are distinct up to n = k (then MC)
        w = (1 - lam) * lam ** np.arange(k - 1)
        want[t] = w @ nsteps[:k - 1, t] + lam ** (k - 1) * mc[t]
    assert np.allclose(lambda_returns(r, v, gamma, lam, boot), want, rtol=1e-10)


def test_gamma_one_is_the_remaining_score():
    r, v, _ = _episode(3)
    assert np.array_equal(discounted_returns(r, 1.0), r[::-1].cumsum()[::-1])
    n = 7
    tails = np.array([r[t:t + n].sum() + (v[t + n] if t + n < len(r) else 0.0)
                      for t in range(len(r))])
    assert np.allclose(n_step_returns(r, v, 1.0, n), tails, rtol=0, atol=1e-9)


def test_n_must_be_positive():
    with pytest.raises(ValueError):
        n_step_returns(R, V, 0.5, 0)
