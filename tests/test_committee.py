"""Committee machines and multi-index channels against independent references.

    y = sign(sum_a act(z_a)), sign(0) = 0;  Z_out(y) = P(y | omega, V),  g = d log Z_out / d omega,  dg = dg / d omega.

References: mpmath for the bivariate normal CDF (1-D integral of phi(x) Phi((b - rho x)/sqrt(1 - rho^2)) at
40 digits, split finely around its maximum); scipy.integrate.dblquad of the orthant moments 1, z, z z^T; the
factorised form at r = 0 (P(y = +-1) = Phi(+-a) Phi(+-b), i.e. two Sign channels), exact far in the tails;
the generic Quadrature of the same label map; for the bulk Phi2, composite Gauss-Legendre of that 1-D integral.
"""
import math

import mpmath
import numpy as np
import pytest
from scipy import integrate, special

import denoisers as dn
from amp.backend import RNG, namespace, to_numpy
from denoisers.committee import Committee, abs_difference, bvn_cdf, log_bvn_cdf, sign_committee_2, sign_z1_times_z2
from denoisers.generic import Quadrature


def _covariance(r, v2=0.6):
    c = r * math.sqrt(v2)
    return np.array([[1.0, c], [c, v2]])


def _committee_map(Z):
    xp = namespace(Z)
    return xp.sign(xp.sign(Z[..., 0, 0]) + xp.sign(Z[..., 0, 1]))


def _draw(channel, Omega, V, seed):
    rng = np.random.default_rng(seed)
    return to_numpy(channel.sample(Omega + rng.standard_normal(Omega.shape) @ np.linalg.cholesky(V).T, RNG(seed)))


# ------------------------------------------------------------------ the bivariate normal CDF

def _log_bvn_mpmath(a, b, r):
    mpmath.mp.dps = 30
    a, b, r = mpmath.mpf(a), mpmath.mpf(b), mpmath.mpf(r)
    s = mpmath.sqrt(1 - r * r)
    log_f = lambda x: -x * x / 2 + mpmath.log(mpmath.ncdf((b - r * x) / s))  # noqa: E731
    lo, hi = a - 200, a
    golden = (mpmath.sqrt(5) - 1) / 2
    for _ in range(300):  # the log-concave integrand's maximum on (-inf, a]
        x1, x2 = hi - golden * (hi - lo), lo + golden * (hi - lo)
        lo, hi = (x1, hi) if log_f(x1) < log_f(x2) else (lo, x2)
    peak = (lo + hi) / 2
    top = log_f(peak)

    def reach(sign):  # the distance at which the log-integrand has dropped by 1
        d = mpmath.mpf(1e-8)
        while log_f(peak + sign * d) > top - 1 and (sign < 0 or peak + d < a) and d < 100:
            d *= 1.5
        return d
    left, right = reach(-1), reach(1)
    points = [peak + left * k for k in range(-60, 0)] + [peak] + [peak + right * k for k in range(1, 61)]
    points = [-mpmath.inf] + [p for p in points if p < a] + [a]
    value = mpmath.quad(lambda x: mpmath.exp(log_f(x) - top), points)
    return float(mpmath.log(value) + top - mpmath.log(mpmath.sqrt(2 * mpmath.pi)))


@pytest.mark.parametrize("rho", [-0.9999, -0.95, -0.3, 0.0, 0.6, 0.999])
def test_log_bvn_cdf_matches_mpmath(rho):
    """Relative accuracy 1e-11 of log Phi2 over |a|, |b| <= 8 and far in the tails (|a|, |b| = 30)."""
    rng = np.random.default_rng(int(1000 * (rho + 1)))
    a = np.concatenate([[-30.0, 30.0, -30.0], rng.uniform(-8, 8, 5)])
    b = np.concatenate([[-29.0, -30.0, 30.0], rng.uniform(-8, 8, 5)])
    got = log_bvn_cdf(a, b, rho)
    ref = np.array([_log_bvn_mpmath(x, y, rho) for x, y in zip(a, b)])
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-13)


