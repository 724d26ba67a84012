"""Priors on R^k (k >= 2) against the definition of their tilted law.

For a prior P_in on R^k and a full, non-diagonal precision A the tilted law is
P(w | B, A) ∝ P_in(w) exp(B.w - w^T A w / 2); f_in returns its mean (d, k) and covariance
(d, k, k), log_z_in = log ∫ dP_in(w) exp(B.w - w^T A w / 2). The reference integrates that
definition from a description of each prior written out by hand, not read from the object: a
piece pi N(mu, L L^T) with L a (k, r) factor is the law of w = mu + L t, t ~ N(0, I_r), so an
atom (r = 0) is an exact term and a line or plane (r = 1, 2) a trapezoid sum on a uniform grid
in t, which for these Gaussian-decaying analytic integrands is exact to rounding (its aliasing
error is ~ exp(-2 pi^2 / (p h^2)) for a width 1 / sqrt(p); here p <= 10, h = 0.08: e^-300).
"""
import itertools
import math
import zlib

import numpy as np
import pytest

import denoisers as dn
from amp.backend import RNG, to_numpy

pytestmark = pytest.mark.usefixtures("single_threaded_blas")

S1 = np.array([[0.9, -0.3], [-0.3, 0.5]])
V1 = np.array([1.0, 0.6])
COV = np.array([[1.5, 0.6], [0.6, 0.8]])
ATOM = np.zeros((2, 0))

# (name, prior, pieces [(weight, mean (k,), factor L (k, r))] with covariance L L^T)
PRIORS = [
    ("gauss_correlated", dn.Gaussian(mean=[0.5, -0.3], cov=COV), [(1.0, [0.5, -0.3], np.linalg.cholesky(COV))]),
    ("rademacher_2", dn.Rademacher(k=2), [(0.25, [a, b], ATOM) for a in (-1.0, 1.0) for b in (-1.0, 1.0)]),
    ("product_bg_gauss", dn.Product([dn.BernoulliGauss(rho=0.3, mean=0.5, var=1.2), dn.Gaussian(mean=-0.4, var=0.7)]),
     [(0.7, [0.0, -0.4], np.array([[0.0], [math.sqrt(0.7)]])),
      (0.3, [0.5, -0.4], np.diag([math.sqrt(1.2), math.sqrt(0.7)]))]),
    # both factors with unequal weights, the second with unequal covs: the order of the outer product shows
    ("product_sparse_bg", dn.Product([dn.SparseRademacher(0.4), dn.BernoulliGauss(rho=0.3, mean=0.5, var=1.2)]),
     [(p1 * p2, [m1, m2], np.array([[0.0], [s2]])[:, :int(s2 > 0)])
      for p1, m1 in ((0.6, 0.0), (0.2, -1 / math.sqrt(0.4)), (0.2, 1 / math.sqrt(0.4)))
      for p2, m2, s2 in ((0.7, 0.0, 0.0), (0.3, 0.5, math.sqrt(1.2)))]),
    ("mix_singular", dn.MultiGaussMixture([0.35, 0.65], [[-0.8, 0.4], [0.6, -0.2]], [S1, np.outer(V1, V1)]),
     [(0.35, [-0.8, 0.4], np.linalg.cholesky(S1)), (0.65, [0.6, -0.2], V1[:, None])]),
    ("mix_singular_atom", dn.MultiGaussMixture([0.2, 0.5, 0.3], [[1.0, 1.0], [-0.5, 0.2], [0.3, -0.7]],
                                               [np.zeros((2, 2)), S1, np.outer(V1, V1)]),
     [(0.2, [1.0, 1.0], ATOM), (0.5, [-0.5, 0.2], np.linalg.cholesky(S1)), (0.3, [0.3, -0.7], V1[:, None])]),
]
IDS = [p[0] for p in PRIORS]
#: non-diagonal positive definite precisions
PRECISIONS = [np.array([[1.3, 0.6], [0.6, 0.9]]), np.array([[0.4, -0.35], [-0.35, 2.2]])]


# ---------------------------------------------------------------- reference

