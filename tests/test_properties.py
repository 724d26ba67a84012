"""Property-based tests (hypothesis) of every exported denoiser and of the backend's special functions.

For random and extreme valid inputs (|omega| / sqrt(V) <= 30, 1e-8 <= V <= 1e4, |B| <= 1e3,
1e-8 <= A <= 1e6, parameters over their whole valid range):
    priors / penalties : What and Chat finite, Chat >= 0, What non-decreasing in B (d What / d B = Chat),
                         odd in B for symmetric priors, inside the support's hull for atomic priors;
    channels / losses  : g and dg finite, Var[z | y] = V + V^2 dg >= 0, dg a symmetric (L k) x (L k)
                         matrix, the symmetries of the channel's law (y, omega) -> (-y, -omega) or
                         omega -> -omega, log Z_out <= 0 for discrete labels, E[z | y] in the label's region;
and for invalid inputs (NaN, infinite or negative parameters, labels outside the support) a
ValueError that names the parameter or the labels.

Profiles: `ci` (the default: derandomised, so a run is reproducible, and sized to keep this file
well under two minutes on 2 cores) and `dev` (HYPOTHESIS_PROFILE=dev: 10x the examples, random).
"""
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import denoisers as dn
from amp import specs
from amp.backend import log1mexp, log_diff_ndtr, log_ndtr, logsumexp, softmax

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=600, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

EPS = np.finfo(float).eps


def log_uniform(lo, hi):
    """Floats spread evenly in log scale over [lo, hi], endpoints included."""
    return st.floats(math.log(lo), math.log(hi)).map(math.exp).map(lambda x: min(max(x, lo), hi))


def signs():
    return st.sampled_from([-1.0, 1.0])


finite = st.floats(-10.0, 10.0)
noise = st.one_of(st.just(0.0), log_uniform(1e-8, 1e4))
positive_noise = log_uniform(1e-8, 1e4)
strength = st.one_of(st.just(0.0), log_uniform(1e-6, 1e3))
rho = log_uniform(1e-4, 1.0)


@st.composite
def gauss_mixtures(draw):
    J = draw(st.integers(1, 4))
    raw = draw(st.lists(log_uniform(1e-3, 1.0), min_size=J, max_size=J))
    weights = np.array(raw) / np.sum(raw)
    means = draw(st.lists(finite, min_size=J, max_size=J))
    variances = draw(st.lists(st.one_of(st.just(0.0), log_uniform(1e-4, 1e2)), min_size=J, max_size=J))
    return dn.GaussMixture(weights, means, variances)


#: class name -> strategy of valid instances (every exported InputDenoiser)
PRIORS = {
    "Gaussian": st.builds(dn.Gaussian, mean=finite, var=log_uniform(1e-4, 1e4)),
    "Rademacher": st.just(dn.Rademacher()),
    "BernoulliGauss": st.builds(dn.BernoulliGauss, rho=rho, mean=finite, var=log_uniform(1e-4, 1e4)),
    "GaussMixture": gauss_mixtures(),
    "MultiGaussMixture": gauss_mixtures().map(lambda p: dn.MultiGaussMixture(*p.components())),
    "Product": st.one_of(st.builds(dn.BernoulliGauss, rho=rho, mean=finite, var=log_uniform(1e-4, 1e4)),
                         gauss_mixtures()).map(lambda p: dn.Product([p])),
    "SparseRademacher": st.builds(dn.SparseRademacher, rho=rho),
    "L2": st.builds(dn.L2, lam=strength),
    "L1": st.builds(dn.L1, lam=strength),
    "ElasticNet": st.builds(dn.ElasticNet, l1=strength, l2=strength),
}
#: priors whose law is symmetric under w -> -w (so What is odd and Chat even in B)
SYMMETRIC_PRIORS = {
    "Gaussian": st.builds(dn.Gaussian, mean=st.just(0.0), var=log_uniform(1e-4, 1e4)),
    "Rademacher": PRIORS["Rademacher"],
    "BernoulliGauss": st.builds(dn.BernoulliGauss, rho=rho, mean=st.just(0.0), var=log_uniform(1e-4, 1e4)),
    "SparseRademacher": PRIORS["SparseRademacher"],
    "L2": PRIORS["L2"], "L1": PRIORS["L1"], "ElasticNet": PRIORS["ElasticNet"],
}

