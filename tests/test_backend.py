"""amp.backend: backend names, special functions and random numbers on every array namespace.

References are computed with mpmath at high precision (or with SciPy where SciPy is exact
enough), never with the function under test.
"""
import math

import array_api_compat as aac
import mpmath
import numpy as np
import pytest
import scipy.special

from amp import backend as B
from amp.backend import RNG, backend_namespace, namespace, to_numpy

#: relative accuracy asked of the special functions (float64)
RTOL = 1e-12

# exact -inf results (log 0) are expected here; NumPy reports them as RuntimeWarnings
# (and -inf + inf = NaN in the (-inf, inf) interval of log_diff_ndtr, whose result is still exact)
pytestmark = [pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:invalid value encountered in add:RuntimeWarning")]


def _mp(f, *args, dps=400):
    """f(*args) in mpmath at `dps` digits, as a float."""
    with mpmath.workdps(dps):
        return float(f(*(mpmath.mpf(float(a)) for a in args)))


def _on(xp, a):
    return xp.asarray(np.asarray(a, dtype=np.float64))


def _assert_close(actual, expected, rtol=RTOL):
    actual = to_numpy(actual)
    expected = np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape
    same_inf = np.isinf(expected) & (actual == expected)
    finite = ~np.isinf(expected)
    assert np.all(same_inf | finite), f"infinite references not reproduced: {actual} vs {expected}"
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=0.0)


# ----------------------------------------------------------------------------- namespaces


def test_backend_namespace_names(xp, backend):
    a = xp.zeros(3)
    assert namespace(a) is backend_namespace(backend)
    assert isinstance(to_numpy(a), np.ndarray)


def test_unknown_backend_name_is_a_value_error():
    with pytest.raises(ValueError, match="backend"):
        backend_namespace("jax")


def test_to_numpy_round_trip(xp):
    a = np.linspace(-1.0, 1.0, 7)
    out = to_numpy(xp.asarray(a))
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, a)


# ------------------------------------------------------------------------ special functions

LOG_NDTR_X = [-40.0, -38.0, -30.0, -20.0, -10.0, -5.0, -1.0, -1e-3, 0.0, 0.5, 1.0, 3.0, 5.0, 8.0, 10.0, 20.0, 37.0]


def test_log_ndtr_matches_mpmath(xp):
    ref = [_mp(lambda x: mpmath.log(mpmath.ncdf(x)), x) for x in LOG_NDTR_X]
    _assert_close(B.log_ndtr(_on(xp, LOG_NDTR_X)), ref)


NDTR_X = [-37.0, -30.0, -20.0, -10.0, -8.0, -5.0, -2.0, -0.3, 0.0, 0.3, 2.0, 5.0, 10.0]


def test_ndtr_matches_mpmath_in_both_tails(xp):
    # Phi(-30) = 4.9e-198 is a normal float64: the lower tail must keep its relative accuracy
    ref = [_mp(mpmath.ncdf, x) for x in NDTR_X]
    _assert_close(B.ndtr(_on(xp, NDTR_X)), ref)


def test_log_npdf_matches_mpmath(xp):
    x = [-30.0, -1.0, 0.0, 2.5]
    ref = [_mp(lambda t: mpmath.log(mpmath.npdf(t)), t) for t in x]
    _assert_close(B.log_npdf(_on(xp, x)), ref)


# pairs (a, b), a < b: the bulk, both far tails, intervals straddling 0, narrow intervals
# far out (around +-30, where Phi(b) - Phi(a) is 1e-198 and neither Phi(a) nor 1 - Phi(a)
# can be formed), and infinite ends
LOG_DIFF_PAIRS = [
    (-1.0, 1.0), (-0.5, 0.1), (-0.1, 0.5), (0.0, 1e-3), (-2.0, -1.9), (1.9, 2.0), (5.0, 6.0), (-6.0, -5.0),
    (30.0, 30.001), (30.0, 30.1), (29.99, 30.01), (30.0, 31.0), (-30.001, -30.0), (-30.1, -30.0),
    (-30.01, -29.99), (-31.0, -30.0), (-30.0, 30.0), (-38.0, -37.9), (37.9, 38.0),
    (-math.inf, -30.0), (-math.inf, 3.0), (30.0, math.inf), (-3.0, math.inf), (-math.inf, math.inf),
]


def _ref_log_diff_ndtr(a, b):
    with mpmath.workdps(400):
        a, b = mpmath.mpf(a), mpmath.mpf(b)
        return float(mpmath.log(mpmath.ncdf(b) - mpmath.ncdf(a)))


def test_log_diff_ndtr_matches_mpmath_including_far_tails(xp):
    a, b = zip(*LOG_DIFF_PAIRS)
    ref = [_ref_log_diff_ndtr(x, y) for x, y in LOG_DIFF_PAIRS]
    assert min(ref) < -450.0  # the far-tail cases are really there
    _assert_close(B.log_diff_ndtr(_on(xp, a), _on(xp, b)), ref)


def test_log_diff_ndtr_of_an_empty_interval_is_minus_inf(xp):
    x = _on(xp, [-30.0, 0.0, 30.0])
    out = to_numpy(B.log_diff_ndtr(x, x))
    assert np.all(out == -np.inf)


def test_log_diff_ndtr_broadcasts(xp):
    a = _on(xp, [[-1.0], [2.0]])
    b = _on(xp, [3.0, 4.0, 5.0])
    ref = [[_ref_log_diff_ndtr(x, y) for y in (3.0, 4.0, 5.0)] for x in (-1.0, 2.0)]
    _assert_close(B.log_diff_ndtr(a, b), ref)