def test_log_bvn_cdf_rejects_bad_rho():
    with pytest.raises(ValueError, match="rho"):
        log_bvn_cdf(np.zeros(1), np.zeros(1), 1.0)


def _bvn_fine(a, b, rho, panels=3000, nodes=16):
    """Phi2(a, b; rho) = ∫_{-inf}^a phi(x) Phi((b - rho x) / sqrt(1 - rho^2)) dx by Gauss-Legendre on equal panels
    of [min(a, 0) - 40, a] (the integrand resolved on every panel: about 1e-16 absolute in double precision)."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    lo = np.minimum(a, 0.0) - 40.0
    half = 0.5 * (a - lo)[:, None] / panels
    x = (lo[:, None] + half * (2.0 * np.arange(panels) + 1.0))[..., None] + half[..., None] * t
    f = np.exp(-0.5 * x * x) * special.ndtr((b[:, None, None] - rho * x) / math.sqrt(1 - rho * rho))
    return np.sum(f * w, axis=(1, 2)) * half[:, 0] / math.sqrt(2.0 * math.pi)


@pytest.mark.parametrize("rho", [0.0, 0.25, -0.6, 0.9, -0.924, 0.93, -0.99, 0.99999])
def test_bvn_cdf_matches_a_fine_quadrature(rho):
    """The bulk Phi2 of the closed form, in each of its rules (6, 12, 20 nodes from rho = 0; from rho = +-1 beyond
    |rho| = 0.925), to 5e-15 absolute over |a|, |b| <= 9, near the diagonals a = +-b and at +-40."""
    rng = np.random.default_rng(int(100 * (rho + 2)))
    a = np.concatenate([rng.uniform(-9, 9, 40), rng.normal(0, 1.5, 20), [-40.0, 40.0, 40.0, 0.0]])
    b = np.concatenate([rng.uniform(-9, 9, 40), a[40:60] * rng.choice([-1, 1], 20) + rng.normal(0, 0.02, 20),
                        [3.0, -40.0, 40.0, 0.0]])
    np.testing.assert_allclose(bvn_cdf(a, b, rho), _bvn_fine(a, b, rho), rtol=0, atol=5e-15)


@pytest.mark.parametrize("r", [0.0, 0.5, -0.8, 0.95, -0.9999])
def test_closed_form_label_probability_matches_log_bvn_cdf(r):
    """log P(y) of `sign_committee_2`, from `bvn_cdf` where P(y) >= e^-10 and from `log_bvn_cdf` on the rows below
    (both in one call), equals the log-sum of `log_bvn_cdf` over the label's orthants: 1e-11 in log P."""
    rng = np.random.default_rng(int(10 * (r + 2)))
    mu = rng.normal(0.0, 4.0, (400, 2))
    y = rng.integers(-1, 2, 400).astype(float)
    log_p = sign_committee_2(y, mu[:, None, :], np.array([[1.0, r], [r, 1.0]]))[0]
    orthant = {(s1, s2): log_bvn_cdf(s1 * mu[:, 0], s2 * mu[:, 1], s1 * s2 * r) for s1, s2 in
               [(1, 1), (-1, -1), (1, -1), (-1, 1)]}
    tie = np.logaddexp(orthant[1, -1], orthant[-1, 1])
    ref = np.where(y == 1, orthant[1, 1], np.where(y == -1, orthant[-1, -1], tie))
    assert np.any(ref < -10.0) and np.any(ref > -10.0)
    np.testing.assert_allclose(log_p, ref, rtol=1e-12, atol=1e-11)


# ------------------------------------------------------------------ the closed form of Committee(2)

@pytest.mark.parametrize("r, nodes", [(0.0, 12), (0.4, 12), (-0.7, 12), (0.95, 12), (-0.95, 12), (0.99, 16),
                                      (-0.99, 24)])
