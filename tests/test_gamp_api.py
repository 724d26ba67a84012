"""The public boundary of amp.gamp and state_evolution.gamp: argument checks, divergence
reporting, convergence, history conventions, and the same iteration on every array namespace.

The iteration itself is checked against a plain NumPy transcription of DESIGN.md section 3
(`reference_gamp` below), run from the very initial state amp.gamp draws.
"""
import inspect
import math
import warnings

import numpy as np
import pytest

import amp
import denoisers as dn
import state_evolution as se
from amp.backend import backend_namespace, namespace, to_numpy

#: relative agreement asked of two runs of the same iteration in float64
RTOL = 1e-10

#: amp.gamp may grow a NumPy-only fused path; the backend comparisons pin the generic one
NO_FUSED = {"fused": False} if "fused" in inspect.signature(amp.gamp).parameters else {}


def _arrays(backend, *arrays):
    xp = backend_namespace(backend)
    return tuple(xp.asarray(a) for a in arrays)


def _small(d=60, alpha=2.0, prior=None, channel=None, seed=0):
    prior = dn.Gaussian() if prior is None else prior
    channel = dn.Linear(0.1) if channel is None else channel
    return amp.teacher_student(d=d, alpha=alpha, prior=prior, channel=channel, seed=seed)


def _history_array(history, key):
    return np.array([np.asarray(v, dtype=float).ravel() for v in history[key]])


def reference_gamp(X, y, prior, channel, truth, W0, C0, n_iter, damping=1.0):
    """DESIGN.md section 3 for L = 1 in plain NumPy, without row blocks; the history of
    iterations 1..n_iter (the same keys as amp.gamp)."""
    n, d = X.shape
    W, C = W0, C0
    g_prev = np.zeros((n, 1, W.shape[1]))
    history = {"mse": [], "m": [], "q": [], "residual": []}
    for _ in range(n_iter):
        Omega = (X @ W / math.sqrt(d))[:, None, :] - g_prev @ C
        g, dg = channel.g_out(y, Omega, C)
        A = -np.sum(dg[:, 0, :, 0, :], axis=0) / d
        B = X.T @ g[:, 0, :] / math.sqrt(d) + W @ A
        What, Chat = prior.f_in(B, A)
        W_new = (1.0 - damping) * W + damping * What
        C_new = (1.0 - damping) * C + damping * np.mean(Chat, axis=0)
        history["residual"].append(np.linalg.norm(W_new - W) / math.sqrt(W.size))
        W, C, g_prev = W_new, C_new, g
        history["m"].append(float(W[:, 0] @ truth[:, 0]) / d)
        history["q"].append(float(W[:, 0] @ W[:, 0]) / d)
        history["mse"].append(float(np.mean((W - truth) ** 2)))
    return W, C, history


# ============================================================================ argument checks


def _gamp_call(inst, **change):
    """amp.gamp on `inst` with some arguments replaced."""
    kwargs = dict(X=inst.X, y=inst.y, prior=inst.prior, channel=inst.channel, truth=inst.W, max_iter=2)
    kwargs.update(change)
    return amp.gamp(**kwargs)


def _with(a, index, value):
    a = np.array(a, dtype=float)
    a[index] = value
    return a