def tilted_reference(pieces, B, A, h=0.08, half_width=10.0):
    """log Z_in, mean (k,) and covariance (k, k) of the tilted law, by direct summation on grids.

    Each piece is integrated in t on a grid of step h, half_width wide around the peak of its
    log integrand (a concave quadratic in t: the peak only places the grid).
    """
    log_f, points = [], []
    axis = np.arange(-half_width, half_width + h / 2, h)
    for pi, mu, L in pieces:
        mu = np.asarray(mu, dtype=float)
        r = L.shape[1]
        t0 = np.linalg.solve(np.eye(r) + L.T @ A @ L, L.T @ (B - A @ mu)) if r else np.zeros(0)
        t = t0 + (np.stack(np.meshgrid(*[axis] * r, indexing="ij"), axis=-1).reshape(-1, r) if r else np.zeros((1, 0)))
        w = mu + t @ L.T
        log_f.append(math.log(pi) + r * math.log(h / math.sqrt(2 * math.pi)) - 0.5 * np.sum(t * t, axis=1)
                     + w @ B - 0.5 * np.sum((w @ A) * w, axis=1))
        points.append(w)
    log_f, w = np.concatenate(log_f), np.concatenate(points)
    top = log_f.max()
    p = np.exp(log_f - top)
    z = p.sum()
    mean = p @ w / z
    dev = w - mean
    return top + math.log(z), mean, (p[:, None] * dev).T @ dev / z


def evaluate(prior, B, A, xp=np):
    """(What (d, k), Chat (d, k, k), log_z (d,)) as NumPy arrays, after checking the shapes."""
    what, chat = prior.f_in(xp.asarray(B), xp.asarray(A))
    log_z = prior.log_z_in(xp.asarray(B), xp.asarray(A))
    d, k = B.shape
    assert tuple(what.shape) == (d, k) and tuple(chat.shape) == (d, k, k) and tuple(log_z.shape) == (d,)
    return to_numpy(what), to_numpy(chat), to_numpy(log_z)


# ---------------------------------------------------------------- definitions