#: class name -> strategy of valid instances (every exported OutputDenoiser)
CHANNELS = {
    "Linear": st.builds(dn.Linear, noise_var=noise),
    "Sign": st.builds(dn.Sign, noise_var=noise),
    "ReLU": st.builds(dn.ReLU, noise_var=noise),
    "Abs": st.builds(dn.Abs, noise_var=noise),
    "Door": st.builds(dn.Door, width=log_uniform(1e-3, 1e2)),
    "Square": st.just(dn.Square()),
    "Logistic": st.just(dn.Logistic()),
    "Hinge": st.just(dn.Hinge()),
}
#: the noiseless channels (where the label's region bounds E[z | y], and any y < 0 is outside the support)
NOISELESS = {"Sign": st.just(dn.Sign()), "ReLU": st.just(dn.ReLU()), "Abs": st.just(dn.Abs()), "Door": CHANNELS["Door"]}
#: P_out(y | z) = P_out(-y | -z): g(-y, -omega) = -g(y, omega), dg(-y, -omega) = dg(y, omega)
ODD_CHANNELS = ("Linear", "Sign", "Square", "Logistic", "Hinge")
#: P_out(y | z) = P_out(y | -z): g(y, -omega) = -g(y, omega), dg(y, -omega) = dg(y, omega)
EVEN_CHANNELS = ("Abs", "Door")
#: abstract helpers among the exports
ABSTRACT = {"InputDenoiser", "OutputDenoiser", "ScalarChannel", "ScalarLoss"}


#: output denoisers on k > 1 or L > 1 pre-activations (and the functions that build them): the scalar
#: properties here do not apply; test_generic_channel.py, test_committee.py, test_product_channel.py
#: and test_attention.py check them
MULTI_INDEX = {"Quadrature", "Committee", "TwoLayerAttention", "TiedAttention", "ProductChannel",
               "z1_times_z2", "sign_z1_times_z2", "abs_difference"}


def test_every_exported_denoiser_has_a_strategy():
    exported = {name for name in dn.__all__ if name not in ABSTRACT | MULTI_INDEX}
    assert exported == set(PRIORS) | set(CHANNELS), "add a strategy for each new denoiser to this file"


# ------------------------------------------------------------------------------ inputs


fields = st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=12)
precisions = log_uniform(1e-8, 1e6)


def _f_in(prior, B, A):
    B = np.asarray(B, dtype=float)[:, None]
    What, Chat = prior.f_in(B, np.array([[A]]))
    assert What.shape == (B.shape[0], 1) and Chat.shape == (B.shape[0], 1, 1)
    return What[:, 0], Chat[:, 0, 0]


@pytest.mark.parametrize("name", list(PRIORS))
@given(data=st.data(), B=fields, A=precisions)
def test_f_in_is_finite_with_nonnegative_variance(name, data, B, A):
    prior = data.draw(PRIORS[name], label="prior")
    What, Chat = _f_in(prior, B, A)
    assert np.all(np.isfinite(What)) and np.all(np.isfinite(Chat))
    assert np.all(Chat >= 0.0)
    if hasattr(prior, "log_z_in") and type(prior).log_z_in is not dn.InputDenoiser.log_z_in:
        assert np.all(np.isfinite(prior.log_z_in(np.asarray(B)[:, None], np.array([[A]]))))


@pytest.mark.parametrize("name", list(PRIORS))
@given(data=st.data(), B=fields, A=precisions)
def test_f_in_is_non_decreasing_in_the_field(name, data, B, A):
    """d What / d B = Chat >= 0 for a scalar prior; rounding may break ties by a few ulps of |What|."""
    prior = data.draw(PRIORS[name], label="prior")
    B = np.sort(B)
    What, _ = _f_in(prior, B, A)
    slack = 8 * EPS * np.maximum(np.abs(What[1:]), np.abs(What[:-1]))
    assert np.all(np.diff(What) >= -slack)