GAMP_BAD_ARGUMENTS = {
    "X 1-d": (lambda i: dict(X=i.X[0]), "X"),
    "X 4-d": (lambda i: dict(X=i.X[:, None, None, :]), "X"),
    "X int": (lambda i: dict(X=np.round(i.X).astype(np.int64)), "X"),
    "X NaN": (lambda i: dict(X=_with(i.X, (3, 4), np.nan)), "X"),
    "X Inf": (lambda i: dict(X=_with(i.X, (0, 0), -np.inf)), "X"),
    "y too short": (lambda i: dict(y=i.y[:-1]), "y"),
    "y too long": (lambda i: dict(y=np.concatenate([i.y, i.y[:1]])), "y"),
    "y NaN": (lambda i: dict(y=_with(i.y, 5, np.nan)), "y"),
    "y Inf": (lambda i: dict(y=_with(i.y, 5, np.inf)), "y"),
    "truth rows": (lambda i: dict(truth=np.zeros((i.d + 1, 1))), "truth"),
    "truth 1-d": (lambda i: dict(truth=i.W[:, 0]), "truth"),
    "truth k": (lambda i: dict(truth=np.zeros((i.d, 2))), "truth"),
    "truth NaN": (lambda i: dict(truth=_with(i.W, (2, 0), np.nan)), "truth"),
    "truth Inf": (lambda i: dict(truth=_with(i.W, (2, 0), np.inf)), "truth"),
    "truth int": (lambda i: dict(truth=np.ones((i.d, 1), dtype=np.int64)), "truth"),
    "damping 0": (lambda i: dict(damping=0.0), "damping"),
    "damping < 0": (lambda i: dict(damping=-0.5), "damping"),
    "damping > 1": (lambda i: dict(damping=1.5), "damping"),
    "damping NaN": (lambda i: dict(damping=math.nan), "damping"),
    "init_overlap < 0": (lambda i: dict(init_overlap=-0.1), "init_overlap"),
    "init_overlap > 1": (lambda i: dict(init_overlap=1.1), "init_overlap"),
    "init_overlap NaN": (lambda i: dict(init_overlap=math.nan), "init_overlap"),
    "tol < 0": (lambda i: dict(tol=-1e-3), "tol"),
    "tol NaN": (lambda i: dict(tol=math.nan), "tol"),
    "max_iter < 0": (lambda i: dict(max_iter=-1), "max_iter"),
    "max_iter 2.5": (lambda i: dict(max_iter=2.5), "max_iter"),
    "max_iter NaN": (lambda i: dict(max_iter=math.nan), "max_iter"),
    "max_iter Inf": (lambda i: dict(max_iter=math.inf), "max_iter"),
    "max_iter None": (lambda i: dict(max_iter=None), "max_iter"),
    "max_iter str": (lambda i: dict(max_iter="10"), "max_iter"),
    "max_iter bool": (lambda i: dict(max_iter=True), "max_iter"),
    "block_rows 0": (lambda i: dict(block_rows=0), "block_rows"),
    "tokens": (lambda i: dict(X=np.stack([i.X, i.X], axis=1)), "token"),
}


@pytest.mark.parametrize("case", list(GAMP_BAD_ARGUMENTS), ids=list(GAMP_BAD_ARGUMENTS))
def test_gamp_rejects_bad_arguments(case):
    change, match = GAMP_BAD_ARGUMENTS[case]
    inst = _small()
    with pytest.raises(ValueError, match=match):
        _gamp_call(inst, **change(inst))


@pytest.mark.parametrize("channel, labels", [
    (dn.Sign(), [1.0, -1.0, 0.0]),
    (dn.Sign(), [1.0, -1.0, 0.5]),
    (dn.Sign(0.1), [1.0, -1.0, 2.0]),
    (dn.Door(0.7), [1.0, -1.0, 0.0]),
    (dn.ReLU(0.0), [0.0, 1.3, -0.2]),
    (dn.Abs(0.0), [0.0, 1.3, -0.2]),
    (dn.Sign(), [1.0, -1.0, math.nan]),
    (dn.ReLU(0.0), [0.0, 1.3, math.nan]),
], ids=["sign-0", "sign-half", "probit-2", "door-0", "relu-negative", "abs-negative", "sign-nan", "relu-nan"])
def test_gamp_rejects_labels_outside_the_support(channel, labels):
    inst = _small(d=30, alpha=1.0, channel=channel)
    y = np.resize(np.asarray(labels), inst.n)
    with pytest.raises(ValueError, match=r"\by\b"):
        amp.gamp(inst.X, y, inst.prior, channel, max_iter=1)


