"""The product channel y = z1 z2 + sqrt(noise_var) eta against brute-force integrals and itself.

    Z_out(y, omega, V) = ∫ dz N(z; omega, V) N(y; z1 z2, noise_var),  g = d log Z_out / d omega,  dg = dg / d omega.

References: scipy.integrate.dblquad of the definition (moments 1, z, z z^T of the posterior), the z1 range split at
the roots of z1 E[z2 | z1] = y and at 0, the z2 range around the posterior of z2 given z1 (where the integrand
peaks for small noise); equal Gauss-Legendre panels, fine enough to resolve every peak, on the 1-D integral over z1;
central finite differences of log_z_out and g; the normalisation of the density of y.
"""
import math

import numpy as np
import pytest
from scipy import integrate

import denoisers as dn
from amp.backend import RNG, namespace, to_numpy
from denoisers.posterior import g_from_moments
from denoisers.product_channel import ProductChannel

V_POS = np.array([[1.0, 0.5], [0.5, 0.8]])
V_NEG = np.array([[0.6, -0.45], [-0.45, 0.9]])


def _draw(channel, Omega, V, seed):
    rng = np.random.default_rng(seed)
    Z = Omega + rng.standard_normal(Omega.shape) @ np.linalg.cholesky(V).T
    return to_numpy(channel.sample(Z, RNG(seed)))


def _conditional(z1, y, omega, V, noise_var):
    """Mean and sd of z2 given z1 and y (Gaussian)."""
    beta, c = V[0, 1] / V[0, 0], V[1, 1] - V[0, 1] ** 2 / V[0, 0]
    mu, s2 = omega[1] + beta * (z1 - omega[0]), c * z1 * z1 + noise_var
    return (noise_var * mu + c * z1 * y) / s2, math.sqrt(c * noise_var / s2)


def _dblquad(y, omega, V, noise_var):
    """log Z_out, g, dg of one sample by dblquad of N(z; omega, V) N(y; z1 z2, noise_var) (1, z, z z^T) over
    z1 in omega_1 +- 12 sd (split at 0 and the roots), z2 within 12 sd of its posterior given z1."""
    prec = np.linalg.inv(V)
    norm = 1.0 / (2.0 * math.pi * math.sqrt(np.linalg.det(V)) * math.sqrt(2.0 * math.pi * noise_var))
    beta = V[0, 1] / V[0, 0]
    roots = np.roots([beta, omega[1] - beta * omega[0], -y])
    sd_1 = math.sqrt(V[0, 0])
    lo, hi = omega[0] - 12.0 * sd_1, omega[0] + 12.0 * sd_1
    cuts = sorted({lo, hi, *[p.real for p in [0.0, *roots] if abs(p.imag) < 1e-12 and lo < p.real < hi]})

    def density(z2, z1):
        d = np.array([z1, z2]) - omega
        return norm * math.exp(-0.5 * d @ prec @ d - 0.5 * (y - z1 * z2) ** 2 / noise_var)

    def moment(f):
        ends = [lambda z1, s=s: _conditional(z1, y, omega, V, noise_var)[0] + s * 12.0
                * _conditional(z1, y, omega, V, noise_var)[1] for s in (-1.0, 1.0)]
        return sum(integrate.dblquad(lambda z2, z1: density(z2, z1) * f(z1, z2), a, b, *ends,
                                     epsabs=1e-13, epsrel=1e-10)[0] for a, b in zip(cuts[:-1], cuts[1:]))
    z = moment(lambda a, b: 1.0)
    mean = np.array([moment(lambda a, b: a), moment(lambda a, b: b)]) / z
    second = np.array([[moment(lambda a, b, i=i, j=j: (a, b)[i] * (a, b)[j]) for j in range(2)] for i in range(2)])
    cov = second / z - np.outer(mean, mean)
    return math.log(z), prec @ (mean - omega), prec @ (cov - V) @ prec


@pytest.mark.parametrize("noise_var, V, omega, y", [
    (1.0, V_POS, [0.6, -0.9], -0.4),
    (0.1, V_NEG, [-1.2, 0.3], 0.05),
    (0.01, V_POS, [0.6, -0.9], -0.4),
    (0.01, V_NEG, [0.2, -0.1], 0.0),
    (0.01, np.diag([0.5, 2.0]), [1.5, 1.0], 2.3),
], ids=["noise_1", "noise_0.1_anticorrelated", "noise_0.01", "noise_0.01_y_0", "noise_0.01_diagonal_V"])
def test_matches_dblquad(noise_var, V, omega, y):
    """The 1-D panel rule against dblquad of the definition, to 1e-8 (log_z, g, dg), down to noise_var = 0.01, where
    the posterior is a ridge along z1 z2 = y (and for y = 0 has 1/|z1| tails)."""
    omega = np.array(omega)
    log_z, g, dg = ProductChannel(noise_var)._posterior(np.array([y]), omega[None, None, :], V)
    ref = _dblquad(y, omega, V, noise_var)
    np.testing.assert_allclose(log_z[0], ref[0], atol=1e-8, rtol=0)
    np.testing.assert_allclose(g[0, 0], ref[1], atol=1e-8, rtol=0)
    np.testing.assert_allclose(dg[0, 0, :, 0, :], ref[2], atol=1e-8, rtol=0)


