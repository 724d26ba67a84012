"""amp.teacher_student: shapes, dtypes, namespaces, reproducibility, labels and the
teacher's law, plus its argument checks."""
import math

import numpy as np
import pytest
from scipy.special import ndtr

import amp
import denoisers as dn
from amp.backend import namespace, to_numpy


def _z(inst):
    """Pre-activations X W / sqrt(d) recomputed on the host in float64, (n, L, k)."""
    X = to_numpy(inst.X).astype(float)
    W = to_numpy(inst.W).astype(float)
    X3 = X if X.ndim == 3 else X[:, None, :]
    return X3 @ W / math.sqrt(X.shape[-1])


class TokenSum(dn.OutputDenoiser):
    """A test channel over L = 3 tokens: y = sum_l z_l (k = 1)."""

    tokens = 3

    def sample(self, Z, rng):
        return namespace(Z).sum(Z[:, :, 0], axis=1)


class Isotropic2(dn.InputDenoiser):
    """A test prior on R^2: w ~ N(0, I_2)."""

    k = 2

    def sample(self, d, rng):
        return rng.normal((d, 2))

    def second_moment(self):
        return np.eye(2)

    def mean(self):
        return np.zeros(2)


class Committee2(dn.OutputDenoiser):
    """A test channel with k = 2: y = z_1 z_2."""

    k = 2

    def sample(self, Z, rng):
        return Z[:, 0, 0] * Z[:, 0, 1]


class IntegerSign(dn.Sign):
    """Sign labels drawn as integers: teacher_student must still return them in `dtype`."""

    def sample(self, Z, rng):
        xp = namespace(Z)
        return xp.astype(super().sample(Z, rng), xp.int64)


class BadShapePrior(dn.Gaussian):
    def sample(self, d, rng):
        return rng.normal((d + 1, 1))


# ------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("d, alpha", [(200, 1.7), (301, 0.9), (50, 3.14159)])
def test_shapes_for_one_token(d, alpha):
    inst = amp.teacher_student(d=d, alpha=alpha, prior=dn.Gaussian(), channel=dn.Linear(0.5), seed=0)
    n = round(alpha * d)
    assert tuple(inst.X.shape) == (n, d)
    assert tuple(inst.y.shape) == (n,)
    assert tuple(inst.W.shape) == (d, 1)
    assert (inst.n, inst.d) == (n, d)
    assert inst.alpha == alpha


def test_shapes_for_several_tokens():
    d, alpha = 120, 2.5
    inst = amp.teacher_student(d=d, alpha=alpha, prior=dn.Gaussian(), channel=TokenSum(), seed=1, tokens=3)
    n = round(alpha * d)
    assert tuple(inst.X.shape) == (n, 3, d)
    assert tuple(inst.W.shape) == (d, 1)
    assert (inst.n, inst.d) == (n, d)
    # every token enters the pre-activations: y = sum_l x_l . w / sqrt(d)
    np.testing.assert_allclose(to_numpy(inst.y), _z(inst)[:, :, 0].sum(axis=1), rtol=1e-12, atol=1e-12)