@pytest.mark.parametrize("channel", [dn.ReLU(0.1), dn.Abs(0.1), dn.Linear(0.1)], ids=["relu", "abs", "linear"])
def test_noisy_channels_accept_negative_labels(channel):
    inst = _small(d=30, alpha=1.0, channel=channel)
    y = np.resize(np.asarray([-0.5, 0.5]), inst.n)
    run = amp.gamp(inst.X, y, inst.prior, channel, max_iter=1)
    assert run.n_iter == 1


def test_gamp_rejects_prior_channel_k_mismatch():
    inst = _small()
    with pytest.raises(ValueError, match="prior.*channel"):
        amp.gamp(inst.X, inst.y, dn.Gaussian(), dn.Committee(2))
    with pytest.raises(ValueError, match="prior.*channel"):
        amp.gamp(inst.X, inst.y, dn.Gaussian(cov=np.eye(2)), dn.Linear(0.1))


def test_gamp_accepts_an_integral_float_max_iter():
    inst = _small()
    assert _gamp_call(inst, max_iter=2.0).n_iter == 2


SE_BAD_ARGUMENTS = {
    "alpha 0": (dict(alpha=0.0), "alpha"),
    "alpha < 0": (dict(alpha=-1.0), "alpha"),
    "alpha NaN": (dict(alpha=math.nan), "alpha"),
    "alpha Inf": (dict(alpha=math.inf), "alpha"),
    "tol < 0": (dict(tol=-1e-3), "tol"),
    "tol NaN": (dict(tol=math.nan), "tol"),
    "max_iter < 0": (dict(max_iter=-1), "max_iter"),
    "max_iter 1.5": (dict(max_iter=1.5), "max_iter"),
    "max_iter None": (dict(max_iter=None), "max_iter"),
    "damping 0": (dict(damping=0.0), "damping"),
    "damping > 1": (dict(damping=1.5), "damping"),
    "init_overlap < 0": (dict(init_overlap=-0.1), "init_overlap"),
    "init_overlap > 1": (dict(init_overlap=1.5), "init_overlap"),
}


@pytest.mark.parametrize("case", list(SE_BAD_ARGUMENTS), ids=list(SE_BAD_ARGUMENTS))
def test_state_evolution_rejects_bad_arguments(case):
    change, match = SE_BAD_ARGUMENTS[case]
    kwargs = dict(prior=dn.Gaussian(), channel=dn.Linear(0.1), alpha=1.0, max_iter=2)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        se.gamp(**kwargs)


def test_state_evolution_rejects_k_mismatch():
    with pytest.raises(ValueError, match="prior.*channel"):
        se.gamp(dn.Gaussian(), dn.Committee(2), alpha=1.0)
    with pytest.raises(ValueError, match="prior.*channel"):
        se.gamp(dn.Gaussian(cov=np.eye(3)), dn.Committee(2), alpha=1.0)


def test_state_evolution_accepts_an_integral_float_max_iter():
    assert se.gamp(dn.Gaussian(), dn.Linear(0.1), alpha=1.0, max_iter=2.0, tol=0.0).n_iter == 2


# ================================================================== divergence and convergence


class Sabotaged(dn.OutputDenoiser):
    """A channel that behaves like `base` until `mode` is set, then breaks GAMP:
    'precision' returns dg = +10 (so A = -10 alpha < 0 and the Gaussian prior's tilted law is
    not normalisable: f_in gives NaN); 'explode' multiplies g by 1e12 (a finite blow-up)."""

    def __init__(self, base):
        self.base = base
        self.kinks = base.kinks
        self.mode = None

    def check_labels(self, y):
        self.base.check_labels(y)

    def g_out(self, y, Omega, V):
        g, dg = self.base.g_out(y, Omega, V)
        xp = namespace(g)
        if self.mode == "precision":
            dg = xp.abs(dg) * 0.0 + 10.0
        elif self.mode == "explode":
            g = g * 1e12
        return g, dg