def test_closed_form_matches_generic_quadrature(r, nodes):
    """Committee(2) against Quadrature of sign(sign z1 + sign z2) with labels (-1, 0, 1), to 1e-6, labels
    drawn from the model. |r| = 0.99 needs more Gauss-Legendre nodes in the generic rule: the boundary
    z2 = 0 crosses its lines at a slope r / sqrt(1 - r^2) ~ 7."""
    V = _covariance(r)
    Omega = np.random.default_rng(20).normal(0.0, 1.5, (150, 1, 2))
    closed, generic = Committee(2), Quadrature(_committee_map, tokens=1, k=2, labels=(-1, 0, 1), nodes=nodes)
    y = _draw(closed, Omega, V, 21)
    for a, b in zip(closed._posterior(y, Omega, V, closed.nodes), generic._posterior(y, Omega, V, nodes)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def _orthant_brute_force(y, omega, V):
    """log Z_out, g, dg of one sample by dblquad over the orthants of label y (12 sd boxes)."""
    sd = np.sqrt(np.diag(V))
    prec = np.linalg.inv(V)
    norm = 1.0 / (2.0 * math.pi * math.sqrt(np.linalg.det(V)))
    orthants = {1.0: [(1, 1)], -1.0: [(-1, -1)], 0.0: [(1, -1), (-1, 1)]}[float(y)]

    def moment(f):
        total = 0.0
        for s1, s2 in orthants:
            far = [si * (max(0.0, si * omega[i]) + 12 * sd[i]) for i, si in enumerate((s1, s2))]
            box = [sorted([0.0, far[i]]) for i in range(2)]

            def density(z2, z1):
                d = np.array([z1, z2]) - omega
                return norm * math.exp(-0.5 * d @ prec @ d) * f(z1, z2)
            total += integrate.dblquad(density, *box[0], *box[1], epsabs=1e-13, epsrel=1e-11)[0]
        return total
    z = moment(lambda a, b: 1.0)
    mean = np.array([moment(lambda a, b: a), moment(lambda a, b: b)]) / z
    second = np.array([[moment(lambda a, b, i=i, j=j: (a, b)[i] * (a, b)[j]) for j in range(2)] for i in range(2)])
    cov = second / z - np.outer(mean, mean)
    return math.log(z), prec @ (mean - omega), prec @ (cov - V) @ prec


def test_closed_form_and_quadrature_match_dblquad():
    """Both against brute-force integration of the definition over the orthants, to 1e-7."""
    V = _covariance(0.6)
    Omega = np.array([[[0.4, -0.3]], [[-0.8, -0.5]], [[1.1, 0.7]]])
    y = np.array([0.0, -1.0, 1.0])
    for channel in (Committee(2), Quadrature(_committee_map, tokens=1, k=2, labels=(-1, 0, 1))):
        log_z, g, dg = channel._posterior(y, Omega, V, channel.nodes)
        for i in range(3):
            ref = _orthant_brute_force(y[i], Omega[i, 0], V)
            np.testing.assert_allclose(log_z[i], ref[0], atol=1e-7)
            np.testing.assert_allclose(g[i, 0], ref[1], atol=1e-7)
            np.testing.assert_allclose(dg[i, 0, :, 0, :], ref[2], atol=1e-7)


def test_uncorrelated_closed_form_factorises_into_sign_channels_far_in_the_tails():
    """r = 0: P(y = s) = Phi(s a) Phi(s b), so g_a is the Sign channel's at (s, omega_a, V_aa) and dg is diagonal;
    the log-domain formulas keep 1e-9 relative accuracy out to |omega_a| = 30 sqrt(V_aa)."""
    V = np.diag([0.8, 0.5])
    grid = np.array([-30.0, -12.0, -3.0, 0.0, 2.0, 15.0, 30.0])
    mu = np.array(np.meshgrid(grid, grid)).reshape(2, -1).T
    Omega = (mu * np.sqrt(np.diag(V)))[:, None, :]
    sign = dn.Sign()
    for label in (-1.0, 1.0):
        y = np.full(len(Omega), label)
        log_z, g, dg = Committee(2)._posterior(y, Omega, V, 24)
        parts = [sign._posterior(y, Omega[:, 0, a], V[a, a]) for a in range(2)]
        np.testing.assert_allclose(log_z, parts[0][0] + parts[1][0], rtol=1e-12, atol=1e-12)
        for a in range(2):
            np.testing.assert_allclose(g[:, 0, a], parts[a][1], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(dg[:, 0, a, 0, a], parts[a][2], rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(dg[:, 0, 0, 0, 1], 0.0, atol=1e-9)


@pytest.mark.parametrize("r", [-0.999, -0.5, 0.0, 0.8, 0.999])
def test_closed_form_tails_are_finite(r):
    """|omega_a| = 30 sqrt(V_aa) in every sign combination and label: finite log_z, g, dg, and a posterior
    covariance V + V dg V that stays positive semi-definite where log_z > -1000. (Further out, at
    log_z ~ -1e6 for |r| -> 1, log_z carries an absolute error eps |log_z| ~ 1e-10 that the derivatives
    amplify: dg keeps ~1e-4 relative accuracy, no longer enough to resolve the tiny posterior covariance.)"""
    V = _covariance(r)
    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1], [1, 0], [0, -1]], dtype=float)
    Omega = (30.0 * signs * np.sqrt(np.diag(V)))[:, None, :]
    for label in (-1.0, 0.0, 1.0):
        log_z, g, dg = Committee(2)._posterior(np.full(len(Omega), label), Omega, V, 24)
        assert np.all(np.isfinite(log_z)) and np.all(np.isfinite(g)) and np.all(np.isfinite(dg))
        cov = V + V @ dg[:, 0, :, 0, :] @ V
        assert np.all(np.linalg.eigvalsh(cov[log_z > -1000.0]) > -1e-8)


