"""Attention output denoisers: the two-layer reduction to one 2-D integral, and the tied layer as a Quadrature."""
import itertools
import math
from functools import partial

import numpy as np
import pytest

from amp.backend import RNG, to_numpy
from denoisers.attention import TiedAttention, TwoLayerAttention, attention, label_logits, preimage
from denoisers.generic import Quadrature

V_MILD = np.array([[0.6, 0.2], [0.2, 0.5]])


def draw(n, V, seed, omega_scale=1.0):
    """Omega (n, 2, 2), Z ~ prod_l N(omega_l, V) and the two-layer labels y = sample(Z)."""
    rng = np.random.default_rng(seed)
    Omega = omega_scale * rng.standard_normal((n, 2, 2))
    Z = Omega + rng.standard_normal((n, 2, 2)) @ np.linalg.cholesky(V).T
    return Omega, Z, TwoLayerAttention().sample(Z, None)


def two_layer_h(Z, skip=1.0):
    """h = (softmax_rows(z1 z1^T) + skip I) z2, written out with NumPy independently of the module."""
    z1, z2 = Z[:, :, 0], Z[:, :, 1]
    logits = z1[:, :, None] * z1[:, None, :]
    S = np.exp(logits - logits.max(axis=-1, keepdims=True))
    S /= S.sum(axis=-1, keepdims=True)
    return np.einsum("nlm,nm->nl", S + skip * np.eye(2), z2)


def weighted_moments(w, Z):
    """Self-normalised weighted mean (2, 2) and covariance (2, 2, 2, 2) of Z (N, 2, 2), with their
    standard errors, and the effective sample size."""
    r = w / w.sum()
    mean = np.einsum("n,nlk->lk", r, Z)
    d = Z - mean
    outer = d[:, :, :, None, None] * d[:, None, None]
    cov = np.einsum("n,nlkmj->lkmj", r, outer)
    se_mean = np.sqrt(np.einsum("n,nlk->lk", r ** 2, d ** 2))
    se_cov = np.sqrt(np.einsum("n,nlkmj->lkmj", r ** 2, (outer - cov) ** 2))
    return mean, cov, se_mean, se_cov, 1.0 / (r ** 2).sum()


def posterior_moments(ch, y, Omega, V):
    """E[Z | y] (n, 2, 2) and Cov[Z | y] (n, 2, 2, 2, 2) from g and dg (`denoisers.posterior`, inverted)."""
    g, dg = ch.g_out(y, Omega, V)
    cov = np.einsum("ab,nlbmc,cd->nlamd", V, dg, V) + np.eye(2)[:, None, :, None] * V[None, :, None, :]
    return Omega + g @ V, cov


def central_difference(f, Omega, eps):
    """df / dOmega[:, l, a] by central differences, (n, ..., 2, 2), for f: Omega (n, 2, 2) -> (n, ...)."""
    out = []
    for l, a in itertools.product(range(2), range(2)):
        step = np.zeros_like(Omega)
        step[:, l, a] = eps
        out.append((f(Omega + step) - f(Omega - step)) / (2 * eps))
    return np.stack(out, axis=-1).reshape(out[0].shape + (2, 2))


def test_label_fixes_h_up_to_sign():
    _, Z, y = draw(500, np.eye(2), seed=0)
    h_y, uniform = preimage(y)
    assert not uniform.any()
    for s in (1.0, -1.0):  # both preimages reproduce the label
        np.testing.assert_allclose(attention(s * h_y[..., None]), y, rtol=1e-9, atol=1e-15)
    h = two_layer_h(Z)
    err = np.minimum(np.abs(h - h_y).max(axis=1), np.abs(h + h_y).max(axis=1))
    # the preimage loses ~ eps |h|^2 / (h1 - h2) of precision through a + b = (h1 - h2)^2
    assert np.all(err <= 1e-10 * (1.0 + np.abs(h).max(axis=1) ** 2 / np.abs(h[:, 0] - h[:, 1])))


