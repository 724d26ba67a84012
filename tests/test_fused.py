"""The fused numba sweep (amp.fused) and the channels' scalar kernels (denoisers/kernels.py).

The kernels must reproduce the channels' vectorised `_posterior` (and an mpmath reference far in
the tails), and GAMP must give the same iterates on the fused and the generic row-block path.
"""
import math

import numpy as np
import pytest

import amp
import denoisers as dn
from amp import fused
from amp.gamp import output_sweep
from denoisers import kernels

CHANNELS = [dn.Linear(0.1), dn.Sign(), dn.Sign(0.25), dn.ReLU(), dn.Abs()]
#: label values per channel class, covering every branch of the kernels
LABELS = {"Linear": (-1.3, 0.4), "Sign": (-1.0, 1.0), "ReLU": (0.0, 0.8), "Abs": (0.0, 0.5, 2.0)}


def _kernel_values(channel, y, omega, V):
    fn, params = channel.scalar_kernel()
    return np.array([fn(y, o, V, params) for o in omega]).T


@pytest.mark.parametrize("channel", CHANNELS, ids=repr)
def test_kernel_matches_posterior(channel):
    """g, dg of the kernel agree with `_posterior` to 1e-12 relative for |omega| / sqrt(V) <= 10."""
    V = 0.37
    rng = np.random.default_rng(0)
    omega = np.concatenate([rng.normal(size=200), np.linspace(-10.0, 10.0, 81) * math.sqrt(V)])
    for y in LABELS[type(channel).__name__]:
        _, g, dg = channel._posterior(np.full(omega.shape, y), omega, V)
        g_k, dg_k = _kernel_values(channel, y, omega, V)
        np.testing.assert_allclose(g_k, g, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(dg_k, dg, rtol=1e-12, atol=1e-300)


def _sign_reference(u):
    """R = N(u) / Phi(u) and h = u + R in 40 digits."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(40):
        r = mp.npdf(mp.mpf(u)) / mp.ncdf(mp.mpf(u))
        return float(r), float(mp.mpf(u) + r)


@pytest.mark.parametrize("channel", [dn.Sign(), dn.Sign(0.25), dn.ReLU()], ids=repr)
def test_kernel_tails_against_mpmath(channel):
    """Far in both tails (|omega| / sqrt(s) up to 30) g and dg keep 1e-12 relative accuracy.

    `_posterior` itself loses digits in dg there (to ~1e-10 at 30: a - R cancels in
    truncated_mixture), so the reference is the exact g = sigma R / sqrt(s), dg = -R h / s.
    """
    V = 0.37
    s = V + channel.noise_var
    sigma = -1.0 if isinstance(channel, dn.ReLU) else 1.0  # ReLU's y = 0 branch is Sign at label -1
    y = 0.0 if isinstance(channel, dn.ReLU) else 1.0
    omega = np.linspace(-30.0, 30.0, 121) * math.sqrt(s)
    g_k, dg_k = _kernel_values(channel, y, omega, V)
    for o, g, dg in zip(omega, g_k, dg_k):
        r, h = _sign_reference(sigma * o / math.sqrt(s))
        assert g == pytest.approx(sigma * r / math.sqrt(s), rel=1e-12, abs=1e-300)
        assert dg == pytest.approx(-r * h / s, rel=1e-12, abs=1e-300)


def test_inverse_mills_against_mpmath():
    """R(u) and u + R(u) on both sides of the switch to the continued fraction and far out."""
    for u in np.concatenate([np.linspace(-40.0, 30.0, 141), kernels.TAIL_U + np.array([-1e-9, 0.0, 1e-9])]):
        r, h = kernels.inverse_mills(u)
        r_ref, h_ref = _sign_reference(u)
        assert r == pytest.approx(r_ref, rel=1e-12, abs=1e-300)
        assert h == pytest.approx(h_ref, rel=1e-12)


def test_channels_without_kernel():
    assert dn.Door(1.0).scalar_kernel() is None
    assert dn.ReLU(0.1).scalar_kernel() is None
    assert dn.Abs(0.1).scalar_kernel() is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("channel", CHANNELS, ids=repr)
def test_sweep_matches_output_sweep(channel, dtype):
    """One sweep: g, dg_sum, X^T g as the row-block pass, in X's dtype and shapes.

    d > COL_BLOCK and n not a multiple of the tile or the thread chunks exercise every loop tail.
    """
    n, d = 203, fused.COL_BLOCK + 77
    inst = amp.teacher_student(d=d, alpha=n / d, prior=dn.Gaussian(), channel=channel, seed=1, dtype=dtype)
    rng = np.random.default_rng(2)
    X3 = inst.X[:, None, :]
    W = rng.normal(size=(d, 1)).astype(dtype)
    g_prev = 0.3 * rng.normal(size=(n, 1, 1)).astype(dtype)
    V = np.array([[0.6]], dtype=dtype)
    expected = output_sweep(X3, inst.y, W, g_prev, V, channel, 64)
    got = fused.output_sweep(X3, inst.y, W, g_prev, V, channel.scalar_kernel())
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    for e, a in zip(expected, got):
        assert a.shape == e.shape and a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * np.abs(e).max())


def _iterates(inst, channel, fused_flag, max_iter=8):
    """The run and its iterates (W, C) after each iteration."""
    history = []

    def record(t, W, C):
        history.append((W.copy(), C.copy()))

    run = amp.gamp(inst.X, inst.y, dn.Gaussian(), channel, truth=inst.W, max_iter=max_iter, tol=0.0, seed=3,
                   fused=fused_flag, callback=record)
    return run, history


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("channel", [dn.Linear(0.1), dn.Sign(), dn.Sign(0.25)], ids=repr)
def test_gamp_iterates_fused_equal_generic(channel, dtype, rtol):
    inst = amp.teacher_student(d=300, alpha=2.0, prior=dn.Gaussian(), channel=channel, seed=0, dtype=dtype)
    run_f, its_f = _iterates(inst, channel, True)
    run_g, its_g = _iterates(inst, channel, False)
    assert run_f.n_iter == run_g.n_iter == len(its_f) == 8
    for (W_f, C_f), (W_g, C_g) in zip(its_f, its_g):
        assert W_f.dtype == W_g.dtype == np.dtype(dtype) and C_f.dtype == np.dtype(dtype)
        assert np.linalg.norm(W_f - W_g) <= rtol * np.linalg.norm(W_g)
        np.testing.assert_allclose(C_f, C_g, rtol=rtol)
    np.testing.assert_allclose(run_f.history["mse"], run_g.history["mse"], rtol=rtol)


def test_auto_dispatch(monkeypatch):
    """fused=None takes the fused sweep for NumPy, L = k = 1 and a kernel; the generic pass otherwise."""
    calls = []
    sweep = fused.output_sweep

    def counting_sweep(*args):
        calls.append(1)
        return sweep(*args)

    monkeypatch.setattr(fused, "output_sweep", counting_sweep)
    inst = amp.teacher_student(d=50, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=0)
    amp.gamp(inst.X, inst.y, dn.Gaussian(), dn.Sign(), max_iter=3, tol=0.0)
    assert len(calls) == 3
    amp.gamp(inst.X, inst.y, dn.Gaussian(), dn.Sign(), max_iter=3, tol=0.0, fused=False)
    amp.gamp(np.asfortranarray(inst.X), inst.y, dn.Gaussian(), dn.Sign(), max_iter=3, tol=0.0)
    assert len(calls) == 3


def test_fused_true_where_it_does_not_apply():
    inst = amp.teacher_student(d=50, alpha=2.0, prior=dn.Gaussian(), channel=dn.Door(1.0), seed=0)
    with pytest.raises(ValueError, match="scalar_kernel"):
        amp.gamp(inst.X, inst.y, dn.Gaussian(), dn.Door(1.0), max_iter=2, fused=True)
    with pytest.raises(ValueError, match="fused must be"):
        amp.gamp(inst.X, inst.y, dn.Gaussian(), dn.Door(1.0), max_iter=2, fused="yes")
