"""Priors (Bayes input denoisers) against their definitions.

For a prior P_in the tilted law is P(w | B, A) ∝ P_in(w) exp(B w - A w^2 / 2);
f_in returns its mean and variance and log_z_in = log ∫ dP_in(w) exp(B w - A w^2 / 2).
The references below integrate that definition directly: scipy.integrate.quad for the
Gaussian parts of P_in (scaled by the peak of the integrand, so that they neither
overflow nor underflow however large B is), exact sums for the point masses, and mpmath
for the Rademacher tails. The mixture description each reference integrates is written
from the constructor's arguments, not read back from the object under test.
"""
import math
import zlib

import mpmath
import numpy as np
import pytest
from scipy import integrate

from amp.backend import RNG, to_numpy
from denoisers import BernoulliGauss, Gaussian, GaussMixture, Rademacher

# (name, prior, components [(weight, mean, variance)] with variance 0 a point mass)
PRIORS = [
    ("gauss_std", Gaussian(), [(1.0, 0.0, 1.0)]),
    ("gauss", Gaussian(mean=0.7, var=2.5), [(1.0, 0.7, 2.5)]),
    ("rademacher", Rademacher(), [(0.5, -1.0, 0.0), (0.5, 1.0, 0.0)]),
    ("bg_sparse", BernoulliGauss(rho=0.3), [(0.7, 0.0, 0.0), (0.3, 0.0, 1.0)]),
    ("bg_shifted", BernoulliGauss(rho=0.1, mean=1.5, var=0.5), [(0.9, 0.0, 0.0), (0.1, 1.5, 0.5)]),
    ("bg_dense", BernoulliGauss(rho=1.0, mean=-0.5, var=2.0), [(1.0, -0.5, 2.0)]),
    ("mix3_atom", GaussMixture([0.2, 0.5, 0.3], [-2.0, 0.5, 1.0], [0.3, 1.0, 0.0]),
     [(0.2, -2.0, 0.3), (0.5, 0.5, 1.0), (0.3, 1.0, 0.0)]),
    ("mix2_narrow", GaussMixture([0.4, 0.6], [-1.0, 1.0], [0.05, 0.1]),
     [(0.4, -1.0, 0.05), (0.6, 1.0, 0.1)]),
]
IDS = [p[0] for p in PRIORS]


# ---------------------------------------------------------------- references

def _tilted_terms(components, B, A, h):
    """[(log_scale, value)] with sum_j exp(log_scale_j) value_j = ∫ dP_in(w) h(w) exp(B w - A w^2/2)."""
    terms = []
    for pi, mu, s in components:
        if s == 0.0:  # point mass: an exact term
            terms.append((math.log(pi) + B * mu - 0.5 * A * mu * mu, h(mu)))
            continue

        def log_f(w, pi=pi, mu=mu, s=s):
            return (math.log(pi) - 0.5 * math.log(2 * math.pi * s) - 0.5 * (w - mu) ** 2 / s
                    + B * w - 0.5 * A * w * w)

        # log_f is a concave quadratic: its peak and width only place the integration range
        prec = 1.0 / s + A
        w0, sd = (mu / s + B) / prec, prec ** -0.5
        peak = log_f(w0)
        # the scaled integrand is <= |h| with unit-order mass ~ sd: an absolute tolerance of
        # 1e-15 sd only stops quad chasing rounding in terms that are negligible in the sum
        val, _ = integrate.quad(lambda w: h(w) * math.exp(log_f(w) - peak), w0 - 40 * sd, w0 + 40 * sd,
                                points=[w0], epsabs=1e-15 * sd, epsrel=1e-12, limit=200)
        terms.append((peak, val))
    return terms


def _tilted_sum(terms):
    top = max(t[0] for t in terms)
    return top, sum(math.exp(l - top) * v for l, v in terms)


def tilted_reference(components, B, A):
    """log Z_in, mean and variance of the tilted law by direct integration (two passes)."""
    top, z = _tilted_sum(_tilted_terms(components, B, A, lambda w: 1.0))
    _, m1 = _tilted_sum(_tilted_terms(components, B, A, lambda w: w))
    mean = m1 / z
    _, c2 = _tilted_sum(_tilted_terms(components, B, A, lambda w: (w - mean) ** 2))
    return top + math.log(z), mean, c2 / z