def test_uniform_label_is_the_line_h1_equals_h2():
    Z = np.array([[[0.3, -0.7], [0.3, -0.7]]])  # equal tokens: h1 = h2 exactly
    y = TwoLayerAttention().sample(Z, None)
    assert np.all(y == 0.5)
    h_y, uniform = preimage(y)
    assert uniform.all() and np.all(h_y == 0.0)


def test_g_out_is_the_derivative_of_log_z_out():
    Omega, _, y = draw(4, V_MILD, seed=1)
    ch = TwoLayerAttention(nodes=64)
    g, dg = ch.g_out(y, Omega, V_MILD)
    fd_g = central_difference(lambda O: ch.log_z_out(y, O, V_MILD), Omega, 1e-4)
    fd_dg = central_difference(lambda O: ch.g_out(y, O, V_MILD)[0], Omega, 1e-4)
    # central differences: O(eps^2) ~ 1e-8 truncation, below the 1e-6 asked
    np.testing.assert_allclose(fd_g, g, rtol=0, atol=1e-6 * np.abs(g).max())
    np.testing.assert_allclose(fd_dg, dg, rtol=0, atol=1e-6 * np.abs(dg).max())


def test_uniform_label_g_out_is_the_derivative_of_its_log_z_out():
    rng = np.random.default_rng(2)
    Omega = rng.standard_normal((3, 2, 2))
    y = np.full((3, 2, 2), 0.5)
    ch = TwoLayerAttention(nodes=48)
    g, _ = ch.g_out(y, Omega, V_MILD)
    assert np.all(np.isfinite(g))
    fd = central_difference(lambda O: ch.log_z_out(y, O, V_MILD), Omega, 1e-4)
    np.testing.assert_allclose(fd, g, rtol=0, atol=1e-6 * np.abs(g).max())


def test_posterior_moments_and_density_match_a_kernel_monte_carlo_over_all_four_entries():
    """P(y | Z) replaced by a Gaussian kernel of width sigma in (a, b), Z ~ prior drawn in 4-D: E[Z | y],
    Cov[Z | y] and the density of (a, b) (log_z_out's normalisation) agree to the Monte Carlo error
    plus the kernel's O(sigma^2) smoothing."""
    Omega, _, y = draw(40, V_MILD, seed=3, omega_scale=0.7)
    ch = TwoLayerAttention(nodes=48)
    a_y, b_y = label_logits(y)
    # away from the uniform label, where the (a, b) density is singular and the kernel's bias O(1)
    keep = np.flatnonzero((a_y + b_y > 1.0) & (ch.log_z_out(y, Omega, V_MILD) > -4.0))[:3]
    Omega, y, a_y, b_y = Omega[keep], y[keep], a_y[keep], b_y[keep]
    mean, cov = posterior_moments(ch, y, Omega, V_MILD)
    log_z = ch.log_z_out(y, Omega, V_MILD)
    rng = np.random.default_rng(4)
    sigma, N = 0.05, 2_000_000
    for i in range(3):
        Z = Omega[i] + rng.standard_normal((N, 2, 2)) @ np.linalg.cholesky(V_MILD).T
        h = two_layer_h(Z)
        a, b = h[:, 0] * (h[:, 0] - h[:, 1]), h[:, 1] * (h[:, 1] - h[:, 0])
        w = np.exp(-((a - a_y[i]) ** 2 + (b - b_y[i]) ** 2) / (2 * sigma ** 2))
        mc_mean, mc_cov, se_mean, se_cov, ess = weighted_moments(w, Z)
        assert ess > 500, ess
        assert np.all(np.abs(mean[i] - mc_mean) <= 5 * se_mean + 0.01), (mean[i], mc_mean, se_mean)
        assert np.all(np.abs(cov[i] - mc_cov) <= 5 * se_cov + 0.01)
        density = w.mean() / (2 * math.pi * sigma ** 2)
        assert abs(math.log(density) - log_z[i]) <= 5 / math.sqrt(ess) + 0.02