@pytest.mark.parametrize("name, prior, pieces", PRIORS, ids=IDS)
def test_f_in_and_log_z_in_match_numerical_integration_of_tilted_law(name, prior, pieces):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for A in PRECISIONS:
        B = rng.uniform(-3.0, 3.0, (4, 2))
        what, chat, log_z = evaluate(prior, B, A)
        for b, m, c, lz in zip(B, what, chat, log_z):
            ref_lz, ref_m, ref_c = tilted_reference(pieces, b, A)
            # the grid sums are exact to ~1e-14; 1e-10 leaves room for nothing but errors
            # in the formulas (the moments are O(1), so the tolerance is absolute at that scale)
            np.testing.assert_allclose(lz, ref_lz, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(m, ref_m, rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(c, ref_c, rtol=1e-10, atol=1e-10)


def test_gaussian_with_cov_is_the_closed_form_posterior():
    """What = (cov^{-1} + A)^{-1} (B + cov^{-1} mean), Chat = (cov^{-1} + A)^{-1}, in k = 3."""
    cov = np.array([[2.0, 0.5, -0.3], [0.5, 1.0, 0.2], [-0.3, 0.2, 0.7]])
    mean = np.array([0.4, -1.0, 0.3])
    A = np.array([[1.1, -0.4, 0.2], [-0.4, 0.8, 0.3], [0.2, 0.3, 1.5]])
    B = np.random.default_rng(1).normal(0.0, 2.0, (7, 3))
    what, chat, log_z = evaluate(dn.Gaussian(mean=mean, cov=cov), B, A)
    cov_inv = np.linalg.inv(cov)
    post = np.linalg.inv(cov_inv + A)
    np.testing.assert_allclose(what, (B + cov_inv @ mean) @ post, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(chat, np.broadcast_to(post, chat.shape), rtol=1e-12)
    # log Z = log N(0; mean, cov) - log N(0; post (B + cov^{-1} mean), post)
    h = B + cov_inv @ mean
    ref = (0.5 * np.sum((h @ post) * h, axis=1) - 0.5 * mean @ cov_inv @ mean
           + 0.5 * np.linalg.slogdet(post)[1] - 0.5 * np.linalg.slogdet(cov)[1])
    np.testing.assert_allclose(log_z, ref, rtol=1e-12, atol=1e-13)


SCALAR_PRIORS = [dn.Gaussian(mean=0.7, var=2.5), dn.Rademacher(), dn.BernoulliGauss(rho=0.1, mean=1.5, var=0.5),
                 dn.SparseRademacher(0.2), dn.GaussMixture([0.2, 0.5, 0.3], [-2.0, 0.5, 1.0], [0.3, 1.0, 0.0])]


@pytest.mark.parametrize("scalar", SCALAR_PRIORS, ids=repr)
def test_multivariate_mixture_in_k_1_agrees_with_the_scalar_closed_form(scalar):
    multi = dn.MultiGaussMixture(*scalar.components())
    B = np.linspace(-8.0, 8.0, 33)[:, None]
    for a in (0.1, 1.0, 5.0):
        A = np.array([[a]])
        got, want = evaluate(multi, B, A), evaluate(scalar, B, A)
        # two roundings of the same formula; |What| <= 10, so 1e-14 absolute is 1e-15 of its scale
        np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
        np.testing.assert_allclose(got[2], want[2], rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- products

@pytest.mark.parametrize("k", [2, 3])
def test_product_of_rademachers_is_the_rademacher_of_dimension_k(k):
    product, direct = dn.Product([dn.Rademacher()] * k), dn.Rademacher(k=k)
    assert product.k == direct.k == k and len(direct.weights) == 2 ** k
    for a, b in zip(product.components(), direct.components()):
        np.testing.assert_array_equal(a, b)
    A = np.full((k, k), 0.3) + np.eye(k)
    B = np.random.default_rng(k).normal(0.0, 2.0, (9, k))
    for a, b in zip(evaluate(product, B, A), evaluate(direct, B, A)):
        np.testing.assert_array_equal(a, b)
    assert {tuple(m) for m in direct.means} == set(itertools.product((-1.0, 1.0), repeat=k))


def test_product_components_are_the_outer_product_of_the_factors():
    """Product([N(m, C) on R^2, Rademacher]): 2 components, weights 1/2, means (m, +-1), covs diag(C, 0)."""
    cov = np.array([[1.0, 0.4], [0.4, 2.0]])
    prior = dn.Product([dn.Gaussian(mean=[0.5, -1.0], cov=cov), dn.Rademacher()])
    weights, means, covs = prior.components()
    assert prior.k == 3
    np.testing.assert_array_equal(weights, [0.5, 0.5])
    np.testing.assert_array_equal(means, [[0.5, -1.0, -1.0], [0.5, -1.0, 1.0]])
    block = np.zeros((3, 3))
    block[:2, :2] = cov
    np.testing.assert_array_equal(covs, [block, block])
    # E[w w^T]: the factors are independent, so the cross terms are products of their means (E w_3 = 0)
    np.testing.assert_allclose(prior.second_moment(), block + np.outer([0.5, -1.0, 0.0], [0.5, -1.0, 0.0])
                               + np.diag([0.0, 0.0, 1.0]), rtol=1e-15)
    np.testing.assert_allclose(prior.mean(), [0.5, -1.0, 0.0], rtol=1e-15)


def test_repr_rebuilds_the_same_prior():
    for prior in [p[1] for p in PRIORS] + [dn.Rademacher(), dn.Gaussian(cov=[[2.0]])]:
        rebuilt = eval(repr(prior), vars(dn))
        for a, b in zip(rebuilt.components(), prior.components()):
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- tails

@pytest.mark.parametrize("name, prior, pieces", PRIORS, ids=IDS)
def test_huge_fields_and_precisions_give_finite_exact_outputs(name, prior, pieces):
    B = np.array([[1e3, -1e3], [-1e3, -1e3], [1e3, 0.5], [0.0, 1e3], [-1e3, 1e3]])
    for A in (np.array([[1e4, 3e3], [3e3, 2e4]]), np.array([[1e-3, 5e-4], [5e-4, 1e-3]]), PRECISIONS[0]):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            what, chat, log_z = evaluate(prior, B, A)
        assert np.all(np.isfinite(what)) and np.all(np.isfinite(chat)) and np.all(np.isfinite(log_z))
        np.testing.assert_array_equal(chat, np.swapaxes(chat, 1, 2))
        scale = np.abs(chat).max(axis=(1, 2))
        assert np.all(np.linalg.eigvalsh(chat)[:, 0] >= -1e-12 * scale)
        if name == "rademacher_2":
            assert np.all(np.abs(what) <= 1.0)  # inside the hull of the atoms
    if name == "gauss_correlated":  # the closed form holds however large B is
        A = np.array([[1e4, 3e3], [3e3, 2e4]])
        post = np.linalg.inv(np.linalg.inv(COV) + A)
        np.testing.assert_allclose(evaluate(prior, B, A)[0], (B + np.linalg.solve(COV, [0.5, -0.3])) @ post, rtol=1e-10)


# ---------------------------------------------------------------- sampling

@pytest.mark.parametrize("name, prior, pieces", PRIORS, ids=IDS)
def test_sample_moments_match_mean_and_second_moment_within_monte_carlo_error(name, prior, pieces, xp):
    n = 200_000
    w = prior.sample(n, RNG(seed=5, xp=xp))
    assert tuple(w.shape) == (n, 2)
    assert type(w) is type(xp.asarray(np.zeros(1)))  # drawn in the namespace of the rng
    w = to_numpy(w)
    outer = w[:, :, None] * w[:, None, :]
    for values, exact in ((w, prior.mean()), (outer, prior.second_moment())):
        se = values.std(axis=0) / math.sqrt(n)
        # 5 standard errors, plus rounding (w_a^2 is constant on the Rademacher atoms: se = 0)
        assert np.all(np.abs(values.mean(axis=0) - exact) <= 5 * se + 1e-14), (values.mean(axis=0), exact, se)
    for pi, mu, L in pieces:  # each atom carries its weight
        if L.shape[1] == 0:
            frac = np.mean(np.all(w == mu, axis=1))
            assert abs(frac - pi) <= 5 * math.sqrt(pi * (1 - pi) / n)


def test_sample_of_a_rank_one_cov_stays_on_its_line():
    mu = np.array([0.3, -0.7])
    w = dn.MultiGaussMixture([1.0], [mu], [np.outer(V1, V1)]).sample(1000, RNG(seed=2))
    cross = (w[:, 0] - mu[0]) * V1[1] - (w[:, 1] - mu[1]) * V1[0]
    assert np.all(np.abs(cross) <= 1e-14 * (1 + np.abs(w).sum(axis=1)))
    assert np.unique(w[:, 0]).size == 1000


# ---------------------------------------------------------------- backends

@pytest.mark.parametrize("name, prior, pieces", PRIORS, ids=IDS)
def test_f_in_and_log_z_in_on_backend_equal_numpy(name, prior, pieces, xp, backend):
    rng = np.random.default_rng(4)
    B = np.concatenate([rng.uniform(-3.0, 3.0, (6, 2)), [[-50.0, 40.0], [60.0, 50.0]]])
    A = PRECISIONS[1]
    ref = evaluate(prior, B, A)
    for dtype, rtol in ((xp.float64, 1e-12), (xp.float32, 1e-4)):
        Bx, Ax = xp.asarray(B, dtype=dtype), xp.asarray(A, dtype=dtype)
        if backend == "torch":  # NumPy on a tensor that requires grad raises: proof that none is called
            Bx.requires_grad_(True)
            Ax.requires_grad_(True)
        what, chat = prior.f_in(Bx, Ax)
        log_z = prior.log_z_in(Bx, Ax)
        for out in (what, chat, log_z):
            assert type(out) is type(Bx) and out.dtype == dtype
        for got, want in zip((what, chat, log_z), ref):
            # float32: an absolute error at the scale of the largest entry (log Z reaches 1e2)
            atol = 0.0 if dtype == xp.float64 else rtol * np.abs(want).max()
            np.testing.assert_allclose(to_numpy(got), want, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- bad input

EYE = np.eye(2)


@pytest.mark.parametrize("make, match", [
    (lambda: dn.MultiGaussMixture([1.0], [0.0, 1.0], [EYE]), r"\bmeans\b"),
    (lambda: dn.MultiGaussMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [EYE]), r"\bcovs\b"),
    (lambda: dn.MultiGaussMixture([1.0], [[0.0, 0.0]], [np.eye(3)]), r"\bcovs\b"),
    (lambda: dn.MultiGaussMixture([[1.0]], [[0.0, 0.0]], [EYE]), r"\bweights\b"),
    (lambda: dn.MultiGaussMixture([0.5, 0.4], [[0.0, 0.0], [1.0, 1.0]], [EYE, EYE]), r"\bweights\b"),
    (lambda: dn.MultiGaussMixture([1.2, -0.2], [[0.0, 0.0], [1.0, 1.0]], [EYE, EYE]), r"\bweights\b"),
    (lambda: dn.MultiGaussMixture([1.0], [[0.0, np.nan]], [EYE]), r"\bmeans\b"),
    (lambda: dn.MultiGaussMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [EYE, [[1.0, 2.0], [2.0, 1.0]]]),
     r"covs\[1\] must be positive semi-definite"),
    (lambda: dn.MultiGaussMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]]), r"covs\[0\] must be symmetric"),
    (lambda: dn.MultiGaussMixture([1.0], [[0.0, 0.0]], [[[np.inf, 0.0], [0.0, 1.0]]]), r"covs\[0\] must be finite"),
    (lambda: dn.Gaussian(cov=[[1.0, 0.0], [0.0, 0.0]]), r"\bcov must be positive definite"),
    (lambda: dn.Gaussian(cov=[[1.0, 2.0], [2.0, 1.0]]), r"\bcov must be positive definite"),
    (lambda: dn.Gaussian(cov=[1.0, 2.0]), r"\bcov must be a \(k, k\) matrix"),
    (lambda: dn.Gaussian(mean=[0.0, 0.0, 0.0], cov=EYE), r"\bmean\b"),
    (lambda: dn.Gaussian(var=2.0, cov=EYE), r"\bvar\b"),
    (lambda: dn.Rademacher(k=0), r"\bk\b"),
    (lambda: dn.Rademacher(k=1.5), r"\bk\b"),
    (lambda: dn.Rademacher(k=13), r"\b8192 components"),
    (lambda: dn.Product([]), r"\bpriors\b"),
    (lambda: dn.Product(dn.Rademacher()), r"\bpriors\b"),
    (lambda: dn.Product([dn.Rademacher(), "gaussian"]), r"priors\[1\]"),
    (lambda: dn.Product([dn.SparseRademacher(0.1)] * 8), r"\b6561 components"),
    (lambda: dn.Rademacher(k=2).f_in(np.zeros((3, 3)), EYE), r"\bB\b"),
    (lambda: dn.Rademacher(k=2).f_in(np.zeros((3, 2)), np.eye(3)), r"\bA\b"),
], ids=["means_1d", "covs_count", "covs_k", "weights_2d", "weights_sum", "weights_negative", "means_nan",
        "covs_indefinite", "covs_asymmetric", "covs_inf", "gauss_singular", "gauss_indefinite", "gauss_cov_shape",
        "gauss_mean_shape", "gauss_var_and_cov", "rademacher_k0", "rademacher_k_fraction", "rademacher_too_many",
        "product_empty", "product_not_a_list", "product_not_a_prior", "product_too_many", "f_in_B_shape",
        "f_in_A_shape"])
def test_bad_input_raises_value_error_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_rank_deficient_covs_with_rounding_are_accepted_and_components_kept_exactly():
    v = np.array([0.1, 0.3])
    weights, means, covs = [0.4, 0.6], [[0.0, 1.0], [2.0, -1.0]], [np.outer(v, v), np.zeros((2, 2))]
    prior = dn.MultiGaussMixture(weights, means, covs)
    for a, b in zip(prior.components(), (weights, means, covs)):
        np.testing.assert_array_equal(a, b)