def evaluate(prior, B, A, xp=np):
    """(What (d,), Chat (d,), log_z (d,)) as NumPy arrays, after checking the shapes."""
    Bx = xp.asarray(np.asarray(B, dtype=float)[:, None])
    Ax = xp.asarray(np.array([[A]], dtype=float))
    what, chat = prior.f_in(Bx, Ax)
    log_z = prior.log_z_in(Bx, Ax)
    d = len(B)
    assert tuple(what.shape) == (d, 1) and tuple(chat.shape) == (d, 1, 1) and tuple(log_z.shape) == (d,)
    return to_numpy(what)[:, 0], to_numpy(chat)[:, 0, 0], to_numpy(log_z)


def assert_close(actual, desired, rtol, atol=0.0):
    """|actual - desired| <= atol + rtol |desired| elementwise; atol may be an array."""
    actual, desired = np.asarray(actual, dtype=float), np.asarray(desired, dtype=float)
    err = np.abs(actual - desired)
    bound = atol + rtol * np.abs(desired)
    bad = ~(err <= bound)
    assert not np.any(bad), (f"{bad.sum()} of {bad.size} differ: actual {actual[bad]}, "
                             f"desired {desired[bad]}, error {err[bad]}, bound {np.broadcast_to(bound, bad.shape)[bad]}")


def random_points(seed, n_A=3, n_B=4):
    rng = np.random.default_rng(seed)
    return [(rng.uniform(0.1, 5.0), rng.uniform(-3.0, 3.0, n_B)) for _ in range(n_A)]


# ---------------------------------------------------------------- definitions

