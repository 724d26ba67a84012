"""The generic Quadrature output denoiser against closed forms, brute-force integrals and itself.

    Z_out(y, Omega, V) = ∫ dZ P_out(y | Z) prod_l N(z_l; omega_l, V),  g = d log Z_out / d Omega,  dg = dg / dOmega.

References: the closed-form scalar channels (Linear, Sign) for L = k = 1; for two tokens y = f(z_1 + z_2),
whose sum is N(omega_1 + omega_2, 2V), so that Z_out is the scalar channel's at that mean and variance;
scipy.integrate.dblquad of the definition (moments 1, z, z z^T of the posterior) for D = 2; central
finite differences of log_z_out and g.
"""
import math

import numpy as np
import pytest
from scipy import integrate

import denoisers as dn
from amp.backend import RNG, namespace, to_numpy
from denoisers.generic import Quadrature


def _sign(Z):
    return namespace(Z).sign(Z[..., 0, 0])


def _sign_of_product(Z):
    return namespace(Z).sign(Z[..., 0, 0] * Z[..., 0, 1])


def _token_sum(Z):
    return Z[..., 0, 0] + Z[..., 1, 0]


def _sign_of_token_sum(Z):
    return namespace(Z).sign(_token_sum(Z))


def _cubic(Z):
    """A smooth two-index label map."""
    return Z[..., 0, 0] + 0.5 * Z[..., 0, 1] ** 2


V2 = np.array([[1.0, 0.4], [0.4, 0.7]])


def _draw(channel, Omega, V, seed):
    """Labels of the channel at Z ~ prod_l N(omega_l, V): typical labels for Omega."""
    rng = np.random.default_rng(seed)
    Z = Omega + rng.standard_normal(Omega.shape) @ np.linalg.cholesky(V).T
    return to_numpy(channel.sample(Z, RNG(seed)))


def _scalar_case(n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.5, (n, 1, 1)), np.array([[0.7]])


# ------------------------------------------------------------------ L = k = 1 and two tokens: closed forms

def test_gaussian_noise_matches_the_linear_channel():
    """y = z + noise: GH with 64 nodes is exact to rounding for the Gaussian integrand (1e-8 asked)."""
    Omega, V = _scalar_case(200, 0)
    y = np.random.default_rng(1).normal(0.0, 1.5, 200)
    quad, exact = Quadrature(lambda Z: Z[..., 0, 0], tokens=1, k=1, noise_var=0.5), dn.Linear(0.5)
    g, dg = quad.g_out(y, Omega, V)
    g0, dg0 = exact.g_out(y, Omega, V)
    np.testing.assert_allclose(g, g0, atol=1e-8, rtol=0)
    np.testing.assert_allclose(dg, dg0, atol=1e-8, rtol=0)
    np.testing.assert_allclose(quad.log_z_out(y, Omega, V), exact.log_z_out(y, Omega, V), atol=1e-8, rtol=0)