@pytest.mark.parametrize("mode, reason", [("precision", "NaN"), ("explode", "residual")])
def test_divergence_is_detected_and_reported(backend, mode, reason):
    inst = _small(d=200, alpha=2.0)
    X, y, W = _arrays(backend, inst.X, inst.y, inst.W)
    channel = Sabotaged(dn.Linear(0.1))
    break_after = 3
    iterates = {}

    def callback(t, W_t, C_t):
        iterates[t] = (to_numpy(W_t).copy(), to_numpy(C_t).copy())
        if t == break_after:
            channel.mode = mode

    with np.errstate(all="ignore"), pytest.warns(amp.DivergenceWarning, match=f"iteration {break_after + 1}") as rec:
        run = amp.gamp(X, y, dn.Gaussian(), channel, truth=W, max_iter=50, seed=0, callback=callback)
    assert run.diverged and not run.converged
    assert f"iteration {break_after + 1}" in run.message
    assert reason in run.message
    # the warning points at the caller's line, not into the package
    assert any(r.filename == __file__ for r in rec if issubclass(r.category, amp.DivergenceWarning))
    # the run stops at the last finite iterate, and says so in its count and history
    assert run.n_iter == break_after
    assert len(run.history["mse"]) == len(run.history["residual"]) == break_after + 1
    assert all(np.all(np.isfinite(run.history[k])) for k in ("mse", "m", "q"))
    W_out, C_out = to_numpy(run.W), to_numpy(run.C)
    assert np.all(np.isfinite(W_out)) and np.all(np.isfinite(C_out))
    np.testing.assert_array_equal(W_out, iterates[break_after][0])
    np.testing.assert_array_equal(C_out, iterates[break_after][1])


def test_divergence_without_truth_is_reported_too():
    inst = _small(d=100)
    channel = Sabotaged(dn.Linear(0.1))
    channel.mode = "precision"
    with np.errstate(all="ignore"), pytest.warns(amp.DivergenceWarning, match="iteration 1"):
        run = amp.gamp(inst.X, inst.y, dn.Gaussian(), channel, max_iter=10, seed=0)
    assert run.diverged and run.n_iter == 0
    assert np.all(np.isfinite(run.W))


def test_easy_instance_converges(backend):
    inst = amp.teacher_student(d=500, alpha=2.0, prior=dn.Gaussian(), channel=dn.Linear(0.1), seed=0)
    X, y, W = _arrays(backend, inst.X, inst.y, inst.W)
    tol = 1e-8
    with warnings.catch_warnings():
        warnings.simplefilter("error", amp.DivergenceWarning)
        run = amp.gamp(X, y, dn.Gaussian(), dn.Linear(0.1), truth=W, max_iter=200, tol=tol, seed=0)
    residual = run.history["residual"]
    assert run.converged and not run.diverged
    assert "converged" in run.message
    assert residual[-1] < tol
    assert all(r >= tol for r in residual[:-1])  # it stops at the first residual below tol
    assert run.n_iter == len(residual) - 1 < 200
    assert run.history["mse"][-1] < 0.5 * run.history["mse"][0]


def test_max_iter_reached_is_neither_converged_nor_diverged():
    inst = _small(d=200)
    run = amp.gamp(inst.X, inst.y, inst.prior, inst.channel, truth=inst.W, max_iter=3, tol=0.0, seed=0)
    assert run.n_iter == 3 and not run.converged and not run.diverged
    assert "max_iter" in run.message


def test_callback_can_stop_the_run():
    inst = _small(d=200)
    seen = []

    def callback(t, W, C):
        seen.append(t)
        return t == 4

    run = amp.gamp(inst.X, inst.y, inst.prior, inst.channel, truth=inst.W, max_iter=50, tol=0.0, callback=callback)
    assert seen == [1, 2, 3, 4]
    assert run.n_iter == 4 and not run.converged and not run.diverged
    assert "callback" in run.message and "4" in run.message
    assert len(run.history["mse"]) == 5