def test_uniform_label_posterior_is_z_given_h1_equals_h2():
    """The class doc's limit: for y uniform, log_z_out is the log density of h1 - h2 at 0 and the posterior
    that of Z given h1 = h2; checked by a kernel of width sigma in h1 - h2 over Z ~ prior in 4-D."""
    rng = np.random.default_rng(12)
    Omega = 0.7 * rng.standard_normal((2, 2, 2))
    y = np.full((2, 2, 2), 0.5)
    ch = TwoLayerAttention(nodes=48)
    mean, cov = posterior_moments(ch, y, Omega, V_MILD)
    log_z = ch.log_z_out(y, Omega, V_MILD)
    sigma, N = 0.02, 2_000_000
    for i in range(2):
        Z = Omega[i] + rng.standard_normal((N, 2, 2)) @ np.linalg.cholesky(V_MILD).T
        h = two_layer_h(Z)
        w = np.exp(-(h[:, 0] - h[:, 1]) ** 2 / (2 * sigma ** 2))
        mc_mean, mc_cov, se_mean, se_cov, ess = weighted_moments(w, Z)
        assert np.all(np.abs(mean[i] - mc_mean) <= 5 * se_mean + 0.01), (mean[i], mc_mean, se_mean)
        assert np.all(np.abs(cov[i] - mc_cov) <= 5 * se_cov + 0.01)
        assert abs(math.log(w.mean() / (math.sqrt(2 * math.pi) * sigma)) - log_z[i]) <= 5 / math.sqrt(ess) + 0.01


def test_saturated_label_reads_as_the_smallest_normal_entry():
    Omega = np.zeros((1, 2, 2))
    y = np.array([[[1.0, 0.0], [0.3, 0.7]]])
    tiny = np.finfo(float).smallest_normal
    ch = TwoLayerAttention(nodes=16)
    g, dg = ch.g_out(y, Omega, np.eye(2))
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(dg))
    np.testing.assert_array_equal(g, ch.g_out(np.array([[[1.0, tiny], [0.3, 0.7]]]), Omega, np.eye(2))[0])


def test_g_out_converges_in_nodes():
    Omega, _, y = draw(60, np.eye(2), seed=5)
    ref = TwoLayerAttention(nodes=96).g_out(y, Omega, np.eye(2))[0]
    scale = np.abs(ref).max(axis=(1, 2))
    err = {n: np.median(np.abs(TwoLayerAttention(nodes=n).g_out(y, Omega, np.eye(2))[0] - ref).max(axis=(1, 2)) / scale)
           for n in (8, 16, 32)}
    assert err[8] > err[16] > err[32]
    assert err[32] < 2e-5  # measured 4e-6 (median over typical labels, V = I)


def test_adapted_rule_resolves_a_strongly_correlated_V():
    """V21^2 / (V11 V22) = 0.9: column 2 given column 1 has 10% of V22, the posterior of u is narrow."""
    V = np.array([[1.0, 0.95], [0.95, 1.0]])
    Omega, _, y = draw(30, V, seed=6)
    g32 = TwoLayerAttention(nodes=32).g_out(y, Omega, V)[0]
    g64 = TwoLayerAttention(nodes=64).g_out(y, Omega, V)[0]
    err = np.abs(g32 - g64).max(axis=(1, 2)) / np.abs(g64).max(axis=(1, 2))
    assert np.median(err) < 1e-8


def test_backends_equal_numpy_to_1e_10(xp):
    Omega, _, y = draw(5, V_MILD, seed=7)
    ch = TwoLayerAttention(nodes=24)
    ref = (ch.log_z_out(y, Omega, V_MILD),) + ch.g_out(y, Omega, V_MILD)
    out = (ch.log_z_out(xp.asarray(y), xp.asarray(Omega), xp.asarray(V_MILD)),) + ch.g_out(
        xp.asarray(y), xp.asarray(Omega), xp.asarray(V_MILD))
    for a, b in zip(out, ref):
        np.testing.assert_allclose(to_numpy(a), b, rtol=1e-10, atol=1e-12)