@pytest.mark.parametrize("channel", [Committee(2), Committee(2, "relu"), Committee(3)],
                         ids=["closed_form", "relu_lines", "k3_gauss_hermite"])
def test_label_probabilities_sum_to_one(channel):
    """exp(log_z_out) sums to 1 over the label set: the closed form's orthant probabilities are exact to rounding,
    the line rule partitions each line, Gauss-Hermite weights sum to 1."""
    rng = np.random.default_rng(22)
    k = channel.k
    V = 0.3 * np.eye(k) + 0.2
    Omega = rng.normal(0.0, 1.0, (40, 1, k))
    total = sum(np.exp(channel.log_z_out(np.full(40, label), Omega, V)) for label in channel.labels)
    np.testing.assert_allclose(total, 1.0, atol=1e-9)


# ------------------------------------------------------------------ other activations and k

def test_linear_activation_is_the_sign_channel_of_the_sum():
    """y = sign(z1 + z2): the sum is N(omega_1 + omega_2, 1^T V 1), so g_a = g_Sign for both a."""
    V = _covariance(-0.4)
    Omega = np.random.default_rng(23).normal(0.0, 1.0, (50, 1, 2))
    channel = Committee(2, "linear")
    assert channel.labels == (-1.0, 1.0) and not channel.closed_form
    y = _draw(channel, Omega, V, 24)
    g, dg = channel.g_out(y, Omega, V)
    g0, dg0 = dn.Sign().g_out(y, Omega.sum(axis=2, keepdims=True), np.array([[V.sum()]]))
    np.testing.assert_allclose(g, np.broadcast_to(g0, g.shape), atol=1e-8)
    np.testing.assert_allclose(dg, np.broadcast_to(dg0.reshape(-1, 1, 1, 1, 1), dg.shape), atol=1e-8)


def test_label_sets_and_sampling():
    assert Committee(2).labels == (-1.0, 0.0, 1.0) and Committee(2).closed_form
    assert Committee(3).labels == (-1.0, 1.0)
    assert Committee(4, "relu").labels == (0.0, 1.0)
    assert Committee(2, lambda z: namespace(z).tanh(z)).labels == (-1.0, 0.0, 1.0)
    Z = np.random.default_rng(25).normal(size=(1000, 1, 3))
    y = Committee(3).sample(Z, RNG(0))
    np.testing.assert_array_equal(y, np.sign(np.sign(Z[..., 0, :]).sum(axis=-1)))
    Committee(3).check_labels(y)
    with pytest.raises(ValueError, match="activation"):
        Committee(2, "tanh")
    with pytest.raises(ValueError, match="labels"):
        Committee(3).check_labels(np.array([0.0]))