def test_exact_recovery_is_not_a_divergence():
    # Rademacher teacher, noiseless perceptron at alpha = 2 (> alpha_alg ~ 1.49): GAMP recovers W*
    inst = amp.teacher_student(d=300, alpha=2.0, prior=dn.Rademacher(), channel=dn.Sign(), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", amp.DivergenceWarning)
        run = amp.gamp(inst.X, inst.y, dn.Rademacher(), dn.Sign(), truth=inst.W, max_iter=30, seed=3)
    mse = np.array(run.history["mse"])
    assert not run.diverged
    assert mse[-1] < 1e-6
    assert np.all(np.diff(mse[np.argmax(mse < 1e-6):]) <= 1e-6)  # once recovered, it stays recovered


# =================================================================== backends and the iteration

#: (prior, channel, alpha): every prior with every channel, in a regime where 8 damped
#: iterations move the overlap well away from its start without reaching exact recovery
CASES = {
    f"{p}-{c}": (prior, channel, alpha)
    for p, prior in [("gauss", dn.Gaussian()), ("rademacher", dn.Rademacher()), ("bg", dn.BernoulliGauss(0.3))]
    for c, channel, alpha in [("sign", dn.Sign(), 1.5), ("linear", dn.Linear(0.1), 1.0), ("relu", dn.ReLU(), 1.0),
                              ("abs", dn.Abs(), 2.0), ("door", dn.Door(0.7), 2.0)]
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_gamp_is_the_design_iteration_on_every_backend(backend, case):
    prior, channel, alpha = CASES[case]
    n_iter, damping, eps = 8, 0.8, 0.2
    inst = amp.teacher_student(d=300, alpha=alpha, prior=prior, channel=channel, seed=1)
    X, y, W = _arrays(backend, inst.X, inst.y, inst.W)
    start = amp.gamp(X, y, prior, channel, truth=W, max_iter=0, seed=2, init_overlap=eps, **NO_FUSED)
    run = amp.gamp(X, y, prior, channel, truth=W, max_iter=n_iter, tol=0.0, seed=2, init_overlap=eps,
                   damping=damping, block_rows=97, **NO_FUSED)
    assert namespace(run.W) is backend_namespace(backend)
    assert run.W.dtype == X.dtype and tuple(run.W.shape) == (inst.d, 1)
    assert run.n_iter == n_iter, run.message
    W_ref, C_ref, ref = reference_gamp(inst.X, inst.y, prior, channel, inst.W, to_numpy(start.W),
                                       to_numpy(start.C), n_iter, damping)
    assert abs(ref["m"][-1] - ref["m"][0]) > 0.05  # the test case is not a fixed point
    for key in ("mse", "m", "q", "residual"):
        np.testing.assert_allclose(run.history[key][1:], ref[key], rtol=RTOL, atol=1e-14, err_msg=key)
    np.testing.assert_allclose(to_numpy(run.W), W_ref, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(to_numpy(run.C), C_ref, rtol=RTOL)


#: channels that move GAMP off W^0 = E[w] = 0 (odd in z), so that init_overlap = 0 gives the
#: same, non-random start on every backend
ODD = {f"{p}-{c}": (prior, channel)
       for p, prior in [("gauss", dn.Gaussian()), ("rademacher", dn.Rademacher()), ("bg", dn.BernoulliGauss(0.3))]
       for c, channel in [("sign", dn.Sign()), ("linear", dn.Linear(0.1)), ("relu", dn.ReLU())]}


@pytest.mark.parametrize("case", list(ODD), ids=list(ODD))
def test_same_history_as_numpy(backend, case):
    """The run on `backend` (on NumPy: with other row blocks) has the NumPy run's history."""
    prior, channel = ODD[case]
    inst = amp.teacher_student(d=300, alpha=1.0, prior=prior, channel=channel, seed=4)
    common = dict(prior=prior, channel=channel, max_iter=8, tol=0.0, init_overlap=0.0, damping=0.8)
    ref = amp.gamp(inst.X, inst.y, truth=inst.W, **common, **NO_FUSED)
    X, y, W = _arrays(backend, inst.X, inst.y, inst.W)
    run = amp.gamp(X, y, truth=W, block_rows=37 if backend == "numpy" else None, **common)
    assert namespace(run.W) is backend_namespace(backend)
    assert run.n_iter == ref.n_iter == 8
    assert ref.history["m"][-1] > 0.1  # informative
    for key in ("mse", "m", "q"):
        np.testing.assert_allclose(run.history[key], ref.history[key], rtol=RTOL, atol=1e-14, err_msg=key)
    np.testing.assert_allclose(run.history["residual"][1:], ref.history["residual"][1:], rtol=RTOL)
    np.testing.assert_allclose(to_numpy(run.W), to_numpy(ref.W), rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("channel", [dn.Sign(), dn.Linear(0.1), dn.ReLU(), dn.Abs(), dn.Door(0.7)],
                         ids=["sign", "linear", "relu", "abs", "door"])
def test_float32_stays_float32(backend, channel):
    xp = backend_namespace(backend)
    inst = amp.teacher_student(d=200, alpha=2.0, prior=dn.Gaussian(), channel=channel, seed=5,
                               dtype="float32", backend=backend)
    assert inst.X.dtype == xp.float32
    run = amp.gamp(inst.X, inst.y, dn.Gaussian(), channel, truth=inst.W, max_iter=5, tol=0.0, seed=0,
                   init_overlap=0.2)
    assert run.W.dtype == xp.float32 and run.C.dtype == xp.float32
    assert namespace(run.W) is xp
    assert run.n_iter == 5 and np.all(np.isfinite(run.history["mse"]))
    assert run.history["mse"][-1] < run.history["mse"][0]


def test_float64_truth_with_float32_data_gives_float32():
    inst = amp.teacher_student(d=100, alpha=2.0, prior=dn.Gaussian(), channel=dn.Linear(0.1), seed=5, dtype="float32")
    run = amp.gamp(inst.X, inst.y, dn.Gaussian(), dn.Linear(0.1), truth=inst.W.astype(np.float64), max_iter=3)
    assert run.W.dtype == np.float32 and run.C.dtype == np.float32


def test_teacher_student_on_a_backend_feeds_gamp(backend):
    inst = amp.teacher_student(d=200, alpha=2.0, prior=dn.Rademacher(), channel=dn.Sign(), seed=6, backend=backend)
    run = amp.gamp(inst.X, inst.y, dn.Rademacher(), dn.Sign(), truth=inst.W, max_iter=4, seed=0)
    assert namespace(run.W) is backend_namespace(backend)
    assert run.history["m"][-1] > run.history["m"][0]


def test_three_axis_input_with_one_token_is_the_same_run():
    inst = _small(d=150)
    a = amp.gamp(inst.X, inst.y, inst.prior, inst.channel, truth=inst.W, max_iter=5, tol=0.0, seed=1)
    b = amp.gamp(inst.X[:, None, :], inst.y, inst.prior, inst.channel, truth=inst.W, max_iter=5, tol=0.0, seed=1)
    for key in ("mse", "m", "q", "residual"):
        np.testing.assert_allclose(b.history[key], a.history[key], rtol=1e-12)


def test_seed_fixes_the_initialisation():
    inst = _small(d=150)
    run = lambda seed: amp.gamp(inst.X, inst.y, inst.prior, inst.channel, truth=inst.W, max_iter=0,  # noqa: E731
                                seed=seed, init_overlap=0.3).W
    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


# ============================================================================ history conventions


def test_history_conventions_and_recorded_values():
    inst = _small(d=200, prior=dn.BernoulliGauss(0.5, mean=0.3))
    iterates = [None]

    def callback(t, W, C):
        iterates.append(np.array(W, copy=True))

    start = amp.gamp(inst.X, inst.y, inst.prior, inst.channel, truth=inst.W, max_iter=0, seed=7)
    iterates[0] = start.W
    run = amp.gamp(inst.X, inst.y, inst.prior, inst.channel, truth=inst.W, max_iter=6, tol=0.0, seed=7,
                   callback=callback)
    h = run.history
    assert set(h) == {"mse", "m", "q", "residual"}
    assert run.n_iter == 6
    assert all(len(h[key]) == run.n_iter + 1 for key in h)
    assert h["residual"][0] == math.inf
    assert all(isinstance(h[key][t], float) for key in h for t in range(run.n_iter + 1))
    d, w = inst.d, inst.W[:, 0]
    for t, W in enumerate(iterates):
        assert h["m"][t] == pytest.approx(float(W[:, 0] @ w) / d, rel=1e-12)
        assert h["q"][t] == pytest.approx(float(W[:, 0] @ W[:, 0]) / d, rel=1e-12)
        assert h["mse"][t] == pytest.approx(float(np.mean((W[:, 0] - w) ** 2)), rel=1e-12)
        if t:
            step = np.linalg.norm(W - iterates[t - 1]) / math.sqrt(d)
            assert h["residual"][t] == pytest.approx(step, rel=1e-12)


def test_history_without_truth_has_only_the_residual():
    inst = _small(d=100)
    run = amp.gamp(inst.X, inst.y, inst.prior, inst.channel, max_iter=3, tol=0.0)
    assert set(run.history) == {"residual"}
    assert len(run.history["residual"]) == 4 and run.history["residual"][0] == math.inf


def test_zero_iterations_return_the_initial_state():
    inst = _small(d=100)
    run = amp.gamp(inst.X, inst.y, inst.prior, inst.channel, truth=inst.W, max_iter=0, seed=0)
    assert run.n_iter == 0 and not run.converged and not run.diverged
    assert all(len(v) == 1 for v in run.history.values())
    assert tuple(run.W.shape) == (inst.d, 1) and tuple(run.C.shape) == (1, 1)


#: priors with a non-zero mean, so that mu^2 and eps Var(w) both show in m^0 = q^0
INIT_PRIORS = {
    "gauss-shifted": (dn.Gaussian(0.5, 2.0), 0.5, 2.0),                 # (prior, mean, variance)
    "bg-shifted": (dn.BernoulliGauss(0.3, mean=1.0, var=0.5), 0.3, 0.3 * 1.5 - 0.09),
    "rademacher": (dn.Rademacher(), 0.0, 1.0),
}


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3, 1.0])
@pytest.mark.parametrize("name", list(INIT_PRIORS))
def test_initial_overlap(name, eps):
    prior, mu, var = INIT_PRIORS[name]
    d = 5000
    inst = amp.teacher_student(d=d, alpha=0.01, prior=prior, channel=dn.Linear(0.1), seed=8)
    run = amp.gamp(inst.X, inst.y, prior, dn.Linear(0.1), truth=inst.W, max_iter=0, init_overlap=eps, seed=9)
    W0, w = run.W[:, 0], inst.W[:, 0]
    target = mu ** 2 + eps * var
    for value, per_coordinate in ((run.history["m"][0], W0 * w), (run.history["q"][0], W0 * W0)):
        assert value == pytest.approx(np.mean(per_coordinate), rel=1e-12)
        assert abs(value - target) <= 5.0 * np.std(per_coordinate) / math.sqrt(d) + 1e-12
    # Chat^0 = rho - q^0 on average: the Nishimori start the state evolution uses
    assert run.C[0, 0] == pytest.approx((1.0 - eps) * var, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_initial_overlap_without_truth(eps):
    prior, mu, var = INIT_PRIORS["gauss-shifted"]
    d = 5000
    inst = amp.teacher_student(d=d, alpha=0.01, prior=prior, channel=dn.Linear(0.1), seed=10)
    run = amp.gamp(inst.X, inst.y, prior, dn.Linear(0.1), max_iter=0, init_overlap=eps, seed=11)
    q0 = run.W[:, 0] ** 2
    assert abs(np.mean(q0) - (mu ** 2 + eps * var)) <= 5.0 * np.std(q0) / math.sqrt(d)


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("name", list(INIT_PRIORS))
def test_state_evolution_history_conventions(name, eps):
    prior, mu, var = INIT_PRIORS[name]
    rho = mu ** 2 + var
    curve = se.gamp(prior, dn.Sign(), alpha=1.0, max_iter=3, tol=0.0, init_overlap=eps)
    h = curve.history
    assert {"mse", "q", "q_hat"} <= set(h)
    assert curve.n_iter == 3
    assert all(len(h[key]) == curve.n_iter + 1 for key in ("mse", "q", "q_hat"))
    assert h["q"][0] == pytest.approx(mu ** 2 + eps * (rho - mu ** 2), rel=1e-12, abs=1e-15)
    assert all(h["mse"][t] == pytest.approx(rho - h["q"][t], rel=1e-12) for t in range(4))
    assert h["residual"][0] == math.inf
    assert all(isinstance(h[key][t], float) for key in ("mse", "q", "q_hat") for t in range(4))
    assert all(math.isfinite(v) and v > 0 for v in h["q_hat"])
    # the first SE step is informative, as is the AMP step it pairs with
    assert h["q"][1] > h["q"][0]


@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_gamp_and_state_evolution_start_from_the_same_point(eps):
    prior = dn.BernoulliGauss(0.3, mean=1.0, var=0.5)
    curve = se.gamp(prior, dn.Linear(0.1), alpha=1.0, max_iter=0, init_overlap=eps)
    inst = amp.teacher_student(d=100, alpha=1.0, prior=prior, channel=dn.Linear(0.1), seed=12)
    run = amp.gamp(inst.X, inst.y, prior, dn.Linear(0.1), truth=inst.W, max_iter=0, init_overlap=eps, seed=0)
    rho = prior.second_moment()[0, 0]
    assert run.C[0, 0] == pytest.approx(rho - curve.history["q"][0], rel=1e-12)
    assert curve.history["mse"][0] == pytest.approx(rho - curve.history["q"][0], rel=1e-12)


# =================================================================== fixes found in review

def test_gamp_rejects_labels_of_the_wrong_shape():
    inst = amp.teacher_student(d=50, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=0)
    with pytest.raises(ValueError, match=r"y must have shape"):
        amp.gamp(inst.X, inst.y[:, None], dn.Gaussian(), dn.Sign(), max_iter=2)


def test_float64_labels_with_float32_data_stay_float32():
    inst = amp.teacher_student(d=80, alpha=2.0, prior=dn.Gaussian(), channel=dn.Linear(0.1), seed=0,
                               dtype=np.float32)
    run = amp.gamp(inst.X, inst.y.astype(np.float64), dn.Gaussian(), dn.Linear(0.1), max_iter=3)
    assert run.W.dtype == np.float32 and run.C.dtype == np.float32


def test_same_seed_gives_the_same_start_on_every_backend(xp):
    inst = amp.teacher_student(d=60, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=1)
    X, y = xp.asarray(inst.X), xp.asarray(inst.y)
    run = amp.gamp(X, y, dn.Gaussian(), dn.Sign(), max_iter=0, seed=5)
    ref = amp.gamp(inst.X, inst.y, dn.Gaussian(), dn.Sign(), max_iter=0, seed=5)
    np.testing.assert_allclose(np.asarray(run.W.cpu() if hasattr(run.W, "cpu") else run.W), ref.W, rtol=1e-12)


def test_subclass_that_changes_the_math_gets_no_fused_kernel():
    class ShiftedSign(dn.Sign):
        def _posterior(self, y, omega, V):
            return super()._posterior(y, omega + 0.1, V)

    assert dn.Sign().scalar_kernel() is not None
    assert ShiftedSign().scalar_kernel() is None