@pytest.mark.parametrize("name, prior, components", PRIORS, ids=IDS)
def test_f_in_and_log_z_in_match_numerical_integration_of_tilted_law(name, prior, components):
    for A, Bs in random_points(seed=zlib.crc32(name.encode())):
        what, chat, log_z = evaluate(prior, Bs, A)
        ref = np.array([tilted_reference(components, B, A) for B in Bs])
        # log Z_in may come close to 0; an absolute error on log Z is a relative error on Z,
        # so a floor of 1e-12 there is a relative tolerance of 1e-12 on Z_in itself.
        np.testing.assert_allclose(log_z, ref[:, 0], rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(what, ref[:, 1], rtol=1e-6)
        np.testing.assert_allclose(chat, ref[:, 2], rtol=1e-6)


@pytest.mark.parametrize("name, prior, components", PRIORS, ids=IDS)
def test_f_in_is_the_derivative_of_log_z_in_in_B(name, prior, components):
    """d log Z / dB = E[w | B, A] and d^2 log Z / dB^2 = Var[w | B, A] (5-point stencils)."""
    h = 1e-3
    for A, Bs in random_points(seed=zlib.crc32(name.encode()) + 1, n_A=2, n_B=5):
        what, chat, _ = evaluate(prior, Bs, A)
        f = [evaluate(prior, Bs + k * h, A)[2] for k in (-2, -1, 0, 1, 2)]
        d1 = (f[0] - 8 * f[1] + 8 * f[3] - f[4]) / (12 * h)
        d2 = (-f[0] + 16 * f[1] - 30 * f[2] + 16 * f[3] - f[4]) / (12 * h * h)
        # stencil truncation ~h^4 |d^5 log Z| and rounding ~ 1e-16 |log Z| / h^2
        scale = 1.0 + np.abs(f[2])
        assert_close(what, d1, rtol=1e-7, atol=1e-10 * scale)
        assert_close(chat, d2, rtol=1e-5, atol=1e-8 * scale)


def test_rademacher_f_in_is_tanh():
    B = np.linspace(-3, 3, 13)
    what, chat, log_z = evaluate(Rademacher(), B, 0.7)
    np.testing.assert_allclose(what, np.tanh(B), rtol=1e-13, atol=1e-15)  # tanh(0) = 0
    np.testing.assert_allclose(chat, 1.0 - np.tanh(B) ** 2, rtol=1e-13)
    np.testing.assert_allclose(log_z, np.log(np.cosh(B)) - 0.35, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------- tails

@pytest.mark.parametrize("A", [0.1, 1.0, 5.0])
def test_rademacher_variance_far_in_the_tails_is_exact_not_zero(A):
    B = np.array([-40.0, 40.0, -50.0, 50.0, -300.0, 300.0])
    what, chat, log_z = evaluate(Rademacher(), B, A)
    for b, m, v, lz in zip(B, what, chat, log_z):
        e = math.exp(-2 * abs(b))
        assert v == pytest.approx(4 * e / (1 + e) ** 2, rel=1e-10, abs=0.0)
        if abs(b) == 40:
            assert v > 0.0
        with mpmath.workdps(50):
            bm = mpmath.mpf(b)
            # Var = 1 - tanh^2 = sech^2, at 50 digits
            assert v == pytest.approx(float(mpmath.sech(bm) ** 2), rel=1e-10)
            assert m == pytest.approx(float(mpmath.tanh(bm)), rel=1e-15)
            assert lz == pytest.approx(float(mpmath.log(mpmath.cosh(bm)) - mpmath.mpf(A) / 2), rel=1e-13)


@pytest.mark.parametrize("name, prior, components", PRIORS, ids=IDS)
def test_priors_stay_finite_and_exact_for_large_fields(name, prior, components):
    B = np.array([-50.0, -20.0, 20.0, 50.0])
    for A in (0.1, 5.0):
        what, chat, log_z = evaluate(prior, B, A)
        assert np.all(np.isfinite(what)) and np.all(np.isfinite(chat)) and np.all(np.isfinite(log_z))
        assert np.all(chat >= 0.0)
        ref = np.array([tilted_reference(components, b, A) for b in B])
        np.testing.assert_allclose(log_z, ref[:, 0], rtol=1e-10)
        np.testing.assert_allclose(what, ref[:, 1], rtol=1e-9)
        np.testing.assert_allclose(chat, ref[:, 2], rtol=1e-9)


def test_bernoulli_gauss_far_fields_select_the_gaussian_component():
    """For |B| -> inf the slab wins: the tilted law tends to N((mu + s B)/(1 + A s), s/(1 + A s))."""
    prior, mu, s, A = BernoulliGauss(rho=0.05, mean=0.3, var=0.8), 0.3, 0.8, 2.0
    B = np.array([-50.0, 50.0])
    what, chat, _ = evaluate(prior, B, A)
    np.testing.assert_allclose(what, (mu + s * B) / (1 + A * s), rtol=1e-12)
    np.testing.assert_allclose(chat, s / (1 + A * s), rtol=1e-12)


# ---------------------------------------------------------------- quadrature and sampling

def _component_moment(mu, s, k):
    """E[w^k] for w ~ N(mu, s), k <= 4."""
    return [1.0, mu, mu**2 + s, mu**3 + 3 * mu * s, mu**4 + 6 * mu**2 * s + 3 * s**2][k]


def prior_rule(prior, n, cls=None):
    """Nodes (m,) and weights (m,) of the prior's own rule for E_{P_in}[h(w)].

    The state-evolution interface of a prior is `quadrature(n)` (nodes, weights) or, in its
    newer form, `components()` (weights, means, covs; zero cov = atom); the latter is expanded
    here with n Gauss-Hermite nodes per Gaussian component.
    """
    obj = prior if cls is None else cls
    if hasattr(obj, "quadrature"):
        nodes, weights = (prior.quadrature(n) if cls is None else cls.quadrature(prior, n))
        assert nodes.ndim == 2 and nodes.shape[1] == 1 and weights.shape == (nodes.shape[0],)
        return nodes[:, 0], weights
    from denoisers.quadrature import gauss_hermite
    pis, mus, covs = (prior.components() if cls is None else cls.components(prior))
    J = len(pis)
    assert np.shape(mus) == (J, 1) and np.shape(covs) == (J, 1, 1)
    x, h = gauss_hermite(n)
    nodes, weights = [], []
    for pi, mu, s in zip(pis, np.asarray(mus)[:, 0], np.asarray(covs)[:, 0, 0]):
        assert s >= 0.0
        if s == 0.0:
            nodes.append([mu])
            weights.append([pi])
        else:
            nodes.append(mu + math.sqrt(s) * x)
            weights.append(pi * h)
    return np.concatenate(nodes), np.concatenate(weights)


@pytest.mark.parametrize("name, prior, components", PRIORS, ids=IDS)
def test_quadrature_reproduces_mean_and_second_moment_exactly(name, prior, components):
    m1 = sum(pi * mu for pi, mu, _ in components)
    m2 = sum(pi * (s + mu * mu) for pi, mu, s in components)
    assert prior.mean().shape == (1,) and prior.second_moment().shape == (1, 1)
    np.testing.assert_allclose(prior.mean(), [m1], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(prior.second_moment(), [[m2]], rtol=1e-14)
    for n in (3, 12):
        w, weights = prior_rule(prior, n)
        assert np.all(weights > 0.0)
        assert weights.sum() == pytest.approx(1.0, rel=1e-14)
        assert np.sum(weights * w) == pytest.approx(prior.mean()[0], rel=1e-13, abs=1e-15)
        assert np.sum(weights * w * w) == pytest.approx(prior.second_moment()[0, 0], rel=1e-13)
        # an exact Gaussian rule with n >= 3 nodes also integrates w^3 and w^4 exactly
        for k in (3, 4):
            exact = sum(pi * _component_moment(mu, s, k) for pi, mu, s in components)
            assert np.sum(weights * w**k) == pytest.approx(exact, rel=1e-12, abs=1e-14)
    # and a smooth test function to high order: E cos(w) = sum_j pi_j e^{-s_j/2} cos(mu_j)
    w, weights = prior_rule(prior, 30)
    exact = sum(pi * math.exp(-s / 2) * math.cos(mu) for pi, mu, s in components)
    assert np.sum(weights * np.cos(w)) == pytest.approx(exact, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("name, prior, components", PRIORS, ids=IDS)
def test_components_are_the_mixture_the_prior_was_built_from(name, prior, components):
    if not hasattr(prior, "components"):
        pytest.skip("this version of the prior interface has quadrature(n), not components()")
    pis, mus, covs = prior.components()
    got = sorted(zip(np.asarray(pis), np.asarray(mus)[:, 0], np.asarray(covs)[:, 0, 0]))
    want = sorted(components)
    assert len(got) == len(want)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("name, prior, components", PRIORS, ids=IDS)
def test_sample_moments_match_quadrature_within_monte_carlo_error(name, prior, components, xp):
    n = 200_000
    w = prior.sample(n, RNG(seed=7, xp=xp))
    assert tuple(w.shape) == (n, 1)
    assert type(w) is type(xp.asarray(np.zeros(1)))  # drawn in the namespace of the rng
    w = to_numpy(w)[:, 0]
    assert w.dtype == np.float64
    nodes, weights = prior_rule(prior, 20)
    for h in (lambda x: x, lambda x: x * x, np.cos):
        values = h(w)
        exact = np.sum(weights * h(nodes))
        se = values.std() / math.sqrt(n)
        # 5 standard errors, plus rounding (cos is constant on the Rademacher atoms: se = 0)
        assert abs(values.mean() - exact) <= 5 * se + 1e-14 * (1 + abs(exact)), (values.mean(), exact, se)
    # each point mass carries its weight: P(w = mu_j) = pi_j
    for pi, mu, s in components:
        if s == 0.0:
            frac = np.mean(w == mu)
            assert abs(frac - pi) <= 5 * math.sqrt(pi * (1 - pi) / n)
    if all(s > 0.0 for _, _, s in components):
        assert np.unique(w).size == n  # no spurious atoms in a continuous prior


def test_default_rule_is_monte_carlo_from_sample():
    """The InputDenoiser fallback rule (Monte Carlo atoms from `sample`) matches the prior's moments."""
    from denoisers.base import InputDenoiser
    prior = BernoulliGauss(rho=0.4, mean=1.0, var=0.5)
    w, weights = prior_rule(prior, 64, cls=InputDenoiser)
    assert weights.sum() == pytest.approx(1.0)
    m = w.size
    np.testing.assert_allclose(weights, 1.0 / m, rtol=1e-15)
    # atoms drawn from the prior: about a fraction 1 - rho at 0, the rest distinct slab draws
    assert abs(np.mean(w == 0.0) - 0.6) <= 5 * math.sqrt(0.24 / m)
    assert np.unique(w[w != 0.0]).size == np.sum(w != 0.0)
    assert abs(np.sum(weights * w) - prior.mean()[0]) <= 5 * w.std() / math.sqrt(m)
    assert abs(np.sum(weights * w * w) - prior.second_moment()[0, 0]) <= 5 * (w * w).std() / math.sqrt(m)


# ---------------------------------------------------------------- backends

@pytest.mark.parametrize("name, prior, components", PRIORS, ids=IDS)
def test_f_in_and_log_z_in_on_backend_equal_numpy(name, prior, components, xp):
    rng = np.random.default_rng(3)
    B = np.concatenate([rng.uniform(-3, 3, 6), [-50.0, 50.0]])
    A = 0.8
    ref = evaluate(prior, B, A)
    for dtype, rtol in ((xp.float64, 1e-12), (xp.float32, 2e-4)):
        Bx = xp.asarray(B[:, None], dtype=dtype)
        Ax = xp.asarray(np.array([[A]]), dtype=dtype)
        what, chat = prior.f_in(Bx, Ax)
        log_z = prior.log_z_in(Bx, Ax)
        for out in (what, chat, log_z):
            assert type(out) is type(Bx) and out.dtype == dtype
        got = (to_numpy(what)[:, 0], to_numpy(chat)[:, 0, 0], to_numpy(log_z))
        for g, r in zip(got, ref):
            # float32: compare away from values that underflow float32 (the tail variances)
            keep = np.abs(r) > 1e-30 if dtype == xp.float32 else np.ones(r.shape, bool)
            np.testing.assert_allclose(g[keep], r[keep], rtol=rtol, atol=0.0)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("make, match", [
    (lambda: Gaussian(var=0.0), r"\bvar\b"),
    (lambda: Gaussian(var=-1.0), r"\bvar\b"),
    (lambda: Gaussian(var=float("nan")), r"\bvar\b"),
    (lambda: GaussMixture([0.5, 0.5], [0.0, 1.0], [1.0, -0.1]), r"vars\[1\]"),
    (lambda: GaussMixture([0.5, 0.6], [0.0, 1.0], [1.0, 1.0]), r"\bweights\b"),
    (lambda: GaussMixture([0.3, 0.3], [0.0, 1.0], [1.0, 1.0]), r"\bweights\b"),
    (lambda: GaussMixture([1.2, -0.2], [0.0, 1.0], [1.0, 1.0]), r"\bweights\b"),
    (lambda: GaussMixture([0.5, 0.5], [0.0, 1.0, 2.0], [1.0, 1.0]), r"\bmeans\b"),
    (lambda: BernoulliGauss(rho=0.0), r"\brho\b"),
    (lambda: BernoulliGauss(rho=-0.2), r"\brho\b"),
    (lambda: BernoulliGauss(rho=1.5), r"\brho\b"),
    (lambda: BernoulliGauss(rho=0.5, var=0.0), r"\bvar\b"),
], ids=["gauss_var0", "gauss_var_neg", "gauss_var_nan", "mix_neg_var", "mix_weights_over",
        "mix_weights_under", "mix_weight_neg", "mix_shapes", "bg_rho0", "bg_rho_neg", "bg_rho_big",
        "bg_var0"])
def test_bad_prior_parameters_raise_value_error_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_valid_boundary_parameters_are_accepted():
    BernoulliGauss(rho=1.0)
    GaussMixture([0.25, 0.75], [0.0, 1.0], [0.0, 1e-3])
    Gaussian(var=1e-8)