def test_shapes_for_k_2():
    d = 80
    inst = amp.teacher_student(d=d, alpha=2.0, prior=Isotropic2(), channel=Committee2(), seed=2)
    assert tuple(inst.W.shape) == (d, 2)
    Z = _z(inst)
    np.testing.assert_allclose(to_numpy(inst.y), Z[:, 0, 0] * Z[:, 0, 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tokens", [2, 5])
def test_scalar_channels_reject_several_tokens(tokens):
    with pytest.raises(ValueError, match="token"):
        amp.teacher_student(d=20, alpha=1.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=0, tokens=tokens)


def test_token_channel_rejects_one_token():
    with pytest.raises(ValueError, match="token"):
        amp.teacher_student(d=20, alpha=1.0, prior=dn.Gaussian(), channel=TokenSum(), seed=0, tokens=1)


def test_prior_sample_of_the_wrong_shape_is_reported():
    with pytest.raises(ValueError, match="prior.sample"):
        amp.teacher_student(d=20, alpha=1.0, prior=BadShapePrior(), channel=dn.Sign(), seed=0)


# ------------------------------------------------------------------ dtypes and namespaces


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
@pytest.mark.parametrize("spelling", ["numpy", "string", "backend"])
def test_dtype_is_honoured(backend, xp, dtype_name, spelling):
    dtype = {"numpy": getattr(np, dtype_name), "string": dtype_name, "backend": getattr(xp, dtype_name)}[spelling]
    inst = amp.teacher_student(d=40, alpha=1.5, prior=dn.Rademacher(), channel=dn.Sign(), seed=0,
                               dtype=dtype, backend=backend)
    for a in (inst.X, inst.y, inst.W):
        assert a.dtype == getattr(xp, dtype_name)
        assert namespace(a) is xp


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_labels_are_cast_to_dtype(backend, xp, dtype_name):
    inst = amp.teacher_student(d=40, alpha=1.5, prior=dn.Gaussian(), channel=IntegerSign(), seed=0,
                               dtype=dtype_name, backend=backend)
    assert inst.y.dtype == getattr(xp, dtype_name)
    np.testing.assert_array_equal(to_numpy(inst.y), np.sign(_z(inst)[:, 0, 0]))


def test_default_is_numpy_float64():
    inst = amp.teacher_student(d=30, alpha=1.0, prior=dn.Gaussian(), channel=dn.Linear(0.1), seed=0)
    for a in (inst.X, inst.y, inst.W):
        assert isinstance(a, np.ndarray) and a.dtype == np.float64


@pytest.mark.parametrize("dtype", [np.int32, "int64", np.complex128, "float16", "foo", object, bool])
def test_non_float_dtype_is_a_value_error(dtype):
    with pytest.raises(ValueError, match="dtype"):
        amp.teacher_student(d=10, alpha=1.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=0, dtype=dtype)


def test_torch_integer_dtype_is_a_value_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="dtype"):
        amp.teacher_student(d=10, alpha=1.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=0,
                            dtype=torch.int32, backend="torch")


# ----------------------------------------------------------------------- reproducibility


def test_same_seed_same_instance_other_seed_other_instance(backend):
    def make(seed):
        return amp.teacher_student(d=60, alpha=2.0, prior=dn.BernoulliGauss(0.4), channel=dn.Linear(0.2),
                                   seed=seed, backend=backend)

    a, b, c = make(3), make(3), make(4)
    for name in ("X", "y", "W"):
        np.testing.assert_array_equal(to_numpy(getattr(a, name)), to_numpy(getattr(b, name)))
        assert not np.array_equal(to_numpy(getattr(a, name)), to_numpy(getattr(c, name)))
    assert a.seed == 3


# -------------------------------------------------------------------------------- labels


def test_noiseless_sign_labels(backend):
    inst = amp.teacher_student(d=200, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=5, backend=backend)
    y = to_numpy(inst.y)
    assert set(np.unique(y)) == {-1.0, 1.0}
    np.testing.assert_array_equal(y, np.sign(_z(inst)[:, 0, 0]))


def test_noisy_sign_labels_flip_at_the_probit_rate():
    noise = 0.25
    inst = amp.teacher_student(d=100, alpha=100.0, prior=dn.Gaussian(), channel=dn.Sign(noise), seed=6)
    y, z = inst.y, _z(inst)[:, 0, 0]
    assert set(np.unique(y)) == {-1.0, 1.0}
    # P(flip | z) = Phi(-|z| / sqrt(noise)); compare the mean flip rate with its expectation
    p = ndtr(-np.abs(z) / math.sqrt(noise))
    flips = (y != np.sign(z)).astype(float)
    assert abs(flips.mean() - p.mean()) < 5.0 * math.sqrt(np.sum(p * (1 - p))) / z.size


@pytest.mark.parametrize("channel, f", [
    (dn.ReLU(), lambda z: np.maximum(z, 0.0)),
    (dn.Abs(), np.abs),
    (dn.Door(0.7), lambda z: np.where(np.abs(z) > 0.7, 1.0, -1.0)),
    (dn.Linear(0.0), lambda z: z),
], ids=["relu", "abs", "door", "linear"])
def test_noiseless_labels_are_the_channel_function(backend, channel, f):
    inst = amp.teacher_student(d=150, alpha=2.0, prior=dn.Gaussian(), channel=channel, seed=7, backend=backend)
    np.testing.assert_allclose(to_numpy(inst.y), f(_z(inst)[:, 0, 0]), rtol=1e-12, atol=1e-12)
    channel.check_labels(inst.y)  # the channel accepts its own labels


@pytest.mark.parametrize("channel, f", [(dn.Linear(0.3), lambda z: z), (dn.ReLU(0.3), lambda z: np.maximum(z, 0.0)),
                                        (dn.Abs(0.3), np.abs)], ids=["linear", "relu", "abs"])
def test_label_noise_has_the_channel_variance(channel, f):
    inst = amp.teacher_student(d=100, alpha=80.0, prior=dn.Gaussian(), channel=channel, seed=8)
    z = _z(inst)[:, 0, 0]
    resid = inst.y - f(z)
    n = resid.size
    assert abs(resid.mean()) < 5.0 * math.sqrt(channel.noise_var / n)
    assert abs(resid.var() - channel.noise_var) < 5.0 * channel.noise_var * math.sqrt(2.0 / n)


def test_float32_sign_labels_match_float32_preactivations(backend):
    inst = amp.teacher_student(d=100, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=9,
                               dtype="float32", backend=backend)
    z = _z(inst)[:, 0, 0]
    clear = np.abs(z) > 1e-4  # float32 rounding cannot flip these
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(to_numpy(inst.y)[clear], np.sign(z[clear]))


# ------------------------------------------------------------------------- teacher's law


@pytest.mark.parametrize("prior", [dn.Gaussian(), dn.Gaussian(0.5, 2.0), dn.Rademacher(),
                                   dn.BernoulliGauss(0.3), dn.BernoulliGauss(0.2, mean=1.0, var=0.5)],
                         ids=["gauss", "gauss-shifted", "rademacher", "bg", "bg-shifted"])
def test_teacher_moments_match_the_prior(backend, prior):
    d = 20_000
    inst = amp.teacher_student(d=d, alpha=1e-3, prior=prior, channel=dn.Linear(0.1), seed=10, backend=backend)
    w = to_numpy(inst.W)[:, 0]
    rho = prior.second_moment()[0, 0]
    se2 = np.std(w ** 2) / math.sqrt(d)
    assert abs(np.mean(w ** 2) - rho) <= 5.0 * se2 + 1e-12
    se1 = np.std(w) / math.sqrt(d)
    assert abs(np.mean(w) - prior.mean()[0]) <= 5.0 * se1 + 1e-12


def test_sparse_teacher_has_the_right_fraction_of_zeros():
    d, rho = 20_000, 0.3
    inst = amp.teacher_student(d=d, alpha=1e-3, prior=dn.BernoulliGauss(rho), channel=dn.Linear(0.1), seed=11)
    nonzero = np.mean(inst.W != 0.0)
    assert abs(nonzero - rho) < 5.0 * math.sqrt(rho * (1 - rho) / d)


def test_inputs_are_standard_gaussian(backend):
    inst = amp.teacher_student(d=400, alpha=2.0, prior=dn.Gaussian(), channel=dn.Linear(0.1), seed=12, backend=backend)
    x = to_numpy(inst.X).ravel()
    assert abs(x.mean()) < 5.0 / math.sqrt(x.size)
    assert abs(x.var() - 1.0) < 5.0 * math.sqrt(2.0 / x.size)
    # given the teacher, z = x . w / sqrt(d) ~ N(0, |w|^2 / d) over the samples
    z = _z(inst)[:, 0, 0]
    s2 = float(np.sum(to_numpy(inst.W) ** 2)) / inst.d
    assert abs(z.var() / s2 - 1.0) < 5.0 * math.sqrt(2.0 / z.size)


# -------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("alpha", [0.0, -1.0, math.nan, math.inf, "two"])
def test_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        amp.teacher_student(d=10, alpha=alpha, prior=dn.Gaussian(), channel=dn.Sign(), seed=0)


@pytest.mark.parametrize("d", [0, -3, 2.5, math.nan, None])
def test_bad_d(d):
    with pytest.raises(ValueError, match="d must"):
        amp.teacher_student(d=d, alpha=1.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=0)


@pytest.mark.parametrize("tokens", [0, 1.5])
def test_bad_tokens(tokens):
    with pytest.raises(ValueError, match="tokens"):
        amp.teacher_student(d=10, alpha=1.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=0, tokens=tokens)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        amp.teacher_student(d=10, alpha=1.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=0, backend="jax")


def test_prior_channel_k_mismatch():
    with pytest.raises(ValueError, match="prior.*channel"):
        amp.teacher_student(d=10, alpha=1.0, prior=dn.Gaussian(), channel=Committee2(), seed=0)
    with pytest.raises(ValueError, match="prior.*channel"):
        amp.teacher_student(d=10, alpha=1.0, prior=Isotropic2(), channel=dn.Sign(), seed=0)