def test_sign_labels_match_the_sign_channel():
    """Labels (-1, 1) of g = sign: the line rule is exact up to the bisected ends (1e-6 asked, 1e-10 held)."""
    Omega, V = _scalar_case(200, 2)
    quad = Quadrature(_sign, tokens=1, k=1, labels=(-1, 1))
    y = _draw(quad, Omega, V, 3)
    g, dg = quad.g_out(y, Omega, V)
    g0, dg0 = dn.Sign().g_out(y, Omega, V)
    np.testing.assert_allclose(g, g0, atol=1e-10, rtol=0)
    np.testing.assert_allclose(dg, dg0, atol=1e-10, rtol=0)
    np.testing.assert_allclose(quad.log_z_out(y, Omega, V), dn.Sign().log_z_out(y, Omega, V), atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", ["noise", "labels"])
def test_two_tokens_match_the_scalar_channel_of_their_sum(case):
    """y = f(z_1 + z_2), z_l ~ N(omega_l, V): Z_out is the scalar channel's at (omega_1 + omega_2, 2V), so
    g_l = g_scalar and dg[l, l'] = dg_scalar for every pair of tokens."""
    rng = np.random.default_rng(4)
    Omega, V = rng.normal(0.0, 1.0, (100, 2, 1)), np.array([[0.6]])
    if case == "noise":
        quad, scalar = Quadrature(_token_sum, tokens=2, k=1, noise_var=0.4), dn.Linear(0.4)
    else:
        quad, scalar = Quadrature(_sign_of_token_sum, tokens=2, k=1, labels=(-1, 1)), dn.Sign()
    y = _draw(quad, Omega, V, 5)
    g, dg = quad.g_out(y, Omega, V)
    total = Omega.sum(axis=1, keepdims=True)
    g0, dg0 = scalar.g_out(y, total, 2.0 * V)
    np.testing.assert_allclose(g, np.broadcast_to(g0, g.shape), atol=1e-8, rtol=0)
    np.testing.assert_allclose(dg, np.broadcast_to(dg0.reshape(-1, 1, 1, 1, 1), dg.shape), atol=1e-8, rtol=0)
    np.testing.assert_allclose(quad.log_z_out(y, Omega, V), scalar.log_z_out(y, total, 2.0 * V), atol=1e-8, rtol=0)


# ------------------------------------------------------------------ D = 2 against dblquad

def _brute_force(log_lik, y, omega, V):
    """log Z_out, g, dg of one sample by dblquad of N(z; omega, V) P_out(y | z) (1, z, z z^T) over
    omega +- 12 sd (the mass beyond is below 1e-30)."""
    sd = np.sqrt(np.diag(V))
    prec = np.linalg.inv(V)
    norm = 1.0 / (2.0 * math.pi * math.sqrt(np.linalg.det(V)))

    def density(z2, z1):
        d = np.array([z1, z2]) - omega
        return norm * math.exp(-0.5 * d @ prec @ d + log_lik(y, z1, z2))

    def moment(f):
        return integrate.dblquad(lambda z2, z1: density(z2, z1) * f(z1, z2),
                                 omega[0] - 12 * sd[0], omega[0] + 12 * sd[0],
                                 omega[1] - 12 * sd[1], omega[1] + 12 * sd[1], epsabs=1e-13, epsrel=1e-11)[0]
    z = moment(lambda a, b: 1.0)
    mean = np.array([moment(lambda a, b: a), moment(lambda a, b: b)]) / z
    second = np.array([[moment(lambda a, b, i=i, j=j: (a, b)[i] * (a, b)[j]) for j in range(2)] for i in range(2)]) / z
    cov = second - np.outer(mean, mean)
    return math.log(z), prec @ (mean - omega), prec @ (cov - V) @ prec


def test_noisy_two_index_channel_matches_dblquad():
    """y = z1 + z2^2 / 2 + noise (noise_var = 0.5): GH 64 x 64 against dblquad, to 1e-6."""
    noise_var = 0.5
    quad = Quadrature(_cubic, tokens=1, k=2, noise_var=noise_var)

    def log_lik(y, z1, z2):
        return -0.5 * (y - z1 - 0.5 * z2 * z2) ** 2 / noise_var - 0.5 * math.log(2 * math.pi * noise_var)
    Omega = np.array([[[0.3, -0.5]], [[-1.2, 1.0]]])
    y = np.array([0.8, -0.4])
    log_z, g, dg = quad.log_z_out(y, Omega, V2), *quad.g_out(y, Omega, V2)
    for i in range(2):
        ref = _brute_force(log_lik, y[i], Omega[i, 0], V2)
        np.testing.assert_allclose(log_z[i], ref[0], atol=1e-6)
        np.testing.assert_allclose(g[i, 0], ref[1], atol=1e-6)
        np.testing.assert_allclose(dg[i, 0, :, 0, :], ref[2], atol=1e-6)


# ------------------------------------------------------------------ derivatives, error estimate, normalisation

CHANNELS = {
    "noisy_D2": (lambda: Quadrature(_cubic, tokens=1, k=2, noise_var=0.5), V2),
    "labels_D2": (lambda: Quadrature(_sign_of_product, tokens=1, k=2, labels=(-1, 1)), V2),
    "labels_two_tokens": (lambda: Quadrature(_sign_of_token_sum, tokens=2, k=1, labels=(-1, 1)), np.array([[0.6]])),
}


@pytest.mark.parametrize("name", list(CHANNELS))
def test_g_out_matches_numerical_derivative_of_log_z(name):
    """Central differences (step 1e-4) of log_z_out give g, and of g give dg, to their O(h^2 + eps / h)
    error: 1e-6 (the rules are smooth in Omega: the line rule's ends are exact, GH's nodes move with Omega)."""
    make, V = CHANNELS[name]
    channel = make()
    rng = np.random.default_rng(6)
    Omega = rng.normal(0.0, 0.8, (4, channel.tokens, channel.k))
    y = _draw(channel, Omega, V, 7)
    g, dg = channel.g_out(y, Omega, V)
    h = 1e-4
    for l in range(channel.tokens):
        for a in range(channel.k):
            step = np.zeros_like(Omega)
            step[:, l, a] = h
            fd = (channel.log_z_out(y, Omega + step, V) - channel.log_z_out(y, Omega - step, V)) / (2 * h)
            np.testing.assert_allclose(g[:, l, a], fd, atol=1e-6)
            fd_g = (channel.g_out(y, Omega + step, V)[0] - channel.g_out(y, Omega - step, V)[0]) / (2 * h)
            np.testing.assert_allclose(dg[:, :, :, l, a], fd_g, atol=1e-6)


@pytest.mark.parametrize("make, V, nodes", [
    (lambda n: Quadrature(_cubic, tokens=1, k=2, noise_var=0.5, nodes=n), V2, (8, 16, 32)),
    (lambda n: Quadrature(lambda Z: namespace(Z).sign(Z[..., 0, 0] + Z[..., 0, 1]), tokens=1, k=2, labels=(-1, 1),
                          nodes=n), np.array([[1.0, -0.93], [-0.93, 1.0]]), (3, 4, 6)),
], ids=["gauss_hermite", "lines"])
def test_error_estimate_decreases_when_nodes_grow(make, V, nodes):
    """Until rounding (1e-12) the estimate falls with nodes: algebraically for GH on this smooth integrand,
    spectrally for the Gauss-Legendre panels of the line rule (strongly correlated V, boundary at an angle)."""
    Omega = np.random.default_rng(8).normal(0.0, 1.0, (40, 1, 2))
    y = _draw(make(nodes[0]), Omega, V, 9)
    errors = [make(n).error_estimate(y, Omega, V) for n in nodes]
    for key in ("log_z", "g", "dg"):
        values = [e[key] for e in errors]
        assert all(b < a or a < 1e-12 for a, b in zip(values, values[1:])), (key, values)


@pytest.mark.parametrize("channel, V", [
    (Quadrature(lambda Z: namespace(Z).clip(namespace(Z).round(Z[..., 0, 0]), -1.0, 1.0), tokens=1, k=1,
                labels=(-1, 0, 1)), np.array([[0.8]])),
    (Quadrature(_sign_of_product, tokens=1, k=2, labels=(-1, 1)), V2),
    (Quadrature(lambda Z: namespace(Z).sign(Z[..., 0, 0] + namespace(Z).abs(Z[..., 0, 1]) - 1.0), tokens=1, k=2,
                labels=(-1, 0, 1)), np.array([[0.5, -0.2], [-0.2, 1.0]])),
], ids=["D1_three_labels", "D2_sign_product", "D2_kinked_boundary"])
def test_label_probabilities_sum_to_one(channel, V):
    """sum over the finite label set of exp(log_z_out) = 1: exactly along each line, to the outer
    rule's error over lines (1e-9)."""
    Omega = np.random.default_rng(10).normal(0.0, 1.5, (50, channel.tokens, channel.k))
    total = sum(np.exp(channel.log_z_out(np.full(50, label), Omega, V)) for label in channel.labels)
    np.testing.assert_allclose(total, 1.0, atol=1e-9)


# ------------------------------------------------------------------ backends, tails, sampling

@pytest.mark.parametrize("name", list(CHANNELS))
def test_backend_matches_numpy(name, xp):
    make, V = CHANNELS[name]
    channel = make()
    Omega = np.random.default_rng(11).normal(0.0, 1.0, (30, channel.tokens, channel.k))
    y = _draw(channel, Omega, V, 12)
    ref = (channel.log_z_out(y, Omega, V), *channel.g_out(y, Omega, V))
    args = xp.asarray(y), xp.asarray(Omega), xp.asarray(V)
    for a, b in zip(ref, (channel.log_z_out(*args), *channel.g_out(*args))):
        assert namespace(b) is xp
        np.testing.assert_allclose(to_numpy(b), a, atol=1e-10, rtol=0)


@pytest.mark.parametrize("channel, V", [
    (Quadrature(_sign, tokens=1, k=1, labels=(-1, 1)), np.array([[0.5]])),
    (Quadrature(_sign_of_product, tokens=1, k=2, labels=(-1, 1)), V2),
    (Quadrature(_cubic, tokens=1, k=2, noise_var=0.5), V2),
], ids=["lines_D1", "lines_D2", "gauss_hermite_D2"])
def test_tails_are_finite(channel, V):
    """|omega_a| = 30 sqrt(V_aa), every sign and label: finite log_z, g, dg (the line rule scans to +-60)."""
    sd = np.sqrt(np.diag(V))
    signs = np.array(np.meshgrid(*([[-1.0, 1.0]] * channel.k))).reshape(channel.k, -1).T
    Omega = (30.0 * signs * sd)[:, None, :]
    labels = channel.labels or (-2.0, 0.0, 3.0)
    for label in labels:
        y = np.full(len(Omega), label)
        log_z, g, dg = channel._posterior(y, Omega, V, channel.nodes)
        assert np.all(np.isfinite(log_z)) and np.all(np.isfinite(g)) and np.all(np.isfinite(dg))


def test_one_dimensional_tails_are_accurate():
    """The line rule integrates each line exactly: the sign channel's g at up to 30 sd agrees to 1e-9 relative
    (or 1e-12 absolute: the posterior mean of z is formed first, so a shift below rounding of omega is lost)."""
    Omega, V = np.array([[[-30.0]], [[21.0]], [[-15.0]]]) * math.sqrt(0.5), np.array([[0.5]])
    y = np.ones(3)
    g, dg = Quadrature(_sign, tokens=1, k=1, labels=(-1, 1)).g_out(y, Omega, V)
    g0, dg0 = dn.Sign().g_out(y, Omega, V)
    np.testing.assert_allclose(g, g0, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dg, dg0, rtol=1e-6, atol=1e-9)


def test_unreachable_label_gives_the_prior():
    """A label that g never produces: log_z = -inf and g = dg = 0, no NaN."""
    channel = Quadrature(_sign, tokens=1, k=1, labels=(-1, 0, 1))
    log_z, g, dg = channel._posterior(np.zeros(2), np.array([[[0.3]], [[-1.0]]]), np.array([[1.0]]), channel.nodes)
    assert np.all(log_z == -np.inf) and np.all(g == 0.0) and np.all(dg == 0.0)


def test_sample_and_label_quadrature():
    rng = RNG(seed=13)
    Z = np.random.default_rng(14).normal(size=(5000, 1, 2))
    noisy = Quadrature(_cubic, tokens=1, k=2, noise_var=0.3)
    y = noisy.sample(Z, rng)
    assert y.shape == (5000,)
    assert abs(np.var(y - _cubic(Z)) - 0.3) < 0.03  # 5000 draws: sd of the variance estimate ~ 0.006
    ys, w = noisy.label_quadrature(Z[:3], 12)
    assert ys.shape == (12, 3) and w.shape == (12, 3)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-13)
    np.testing.assert_allclose((w * ys).sum(axis=0), _cubic(Z[:3]), atol=1e-12)
    np.testing.assert_allclose((w * (ys - _cubic(Z[:3])) ** 2).sum(axis=0), 0.3, atol=1e-12)
    labelled = Quadrature(_sign_of_product, tokens=1, k=2, labels=(-1, 1))
    ys, w = labelled.label_quadrature(Z[:3], 12)
    assert ys.shape == (1, 3) and np.all(w == 1.0)
    np.testing.assert_array_equal(ys[0], _sign_of_product(Z[:3]))