# ------------------------------------------------------------------ multi-index examples

def test_sign_of_product_is_one_minus_the_committee_tie():
    """sign(z1 z2) = +1 exactly where sign z1 + sign z2 != 0: P(+1) = 1 - P_committee(0), and the
    posterior given +1 is the committee's mixture of y = +-1."""
    V = _covariance(0.5)
    Omega = np.random.default_rng(26).normal(0.0, 1.0, (40, 1, 2))
    product = sign_z1_times_z2()
    log_z = product.log_z_out(-np.ones(40), Omega, V)
    np.testing.assert_allclose(log_z, Committee(2).log_z_out(np.zeros(40), Omega, V), atol=1e-9)
    g, dg = product.g_out(-np.ones(40), Omega, V)
    g0, dg0 = Committee(2).g_out(np.zeros(40), Omega, V)
    np.testing.assert_allclose(g, g0, atol=1e-8)
    np.testing.assert_allclose(dg, dg0, atol=1e-8)


def test_abs_difference_matches_dblquad():
    """Gauss-Hermite 64 x 64 against dblquad of the definition, noise_var = 1: |z1| - |z2| has kinks, where GH
    converges only algebraically (to ~1e-3 at 64 nodes), and the error of log_z and g is within 3 times
    error_estimate."""
    channel = abs_difference(1.0)
    V = _covariance(0.3)
    Omega = np.array([[[0.5, -0.4]]])
    y = np.array([0.7])
    log_z, g, dg = channel._posterior(y, Omega, V, channel.nodes)
    prec, omega = np.linalg.inv(V), Omega[0, 0]
    norm = 1.0 / (2.0 * math.pi * math.sqrt(np.linalg.det(V)) * math.sqrt(2.0 * math.pi))

    def moment(h):
        def density(z2, z1):
            d = np.array([z1, z2]) - omega
            return norm * math.exp(-0.5 * d @ prec @ d - 0.5 * (y[0] - abs(z1) + abs(z2)) ** 2) * h(z1, z2)
        return integrate.dblquad(density, omega[0] - 12, omega[0] + 12, omega[1] - 12, omega[1] + 12,
                                 epsabs=1e-12, epsrel=1e-10)[0]
    z = moment(lambda a, b: 1.0)
    mean = np.array([moment(lambda a, b: a), moment(lambda a, b: b)]) / z
    estimate = channel.error_estimate(y, Omega, V)
    assert abs(log_z[0] - math.log(z)) < 3 * estimate["log_z"]
    assert np.max(np.abs(g[0, 0] - prec @ (mean - omega))) < 3 * estimate["g"]


# ------------------------------------------------------------------ backends and errors

@pytest.mark.parametrize("make", [lambda: Committee(2), lambda: Committee(2, "relu"), sign_z1_times_z2],
                         ids=["closed_form", "relu", "sign_product"])
def test_backend_matches_numpy(make, xp):
    channel = make()
    V = _covariance(-0.6)
    Omega = np.random.default_rng(27).normal(0.0, 1.0, (30, 1, 2))
    y = _draw(channel, Omega, V, 28)
    ref = (channel.log_z_out(y, Omega, V), *channel.g_out(y, Omega, V))
    args = xp.asarray(y), xp.asarray(Omega), xp.asarray(V)
    for a, b in zip(ref, (channel.log_z_out(*args), *channel.g_out(*args))):
        assert namespace(b) is xp
        np.testing.assert_allclose(to_numpy(b), a, atol=1e-10, rtol=0)


def test_bad_V_raises():
    with pytest.raises(ValueError, match="positive definite"):
        Committee(2).g_out(np.ones(2), np.zeros((2, 1, 2)), np.array([[1.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        Committee(2).g_out(np.ones(2), np.zeros((2, 1, 2)), np.array([[1.0, 0.2], [0.1, 1.0]]))