def _uniform_rule(y, Omega, V, noise_var, panels=16000):
    """log Z_out, g, dg by 8-point Gauss-Legendre on `panels` equal panels of omega_1 +- 16 sd of the 1-D integral
    over z1 (width 0.002 sd: every peak is resolved for noise_var >= 0.01; a likelihood peak at 12 sd still counts
    for an atypical label)."""
    V11, V12, V22 = V[0, 0], V[0, 1], V[1, 1]
    beta, c, sd_1 = V12 / V11, V22 - V12 ** 2 / V11, math.sqrt(V11)
    t, w = np.polynomial.legendre.leggauss(8)
    half = 16.0 * sd_1 / panels
    offsets = ((-16.0 * sd_1 + half * (2.0 * np.arange(panels) + 1.0))[:, None] + half * t).ravel()
    u = Omega[:, 0, :1] + offsets
    mu = Omega[:, 0, 1:] + beta * (u - Omega[:, 0, :1])
    s2 = c * u * u + noise_var
    log_w = (np.log(half * np.tile(w, panels)) - 0.5 * (u - Omega[:, 0, :1]) ** 2 / V11
             - 0.5 * np.log(4 * math.pi ** 2 * V11) - 0.5 * (y[:, None] - u * mu) ** 2 / s2 - 0.5 * np.log(s2))
    top = log_w.max(axis=1, keepdims=True)
    r = np.exp(log_w - top)
    total = r.sum(axis=1)
    r /= total[:, None]
    m2 = (noise_var * mu + c * u * y[:, None]) / s2
    mean = np.stack([(r * u).sum(1), (r * m2).sum(1)], axis=-1)
    d1, d2 = u - mean[:, :1], m2 - mean[:, 1:]
    cov = np.stack([np.stack([(r * d1 * d1).sum(1), (r * d1 * d2).sum(1)], -1),
                    np.stack([(r * d1 * d2).sum(1), (r * (d2 * d2 + c * noise_var / s2)).sum(1)], -1)], -2)
    g, dg = g_from_moments(mean[:, None], cov[:, None, :, None, :], Omega, V)
    return np.log(total) + top[:, 0], g, dg


@pytest.mark.parametrize("noise_var", [0.1, 0.01])
def test_matches_a_fine_uniform_rule_on_random_inputs(noise_var):
    """Random V (correlations up to ~0.99, scales 0.1 to 10), omega, labels from the model and y = 0, y ~ 0 (atypical
    for some omega: log_z down to -50): the graded panels agree with 128000 equal-panel nodes to 1e-8 (log_z; g and
    dg relative to 1 + their largest entry)."""
    rng = np.random.default_rng(int(1000 * noise_var))
    channel = ProductChannel(noise_var)
    for case in range(30):
        A = rng.normal(0.0, rng.choice([0.3, 1.0, 2.0]), (2, 2))
        V = A @ A.T + rng.choice([0.01, 0.3]) * np.eye(2)
        Omega = rng.normal(0.0, rng.choice([0.5, 2.0]), (3, 1, 2))
        y = _draw(channel, Omega, V, case)
        y[1], y[2] = 0.0, 0.3 * math.sqrt(noise_var) * rng.standard_normal()
        got, ref = channel._posterior(y, Omega, V), _uniform_rule(y, Omega, V, noise_var)
        np.testing.assert_allclose(got[0], ref[0], atol=1e-8, rtol=0)
        for a, b in zip(got[1:], ref[1:]):
            np.testing.assert_allclose(a, b, atol=1e-8 * (1.0 + np.abs(b).max()), rtol=0)


@pytest.mark.parametrize("noise_var", [0.5, 0.01])
def test_g_out_matches_numerical_derivative_of_log_z(noise_var):
    """Central differences (step 1e-4) of log_z_out give g, and of g give dg, to 1e-6: the panel edges move
    smoothly with Omega, so the rule is a smooth function of it."""
    channel = ProductChannel(noise_var)
    rng = np.random.default_rng(6)
    Omega = rng.normal(0.0, 1.0, (6, 1, 2))
    y = _draw(channel, Omega, V_NEG, 7)
    y[0] = 0.0
    g, dg = channel.g_out(y, Omega, V_NEG)
    h = 1e-4
    for a in range(2):
        step = np.zeros_like(Omega)
        step[:, 0, a] = h
        fd = (channel.log_z_out(y, Omega + step, V_NEG) - channel.log_z_out(y, Omega - step, V_NEG)) / (2 * h)
        np.testing.assert_allclose(g[:, 0, a], fd, atol=1e-6)
        fd_g = (channel.g_out(y, Omega + step, V_NEG)[0] - channel.g_out(y, Omega - step, V_NEG)[0]) / (2 * h)
        np.testing.assert_allclose(dg[:, :, :, 0, a], fd_g, atol=1e-6)