def test_sample_and_label_quadrature():
    _, Z, y = draw(7, np.eye(2), seed=8)
    assert y.shape == (7, 2, 2)
    TwoLayerAttention().check_labels(y)
    ys, w = TwoLayerAttention().label_quadrature(Z, 5)
    assert ys.shape == (1, 7, 2, 2) and np.all(w == 1.0)
    np.testing.assert_array_equal(ys[0], y)


@pytest.mark.parametrize("y, match", [
    (np.array([[[1.0, 0.0], [0.5, 0.5]]]), "positive"),
    (np.array([[[0.6, 0.6], [0.5, 0.5]]]), "row-stochastic"),
    (np.array([[[0.3, 0.7], [0.7, 0.3]]]), "y11 y22 >= y12 y21"),
    (np.array([[[np.nan, 0.5], [0.5, 0.5]]]), "NaN"),
    (np.full((1, 2, 3), 0.5), "shape"),
])
def test_bad_labels_raise(y, match):
    with pytest.raises(ValueError, match=match):
        TwoLayerAttention().check_labels(y)


@pytest.mark.parametrize("V, match", [
    (np.array([[1.0, 0.2], [0.3, 1.0]]), "symmetric"),
    (np.array([[1.0, 1.0], [1.0, 1.0]]), "positive definite"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "finite"),
    (np.eye(3), "shape"),
])
def test_bad_V_raises(V, match):
    Omega, _, y = draw(2, np.eye(2), seed=9)
    with pytest.raises(ValueError, match=match):
        TwoLayerAttention().g_out(y, Omega, V)


@pytest.mark.parametrize("kwargs, match", [
    (dict(skip=0.0), "skip"), (dict(skip=math.inf), "skip"), (dict(nodes=1), "nodes"), (dict(nodes=1000), "nodes"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TwoLayerAttention(**kwargs)


def tied_map(Z, beta):
    """softmax_rows(beta Z Z^T) in NumPy, independently of the module."""
    logits = beta * np.einsum("...lk,...mk->...lm", Z, Z)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_tied_attention_is_the_quadrature_of_its_map():
    rng = np.random.default_rng(10)
    Omega = rng.standard_normal((6, 2, 2))
    V = np.array([[0.5, 0.1], [0.1, 0.4]])
    tied = TiedAttention(noise_var=0.2)
    Z = Omega + rng.standard_normal((6, 2, 2)) @ np.linalg.cholesky(V).T
    y = tied.sample(Z, RNG(seed=0))
    generic = Quadrature(partial(tied_map, beta=1 / math.sqrt(2)), tokens=2, k=2, noise_var=0.2)
    assert tied.label_shape == (2, 2)
    for a, b in zip(tied.g_out(y, Omega, V), generic.g_out(y, Omega, V)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_tied_attention_g_out_is_the_derivative_of_log_z_out():
    rng = np.random.default_rng(11)
    Omega = rng.standard_normal((3, 2, 2))
    V = np.array([[0.3, 0.05], [0.05, 0.3]])
    tied = TiedAttention(noise_var=0.5, nodes=14)
    y = tied_map(Omega + 0.5 * rng.standard_normal((3, 2, 2)), 1 / math.sqrt(2)) + 0.3 * rng.standard_normal((3, 2, 2))
    g, _ = tied.g_out(y, Omega, V)
    fd = central_difference(lambda O: tied.log_z_out(y, O, V), Omega, 1e-5)
    # the moment formula and the derivative of the rule differ by the rule's error: measured
    # 7e-4, 2e-4, 1e-5, 3e-7 of max |g| at 8, 10, 14, 20 nodes per dimension
    np.testing.assert_allclose(fd, g, rtol=0, atol=5e-5 * np.abs(g).max())


def test_tied_attention_arguments():
    assert TiedAttention(tokens=3, k=4, noise_var=0.1).beta == 0.5
    with pytest.raises(ValueError, match="noise_var"):
        TiedAttention(noise_var=0.0)
    with pytest.raises(ValueError, match="beta"):
        TiedAttention(noise_var=0.1, beta=math.nan)