LOG1MEXP_X = [-1e-300, -1e-20, -1e-10, -1e-3, -0.5, -math.log(2.0) + 1e-9, -math.log(2.0) - 1e-9, -1.0, -10.0,
              -50.0, -700.0]


def test_log1mexp_matches_mpmath(xp):
    ref = [_mp(lambda x: mpmath.log(1 - mpmath.exp(x)), x) for x in LOG1MEXP_X]
    _assert_close(B.log1mexp(_on(xp, LOG1MEXP_X)), ref)


def test_log1mexp_limits(xp):
    out = to_numpy(B.log1mexp(_on(xp, [0.0, -math.inf])))
    assert out[0] == -np.inf
    assert out[1] == 0.0


def _logsumexp_cases():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 5)) * 30.0
    a[1] += 1000.0  # would overflow a naive exp
    a[2, :2] = -np.inf
    a[3] = -np.inf  # an all -inf row
    return a


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_logsumexp_matches_scipy(xp, axis):
    a = _logsumexp_cases()
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = scipy.special.logsumexp(a, axis=axis)
    _assert_close(B.logsumexp(_on(xp, a), axis=axis), ref)


def test_logsumexp_all_minus_inf_row_is_minus_inf(xp):
    out = to_numpy(B.logsumexp(_on(xp, _logsumexp_cases()), axis=1))
    assert out[3] == -np.inf and np.all(np.isfinite(out[:3]))


@pytest.mark.parametrize("axis", [0, 1])
def test_softmax_matches_scipy(xp, axis):
    a = _logsumexp_cases()[:3]  # rows with at least one finite entry
    ref = scipy.special.softmax(a, axis=axis)
    out = to_numpy(B.softmax(_on(xp, a), axis=axis))
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=1e-300)
    np.testing.assert_allclose(out.sum(axis=axis), 1.0, rtol=1e-14)


@pytest.mark.parametrize("fn", ["log_ndtr", "ndtr", "log1mexp"])
def test_special_functions_keep_float32(xp, fn):
    x = xp.asarray(np.linspace(-3.0, -0.1, 5), dtype=xp.float32)
    assert getattr(B, fn)(x).dtype == xp.float32


def test_log_diff_ndtr_keeps_float32(xp):
    a = xp.asarray(np.linspace(-3.0, 1.0, 5), dtype=xp.float32)
    assert B.log_diff_ndtr(a, a + 1.0).dtype == xp.float32
    assert B.logsumexp(a[None], axis=1).dtype == xp.float32
    assert B.softmax(a[None], axis=1).dtype == xp.float32


# ------------------------------------------------------------------------------------ RNG

N_DRAWS = 200_000


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_rng_normal_shape_dtype_namespace_moments(xp, dtype_name):
    dtype = getattr(xp, dtype_name)
    z = RNG(11, xp).normal((N_DRAWS // 100, 100), dtype=dtype)
    assert tuple(z.shape) == (N_DRAWS // 100, 100)
    assert z.dtype == dtype
    assert namespace(z) is xp
    z = to_numpy(z).astype(float).ravel()
    n = z.size
    assert abs(z.mean()) < 5.0 / math.sqrt(n)
    assert abs(z.var() - 1.0) < 5.0 * math.sqrt(2.0 / n)
    assert abs(np.mean(z ** 3)) < 5.0 * math.sqrt(15.0 / n)  # symmetric


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_rng_uniform_shape_dtype_namespace_moments(xp, dtype_name):
    dtype = getattr(xp, dtype_name)
    u = RNG(12, xp).uniform((N_DRAWS,), dtype=dtype)
    assert tuple(u.shape) == (N_DRAWS,)
    assert u.dtype == dtype
    assert namespace(u) is xp
    u = to_numpy(u).astype(float)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert u.min() < 50.0 / N_DRAWS and u.max() > 1.0 - 50.0 / N_DRAWS  # fills [0, 1) (fails w.p. e^-50)
    assert abs(u.mean() - 0.5) < 5.0 * math.sqrt(1.0 / 12.0 / N_DRAWS)
    assert abs(u.var() - 1.0 / 12.0) < 5.0 * math.sqrt(1.0 / 180.0 / N_DRAWS)


def test_rng_default_dtype_is_float64(xp):
    rng = RNG(0, xp)
    assert rng.normal((3,)).dtype == xp.float64
    assert rng.uniform((3,)).dtype == xp.float64


def test_rng_is_reproducible_by_seed(xp):
    def draws(seed):
        rng = RNG(seed, xp)
        return to_numpy(rng.normal((50,))), to_numpy(rng.uniform((50,)))

    a, b, c = draws(7), draws(7), draws(8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.any(a[0] == c[0])
    assert not np.any(a[1] == c[1])
    assert not np.any(a[0] == draws(None)[0])


def test_rng_successive_draws_differ(xp):
    rng = RNG(5, xp)
    first, second = to_numpy(rng.normal((100,))), to_numpy(rng.normal((100,)))
    assert not np.any(first == second)
    # and the two streams are uncorrelated
    assert abs(np.corrcoef(first, second)[0, 1]) < 5.0 / math.sqrt(100)


def test_rng_default_namespace_is_numpy():
    z = RNG(0).normal((4,))
    assert isinstance(z, np.ndarray)
    assert aac.is_numpy_array(z)