def test_density_of_y_integrates_to_one():
    """exp(log_z_out) is the density of y given (omega, V): it integrates to 1 over y (Gauss-Legendre on panels
    graded towards y = 0, where the density has a log peak of width ~ noise), to 1e-9."""
    channel = ProductChannel(0.05)
    t, w = np.polynomial.legendre.leggauss(16)
    edges = np.concatenate([[0.0], np.geomspace(1e-3, 80.0, 400)])
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * np.diff(edges)
    y = (mid[:, None] + half[:, None] * t).ravel()
    weights = (half[:, None] * w).ravel()
    y, weights = np.concatenate([-y, y]), np.concatenate([weights, weights])
    for omega in ([0.0, 0.0], [1.5, -0.7]):
        Omega = np.broadcast_to(np.array(omega), (y.size, 1, 2))
        total = np.sum(weights * np.exp(channel.log_z_out(y, Omega, V_POS)))
        assert abs(total - 1.0) < 1e-9


def test_backend_matches_numpy(xp):
    channel = ProductChannel(0.05)
    Omega = np.random.default_rng(27).normal(0.0, 1.0, (30, 1, 2))
    y = _draw(channel, Omega, V_NEG, 28)
    ref = (channel.log_z_out(y, Omega, V_NEG), *channel.g_out(y, Omega, V_NEG))
    args = xp.asarray(y), xp.asarray(Omega), xp.asarray(V_NEG)
    for a, b in zip(ref, (channel.log_z_out(*args), *channel.g_out(*args))):
        assert namespace(b) is xp
        np.testing.assert_allclose(to_numpy(b), a, atol=1e-10, rtol=0)


@pytest.mark.parametrize("V", [V_POS, V_NEG, np.diag([0.3, 2.0])], ids=["positive", "negative", "diagonal"])
def test_tails_are_finite(V):
    """|omega_a| = 30 sqrt(V_aa) in every sign combination, labels far from omega_1 omega_2: finite log_z, g, dg, and a
    posterior covariance V + V dg V that is positive semi-definite (to rounding)."""
    sd = np.sqrt(np.diag(V))
    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1], [1, 0], [0, -1], [0, 0]], dtype=float)
    Omega = (30.0 * signs * sd)[:, None, :]
    for label in (-1e4, -2.0, 0.0, 3.0, 1e3):
        log_z, g, dg = ProductChannel(0.01)._posterior(np.full(len(Omega), label), Omega, V)
        assert np.all(np.isfinite(log_z)) and np.all(np.isfinite(g)) and np.all(np.isfinite(dg))
        cov = V + V @ dg[:, 0, :, 0, :] @ V
        assert np.all(np.linalg.eigvalsh(cov) > -1e-9 * np.abs(cov).max(axis=(1, 2))[:, None])


def test_sample_and_label_quadrature():
    channel = ProductChannel(0.3)
    Z = np.random.default_rng(14).normal(size=(5000, 1, 2))
    y = channel.sample(Z, RNG(seed=13))
    assert y.shape == (5000,)
    assert abs(np.var(y - Z[:, 0, 0] * Z[:, 0, 1]) - 0.3) < 0.03  # 5000 draws: sd of the variance estimate ~ 0.006
    ys, w = channel.label_quadrature(Z[:3], 12)
    product = Z[:3, 0, 0] * Z[:3, 0, 1]
    assert ys.shape == (12, 3) and w.shape == (12, 3)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-13)
    np.testing.assert_allclose((w * ys).sum(axis=0), product, atol=1e-12)
    np.testing.assert_allclose((w * (ys - product) ** 2).sum(axis=0), 0.3, atol=1e-12)
    channel.check_labels(y)


def test_z1_times_z2_is_the_product_channel():
    channel = dn.z1_times_z2(0.2)
    assert isinstance(channel, dn.ProductChannel) and channel.noise_var == 0.2
    assert (channel.tokens, channel.k, channel.label_shape, channel.labels) == (1, 2, (), None)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="noise_var"):
        ProductChannel(0.0)
    channel = ProductChannel(0.1)
    with pytest.raises(ValueError, match="Omega"):
        channel.g_out(np.ones(2), np.zeros((2, 2, 2)), V_POS)
    with pytest.raises(ValueError, match="y"):
        channel.g_out(np.ones(3), np.zeros((2, 1, 2)), V_POS)
    with pytest.raises(ValueError, match="positive definite"):
        channel.g_out(np.ones(2), np.zeros((2, 1, 2)), np.array([[1.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        channel.log_z_out(np.ones(2), np.zeros((2, 1, 2)), np.array([[1.0, 0.2], [0.1, 1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        channel.check_labels(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="shape"):
        channel.check_labels(np.ones((3, 1)))