@pytest.mark.parametrize("name", list(SYMMETRIC_PRIORS))
@given(data=st.data(), B=fields, A=precisions)
def test_f_in_of_a_symmetric_prior_is_odd_in_the_field(name, data, B, A):
    prior = data.draw(SYMMETRIC_PRIORS[name], label="prior")
    B = np.asarray(B)
    What, Chat = _f_in(prior, B, A)
    What_neg, Chat_neg = _f_in(prior, -B, A)
    np.testing.assert_allclose(What_neg, -What, rtol=1e-12, atol=0.0)
    np.testing.assert_allclose(Chat_neg, Chat, rtol=1e-12, atol=0.0)


@given(prior=gauss_mixtures().filter(lambda p: np.all(p.vars == 0.0)), B=fields, A=precisions)
def test_f_in_of_an_atomic_prior_stays_in_the_hull_of_its_atoms(prior, B, A):
    """For P_in = sum_j pi_j delta_{mu_j}: min mu <= What <= max mu and Chat <= (max mu - min mu)^2 / 4."""
    What, Chat = _f_in(prior, B, A)
    lo, hi = prior.means.min(), prior.means.max()
    scale = 8 * EPS * max(abs(lo), abs(hi), 1.0)
    assert np.all(What >= lo - scale) and np.all(What <= hi + scale)
    assert np.all(Chat <= (hi - lo) ** 2 / 4 * (1 + 1e-12) + scale)


# ------------------------------------------------------------------------------ outputs


@st.composite
def channel_inputs(draw, name, channels=CHANNELS):
    """(channel, y (n,), omega (n,), V) with a channel from `channels` and labels in its support."""
    channel = draw(channels[name], label="channel")
    V = draw(log_uniform(1e-8, 1e4), label="V")
    n = draw(st.integers(1, 8))
    u = np.array(draw(st.lists(st.floats(-30.0, 30.0), min_size=n, max_size=n)), dtype=float)
    t = np.array(draw(st.lists(st.floats(-30.0, 30.0), min_size=n, max_size=n)), dtype=float)
    omega = u * math.sqrt(V)
    noise_var = getattr(channel, "noise_var", 0.0)
    continuous = omega + t * math.sqrt(V + noise_var)  # a label a few sigmas around omega
    if name in ("Sign", "Door", "Logistic", "Hinge"):
        y = np.array(draw(st.lists(signs(), min_size=n, max_size=n)))
    elif name in ("ReLU", "Abs") and noise_var == 0.0:
        atom = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        y = np.where(atom & (name == "ReLU"), 0.0, np.abs(continuous))
    else:
        y = continuous
    return channel, y, omega, V


def _g_out(channel, y, omega, V):
    g, dg = channel.g_out(y, omega[:, None, None], np.array([[V]]))
    assert g.shape == (y.shape[0], 1, 1) and dg.shape == (y.shape[0], 1, 1, 1, 1)
    return g[:, 0, 0], dg


@pytest.mark.parametrize("name", list(CHANNELS))
@given(data=st.data())
def test_g_out_is_finite_with_nonnegative_posterior_variance(name, data):
    """Var[z | y] = V + V^2 dg >= 0, up to the rounding of V + V^2 dg (a few ulps of V)."""
    channel, y, omega, V = data.draw(channel_inputs(name))
    g, dg = _g_out(channel, y, omega, V)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(dg))
    assert np.all(V + V * V * dg[:, 0, 0, 0, 0] >= -8 * EPS * V)


@pytest.mark.parametrize("name", list(CHANNELS))
@given(data=st.data())
def test_dg_out_is_a_symmetric_matrix_per_sample(name, data):
    channel, y, omega, V = data.draw(channel_inputs(name))
    _, dg = _g_out(channel, y, omega, V)
    n, L, k = dg.shape[:3]
    blocks = dg.reshape(n, L * k, L * k)
    np.testing.assert_array_equal(blocks, np.swapaxes(blocks, 1, 2))