def test_vector_labels():
    """label_shape is inferred from g: y = (z1, z2) + noise has label_shape (2,) and is the Gaussian
    channel N(y; omega, V + noise_var I), g = (V + noise_var I)^{-1} (y - omega)."""
    channel = Quadrature(lambda Z: Z[..., 0, :], tokens=1, k=2, noise_var=0.5)
    assert channel.label_shape == (2,)
    Omega = np.random.default_rng(15).normal(size=(10, 1, 2))
    y = np.random.default_rng(16).normal(size=(10, 2))
    g, dg = channel.g_out(y, Omega, V2)
    S_inv = np.linalg.inv(V2 + 0.5 * np.eye(2))
    np.testing.assert_allclose(g[:, 0], (y - Omega[:, 0]) @ S_inv, atol=1e-8)
    np.testing.assert_allclose(dg[:, 0, :, 0, :], np.broadcast_to(-S_inv, (10, 2, 2)), atol=1e-8)


# ------------------------------------------------------------------ errors

def test_bad_labels_raise():
    channel = Quadrature(_sign, tokens=1, k=1, labels=(-1, 1))
    with pytest.raises(ValueError, match=r"\[0\.5\]"):
        channel.check_labels(np.array([1.0, 0.5, -1.0]))
    with pytest.raises(ValueError, match="shape"):
        channel.check_labels(np.ones((3, 2)))
    channel.check_labels(np.array([1.0, -1.0]))


@pytest.mark.parametrize("V, match", [
    (np.array([[1.0, 0.5], [0.4, 1.0]]), "symmetric"),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
    (np.array([[1.0, 0.0], [0.0, np.nan]]), "finite"),
    (np.eye(3), "shape"),
])
def test_bad_V_raises(V, match):
    channel = Quadrature(_sign_of_product, tokens=1, k=2, labels=(-1, 1))
    with pytest.raises(ValueError, match=match):
        channel.g_out(np.ones(2), np.zeros((2, 1, 2)), V)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="exactly one"):
        Quadrature(_sign, tokens=1, k=1)
    with pytest.raises(ValueError, match="exactly one"):
        Quadrature(_sign, tokens=1, k=1, labels=(-1, 1), noise_var=0.1)
    with pytest.raises(ValueError, match="noise_var"):
        Quadrature(_sign, tokens=1, k=1, noise_var=0.0)
    with pytest.raises(ValueError, match="tokens"):
        Quadrature(_sign, tokens=0, k=1, labels=(-1, 1))
    with pytest.raises(ValueError, match="Omega"):
        Quadrature(_sign, tokens=1, k=1, labels=(-1, 1)).g_out(np.ones(2), np.zeros((2, 1, 2)), np.eye(1))