@pytest.mark.parametrize("name", ODD_CHANNELS + EVEN_CHANNELS)
@given(data=st.data())
def test_g_out_has_the_symmetry_of_the_channel(name, data):
    channel, y, omega, V = data.draw(channel_inputs(name))
    g, dg = _g_out(channel, y, omega, V)
    g_mirror, dg_mirror = _g_out(channel, -y if name in ODD_CHANNELS else y, -omega, V)
    np.testing.assert_allclose(g_mirror, -g, rtol=1e-12, atol=0.0)
    np.testing.assert_allclose(dg_mirror, dg, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("name", ["Linear", "Sign", "ReLU", "Abs", "Door"])
@given(data=st.data())
def test_log_z_out_is_finite_and_a_log_probability_for_discrete_labels(name, data):
    channel, y, omega, V = data.draw(channel_inputs(name))
    log_z = channel.log_z_out(y, omega[:, None, None], np.array([[V]]))
    assert log_z.shape == y.shape and np.all(np.isfinite(log_z))
    if channel.labels is not None:
        assert np.all(log_z <= 0.0)


@pytest.mark.parametrize("name", ["Sign", "ReLU", "Door"])
@given(data=st.data())
def test_posterior_mean_of_z_lies_in_the_region_of_the_label(name, data):
    """Noiseless: E[z | y] = omega + V g has the sign of y (sign), is <= 0 at y = 0 (ReLU),
    and lies in [-width, width] for y = -1 (door); up to the rounding of omega + V g."""
    channel, y, omega, V = data.draw(channel_inputs(name, NOISELESS))
    g, _ = _g_out(channel, y, omega, V)
    mean = omega + V * g
    slack = 8 * EPS * (np.abs(omega) + V * np.abs(g))
    if name == "Sign":
        assert np.all(y * mean >= -slack)
    elif name == "ReLU":
        assert np.all(mean[y == 0.0] <= slack[y == 0.0])
    else:
        inside = y < 0.0
        assert np.all(np.abs(mean[inside]) <= channel.width + slack[inside])


# ------------------------------------------------------------------------------ invalid inputs

bad_number = st.sampled_from([math.nan, math.inf, -math.inf])
negative = log_uniform(1e-12, 1e6).map(lambda x: -x)

#: (constructor, keyword arguments that are valid, the parameter to spoil, strategy of bad values)
BAD_PARAMETERS = [
    (dn.Gaussian, {}, "var", st.one_of(bad_number, negative, st.just(0.0))),
    (dn.Gaussian, {}, "mean", bad_number),
    (dn.BernoulliGauss, {}, "rho", st.one_of(bad_number, negative, st.just(0.0),
                                             st.floats(1.0, 1e6, exclude_min=True))),
    (dn.BernoulliGauss, {"rho": 0.5}, "var", st.one_of(bad_number, negative)),
    (dn.GaussMixture, {"weights": [0.5, 0.5], "means": [-1.0, 1.0]}, "vars",
     st.one_of(bad_number, negative).map(lambda v: [1.0, v])),
    (dn.GaussMixture, {"vars": [1.0, 1.0], "means": [-1.0, 1.0]}, "weights",
     st.one_of(bad_number, negative).map(lambda v: [1.0 - v, v])),
    (dn.GaussMixture, {"weights": [0.5, 0.5], "vars": [1.0, 1.0]}, "means", bad_number.map(lambda v: [0.0, v])),
    (dn.SparseRademacher, {}, "rho", st.one_of(bad_number, negative, st.just(0.0))),
    (dn.Linear, {}, "noise_var", st.one_of(bad_number, negative)),
    (dn.Sign, {}, "noise_var", st.one_of(bad_number, negative)),
    (dn.ReLU, {}, "noise_var", st.one_of(bad_number, negative)),
    (dn.Abs, {}, "noise_var", st.one_of(bad_number, negative)),
    (dn.Door, {}, "width", st.one_of(bad_number, negative, st.just(0.0))),
    (dn.L2, {}, "lam", st.one_of(bad_number, negative)),
    (dn.L1, {}, "lam", st.one_of(bad_number, negative)),
    (dn.ElasticNet, {"l2": 1.0}, "l1", st.one_of(bad_number, negative)),
    (dn.ElasticNet, {"l1": 1.0}, "l2", st.one_of(bad_number, negative)),
]


@pytest.mark.parametrize("make, valid, param, bad", BAD_PARAMETERS,
                         ids=[f"{m.__name__}-{p}" for m, _, p, _ in BAD_PARAMETERS])
@given(data=st.data())
def test_invalid_parameters_raise_value_error_naming_the_parameter(make, valid, param, bad, data):
    value = data.draw(bad, label=param)
    with pytest.raises(ValueError, match=param):
        make(**{**valid, param: value})


@pytest.mark.parametrize("kind, spec", [("prior", "bernoulli-gauss:rho={}"), ("prior", "gaussian:var={}"),
                                        ("channel", "linear:noise_var={}"), ("channel", "door:width={}")])
@given(value=st.one_of(bad_number, negative))
def test_invalid_spec_parameters_raise_value_error_naming_the_parameter(kind, spec, value):
    param = spec.split(":")[1].split("=")[0]
    with pytest.raises(ValueError, match=param):
        specs.parse(spec.format(value), kind)


#: channel (noiseless where NOISELESS has it) -> strategy of labels outside its support
BAD_LABELS = {
    "Sign": st.floats(allow_nan=True).filter(lambda v: v not in (-1.0, 1.0)),
    "Door": st.floats(allow_nan=True).filter(lambda v: v not in (-1.0, 1.0)),
    "Logistic": st.floats(allow_nan=True).filter(lambda v: v not in (-1.0, 1.0)),
    "Hinge": st.floats(allow_nan=True).filter(lambda v: v not in (-1.0, 1.0)),
    "ReLU": st.one_of(negative, bad_number),
    "Abs": st.one_of(negative, bad_number),
    "Linear": bad_number,
    "Square": bad_number,
}


@pytest.mark.parametrize("name", list(BAD_LABELS))
@given(data=st.data())
def test_labels_outside_the_support_raise_value_error(name, data):
    channel, y, _, _ = data.draw(channel_inputs(name, {**CHANNELS, **NOISELESS}))
    channel.check_labels(y)
    y = y.copy()
    y[data.draw(st.integers(0, y.size - 1), label="index")] = data.draw(BAD_LABELS[name], label="label")
    with pytest.raises(ValueError, match=r"\by\b"):
        channel.check_labels(y)


# ------------------------------------------------------------------------------ backend


@given(a=st.floats(-40.0, 40.0), width=log_uniform(1e-12, 80.0))
def test_log_diff_ndtr_is_finite_and_bounded_by_each_tail(a, width):
    """log(Phi(b) - Phi(a)) for a < b = a + width: finite and <= min(log Phi(b), log Phi(-a))."""
    b = a + width
    if not b > a:
        return
    value = float(log_diff_ndtr(np.array(a), np.array(b)))
    bound = min(float(log_ndtr(np.array(b))), float(log_ndtr(np.array(-a))))
    assert math.isfinite(value)
    assert value <= bound + 8 * EPS * abs(bound)


@given(x=st.floats(-1e4, 0.0, exclude_max=True))
def test_log1mexp_is_finite_and_nonpositive(x):
    value = float(log1mexp(np.array(x)))
    assert math.isfinite(value) or x == -0.0
    assert value <= 0.0


@given(a=st.lists(st.floats(-1e300, 1e300), min_size=1, max_size=10))
def test_logsumexp_lies_between_the_max_and_the_max_plus_log_n(a):
    a = np.array(a)
    value = float(logsumexp(a, axis=0))
    top = a.max()
    assert top - 4 * EPS * abs(top) <= value <= top + math.log(a.size) + 4 * EPS * abs(top)
    p = softmax(a, axis=0)
    assert np.all(p >= 0.0) and abs(p.sum() - 1.0) <= 4 * EPS * a.size
