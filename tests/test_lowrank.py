"""Low-rank matrix AMP (amp.lowrank) against its state evolution (state_evolution.lowrank) on the
spiked Wigner and spiked Wishart models, the Bayes-optimal phase diagram of the spiked Wigner
model, the spiked instances and the sparse Rademacher prior.

Tolerance of the per-iteration comparisons: the seed average of an AMP observable may differ from
the SE by 4 s_t / sqrt(S) + 1/n, with s_t the spread over the S seeds at iteration t. One run's
observables fluctuate by O(1/sqrt(n)) (the empirical second moment of the spike alone moves the
MSE by sqrt(Var(w^2) / n)), so the mean of S independent runs fluctuates by s_t / sqrt(S); 1/n
bounds the O(1/n) finite-size bias of the mean. The spread is itself estimated from S - 1 degrees of
freedom, so a correct SE exceeds 4 such standard errors with the Student-t probability
P(|t_{S-1}| > 4) per iteration: 6% for S = 3 (too often: the three seeds of a run can cluster well
inside the true spread), 1% for the S = 6 used here, 0.1% for the S = 16 of the slow versions.
The seeds are fixed, so the tests are deterministic. An SE that is off by a few per cent of the
observable fails.
"""
import math

import numpy as np
import pytest
from scipy import optimize

import amp
import denoisers as dn
import state_evolution as se
from amp.backend import backend_namespace, namespace, to_numpy
from amp.lowrank import top_eigenpair
from denoisers.quadrature import gauss_hermite
from state_evolution.gamp import q_bayes
from state_evolution.lowrank import SpikedWignerSE, input_step, spectral_overlaps

SEEDS = 6
SLOW_SEEDS = 16


pytestmark = pytest.mark.usefixtures("single_threaded_blas")


def tolerance(runs, rows):
    """4 standard errors of the seed mean + 1/rows, per iteration (see the module docstring)."""
    return 4.0 * runs.std(axis=0, ddof=1) / math.sqrt(runs.shape[0]) + 1.0 / rows


def assert_tracks(runs, curve, rows, what):
    """The seed mean of `runs` (S, T + 1) follows `curve` (T + 1,) within `tolerance` at every iteration."""
    runs, curve = np.asarray(runs, dtype=float), np.asarray(curve, dtype=float)
    assert runs.shape[1] == curve.size, (runs.shape, curve.size)
    mean, tol = runs.mean(axis=0), tolerance(runs, rows)
    worst = int(np.argmax(np.abs(mean - curve) - tol))
    assert np.all(np.abs(mean - curve) <= tol), (
        f"{what}, iteration {worst}: AMP {mean[worst]:.5f} vs SE {curve[worst]:.5f} (tol {tol[worst]:.5f})")
    return tol


def sign_aligned(history, keys, side=""):
    """History arrays with m multiplied by the sign of m^0 (the spiked models are invariant under X -> -X)."""
    sign = math.copysign(1.0, history["m" + side][0])
    return {key: np.asarray(history[key], dtype=float) * (sign if key.startswith("m") else 1.0) for key in keys}


# ------------------------------------------------------------------ the spiked Wigner model, per iteration

WIGNER_CASES = {
    # name: (prior, Delta, init_overlap, iterations, n, seeds, expected end)
    "rademacher_above_spectral_threshold": (dn.Rademacher(), 0.5, 0.1, 15, 2000, 12, "informative"),
    "rademacher_below_spectral_threshold": (dn.Rademacher(), 1.5, 0.1, 15, 2000, 12, "uninformative"),
    # rho = 0.05 is first order: delta_alg ~ 0.995 < delta_it ~ 1.338 < delta_dyn ~ 1.386 (test below). The
    # empirical E[w^2] of a spike moves by sqrt((1/rho - 1) / n) = 0.07 at n = 4000 and the effective noise
    # Delta / E[w^2]^2 with it, so the cases keep away from the thresholds by more than that
    "sparse_rademacher_easy_phase": (dn.SparseRademacher(0.05), 0.8, 0.1, 15, 4000, 6, "informative"),
    "sparse_rademacher_hard_phase_small_start": (dn.SparseRademacher(0.05), 1.25, 0.01, 10, 4000, 6, "uninformative"),
}
#: the hard phase from a large start needs n = 8000: at n = 4000 some instances fall back to M = 0
SLOW_WIGNER_CASES = dict(WIGNER_CASES, sparse_rademacher_hard_phase_large_start=(
    dn.SparseRademacher(0.05), 1.1, 0.8, 15, 8000, SLOW_SEEDS, "informative"))


def wigner_runs(prior, delta, eps, T, n, seeds, init="informative"):
    runs = {"mse": [], "m": [], "q": []}
    for s in range(seeds):
        inst = amp.spiked_wigner(n, prior, delta, seed=s)
        run = amp.lowrank(inst.Y, prior, delta, truth=inst.X, max_iter=T, tol=0.0, init=init, init_overlap=eps,
                          seed=1000 + s)
        assert not run.diverged, run.message
        for key in runs:
            runs[key].append(run.history[key])
    return {key: np.array(value) for key, value in runs.items()}


def check_wigner_case(case, seeds=None, n_factor=1):
    prior, delta, eps, T, n, case_seeds, end = SLOW_WIGNER_CASES[case]
    n *= n_factor
    runs = wigner_runs(prior, delta, eps, T, n, seeds or case_seeds)
    curve = se.lowrank(prior, delta, max_iter=T, tol=0.0, init_overlap=eps).history
    tols = {key: assert_tracks(runs[key], curve[key], n, f"{case}: {key}") for key in ("mse", "m", "q")}
    # the comparison is not vacuous: the SE heads for the branch the case is about, which for the
    # informative cases lies far (in units of the tolerance) from the uninformative M = 0; the
    # uninformative cases stay at M = 0 while an informative branch exists (hard phase)
    bo = se.lowrank_bayes_optimal(prior, [delta, 1.01 * delta])
    M_end = bo.informative.M[0] if end == "informative" else bo.uninformative.M[0]
    assert abs(curve["m"][-1] - M_end) < 0.01
    if end == "informative":
        assert curve["m"][-1] > 5 * np.median(tols["m"])
    if case == "sparse_rademacher_hard_phase_small_start":
        assert bo.informative.M[0] > 0.6 and np.all(np.abs(runs["m"][:, -1]) < 0.05)


@pytest.mark.parametrize("case", WIGNER_CASES)
def test_se_predicts_lowrank_amp_per_iteration_spiked_wigner(case):
    check_wigner_case(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_WIGNER_CASES)
def test_se_predicts_lowrank_amp_per_iteration_spiked_wigner_many_seeds(case):
    check_wigner_case(case, SLOW_SEEDS, n_factor=2 if SLOW_WIGNER_CASES[case][4] < 8000 else 1)


@pytest.mark.slow
def test_se_predicts_the_jump_after_the_plateau_just_below_delta_alg():
    """Sparse Rademacher at Delta = 0.9 < delta_alg from eps = 0.01: a long plateau near M = 0, then the jump."""
    prior, delta, eps, T, n = dn.SparseRademacher(0.05), 0.9, 0.01, 40, 8000
    runs = wigner_runs(prior, delta, eps, T, n, SLOW_SEEDS)
    curve = se.lowrank(prior, delta, max_iter=T, tol=0.0, init_overlap=eps).history
    assert curve["m"][10] < 0.05 and curve["m"][-1] > 0.9
    for key in ("mse", "m", "q"):
        assert_tracks(runs[key], curve[key], n, f"plateau: {key}")


def random_start_runs(delta, T, seeds, n=2000, eps=0.5):
    prior = dn.Rademacher()
    runs = {"m": [], "q": []}
    for s in range(seeds):
        inst = amp.spiked_wigner(n, prior, delta, seed=s)
        run = amp.lowrank(inst.Y, prior, delta, truth=inst.X, max_iter=T, tol=0.0, init="random", init_overlap=eps,
                          seed=1000 + s)
        runs["m"].append(run.history["m"])
        runs["q"].append(run.history["q"])
    return {key: np.array(value) for key, value in runs.items()}


def test_uninformative_start_stays_at_zero_overlap_below_the_spectral_threshold():
    """Rademacher prior, Delta = 1.5 > rho^2 = 1: from a random What^0 (m^0 = 0, q^0 = 0.5) the overlap
    stays O(1/sqrt(n)) while q follows the SE of m = 0 iteration by iteration."""
    delta, T, n = 1.5, 20, 2000
    runs = random_start_runs(delta, T, SEEDS, n)
    curve = se.lowrank(dn.Rademacher(), delta, max_iter=T, tol=0.0, init="random", init_overlap=0.5).history
    assert np.all(np.array(curve["m"]) == 0.0)
    assert_tracks(runs["q"], curve["q"], n, "q")
    assert_tracks(runs["m"], curve["m"], n, "m")
    assert np.max(np.abs(runs["m"])) < 5.0 / math.sqrt(n)


def test_uninformative_start_reaches_the_se_fixed_point_above_the_spectral_threshold():
    """Rademacher prior, Delta = 0.5 < 1: M = 0 is unstable, AMP from a random start escapes on
    finite-size fluctuations and ends on the informative fixed point (up to the global sign)."""
    delta, n = 0.5, 2000
    runs = random_start_runs(delta, 40, SEEDS, n)
    M = se.lowrank_bayes_optimal(dn.Rademacher(), [delta, 0.6]).informative.M[0]
    final = np.abs(runs["m"][:, -1:])
    assert abs(runs["m"][0, 0]) < 5.0 / math.sqrt(n)
    assert_tracks(final, [M], n, "final |m|")
    assert_tracks(runs["q"][:, -1:], [M], n, "final q")


# ------------------------------------------------------------------ spiked Wishart (rectangular)

def wishart_runs(priors, n, m, delta, init, eps, T, seeds, keys):
    runs = {key: [] for key in keys}
    for s in range(seeds):
        inst = amp.spiked_wishart(n, m, *priors, delta, seed=s)
        run = amp.lowrank(inst.Y, priors, delta, truth=(inst.U, inst.V), max_iter=T, tol=0.0, init=init,
                          init_overlap=eps, seed=1000 + s)
        assert not run.diverged, run.message
        aligned = sign_aligned(run.history, keys, "_u")
        for key in keys:
            runs[key].append(aligned[key])
    return {key: np.array(value) for key, value in runs.items()}


@pytest.mark.parametrize("seeds", [SEEDS, pytest.param(SLOW_SEEDS, marks=pytest.mark.slow)])
def test_se_predicts_lowrank_amp_per_iteration_spiked_wishart_gaussian_priors(seeds):
    priors, n, m, delta, eps, T = (dn.Gaussian(), dn.Gaussian()), 2000, 3000, 0.3, 0.1, 12
    keys = ("mse_u", "mse_v", "m_u", "m_v", "mse")
    runs = wishart_runs(priors, n, m, delta, "informative", eps, T, seeds, keys)
    curve = se.lowrank(priors, delta, alpha=m / n, max_iter=T, tol=0.0, init_overlap=eps).history
    for key in keys:
        tol = assert_tracks(runs[key], curve[key], n, key)
    assert curve["mse_u"][0] - curve["mse_u"][-1] > 10 * np.median(tol)


# ------------------------------------------------------------------ spectral initialisation

def test_spectral_start_is_tracked_by_the_se_from_the_bbp_overlap():
    """Spiked Wigner, Rademacher, Delta = 0.5: AMP from the top eigenvector (with the Onsager term of its
    linear-AMP fixed point) follows the SE from M^0 = rho (1 - Delta / rho^2) = 0.5."""
    prior, delta, n, T = dn.Rademacher(), 0.5, 2000, 10
    runs = {"m": [], "q": [], "mse": []}
    for s in range(SEEDS):
        inst = amp.spiked_wigner(n, prior, delta, seed=s)
        run = amp.lowrank(inst.Y, prior, delta, truth=inst.X, max_iter=T, tol=0.0, init="spectral")
        h = sign_aligned(run.history, ("m", "q"))
        runs["m"].append(h["m"]), runs["q"].append(h["q"])
        runs["mse"].append(float(np.mean(inst.X ** 2)) - 2 * h["m"] + h["q"])
    curve = se.lowrank(prior, delta, max_iter=T, tol=0.0, init="spectral").history
    assert curve["m"][0] == pytest.approx(0.5)
    tols = {key: assert_tracks(np.array(runs[key]), curve[key], n, key) for key in runs}
    # the SE starts near its fixed point (0.618), but still moves by twice the tolerance
    assert curve["m"][-1] - curve["m"][0] > 2 * np.median(tols["m"])


def test_spectral_start_rectangular_is_tracked_by_the_se():
    priors, n, m, delta, T = (dn.Gaussian(), dn.Rademacher()), 2000, 1000, 0.25, 8
    keys = ("m_u", "m_v", "q_u", "q_v")
    runs = wishart_runs(priors, n, m, delta, "spectral", 0.0, T, SEEDS, keys)
    curve = se.lowrank(priors, delta, alpha=m / n, max_iter=T, tol=0.0, init="spectral").history
    eps_u, eps_v = spectral_overlaps(1.0, delta, 1.0, m / n)
    assert (curve["m_u"][0], curve["m_v"][0]) == pytest.approx((eps_u, eps_v))
    for key in keys:
        assert_tracks(runs[key], curve[key], n, key)
    assert curve["m_v"][-1] - curve["m_v"][0] > 0.1


def test_lanczos_top_eigenpair_matches_a_dense_eigendecomposition():
    rng = np.random.default_rng(3)
    G = rng.standard_normal((300, 300))
    Y = (G + G.T) / math.sqrt(2 * 300) + 0.01 * np.outer(np.ones(300), np.ones(300))
    lam, phi = top_eigenpair(lambda v: Y @ v, Y)
    evals, evecs = np.linalg.eigh(Y)
    assert lam == pytest.approx(evals[-1], rel=1e-10)
    assert abs(phi @ evecs[:, -1]) == pytest.approx(1.0, abs=1e-10)


# ------------------------------------------------------------------ state evolution

def test_se_on_the_nishimori_line_is_the_q_bayes_recursion():
    prior, delta = dn.SparseRademacher(0.2), 0.7
    h = se.lowrank(prior, delta, max_iter=6, tol=0.0, init_overlap=0.3).history
    M = 0.3
    for t in range(1, 7):
        M = q_bayes(prior, M / delta)
        assert h["m"][t] == pytest.approx(M, rel=1e-9) and h["q"][t] == pytest.approx(M, rel=1e-9)
        assert h["mse"][t] == pytest.approx(1.0 - M, rel=1e-9)


def test_input_step_off_the_nishimori_line_is_the_rademacher_integral():
    """Rademacher: f_in = tanh(B) whatever A, and w* -> -w* is a symmetry, so with B = m_hat + sqrt(q_hat) xi
    E[f_in w*] = E[tanh(B)] and E[f_in^2] = E[tanh(B)^2] (Gauss-Hermite, 80 nodes)."""
    prior, m_hat, q_hat = dn.Rademacher(), 0.4, 0.9
    m, q = input_step(prior, m_hat, q_hat)
    x, h = gauss_hermite(80)
    f = np.tanh(m_hat + math.sqrt(q_hat) * x)
    assert m == pytest.approx(h @ f, rel=1e-10)
    assert q == pytest.approx(h @ f ** 2, rel=1e-10)


def test_rademacher_fixed_point_solves_the_z2_synchronisation_equation():
    """M = E tanh(M / Delta + sqrt(M / Delta) xi), solved independently by Gauss-Hermite and brentq."""
    delta = 0.5
    x, h = gauss_hermite(120)
    M_ref = optimize.brentq(lambda M: h @ np.tanh(M / delta + np.sqrt(M / delta) * x) - M, 1e-3, 1.0, xtol=1e-14)
    bo = se.lowrank_bayes_optimal(dn.Rademacher(), [delta, 0.6])
    assert bo.M[0] == pytest.approx(M_ref, rel=1e-9)
    h_se = se.lowrank(dn.Rademacher(), delta, max_iter=200, tol=1e-13, init_overlap=0.5).history
    assert h_se["m"][-1] == pytest.approx(M_ref, rel=1e-8)


def test_gaussian_priors_fixed_points_are_the_bbp_overlaps():
    """For Gaussian priors Bayes-optimal AMP is spectral: M = rho eps with the BBP formulas."""
    delta = 0.4
    h = se.lowrank(dn.Gaussian(), delta, max_iter=300, tol=1e-14, init_overlap=0.5).history
    assert h["m"][-1] == pytest.approx(spectral_overlaps(1.0, delta), rel=1e-8)
    alpha = 1.5
    priors = (dn.Gaussian(), dn.Gaussian())
    h = se.lowrank(priors, delta, alpha=alpha, max_iter=300, tol=1e-14, init_overlap=0.5).history
    eps_u, eps_v = spectral_overlaps(1.0, delta, 1.0, alpha)
    assert (h["m_u"][-1], h["m_v"][-1]) == pytest.approx((eps_u, eps_v), rel=1e-8)


def test_rademacher_transition_is_continuous_at_the_spectral_threshold():
    bo = se.lowrank_bayes_optimal(dn.Rademacher(), np.linspace(0.5, 1.5, 11))
    assert bo.transition == "continuous"
    assert bo.delta_spectral == pytest.approx(1.0, rel=1e-12)
    assert bo.delta_alg == bo.delta_it == bo.delta_dyn == pytest.approx(1.0, rel=1e-12)
    assert np.all(bo.M[bo.noise_vars >= 1.0] == 0.0) and np.all(bo.M[bo.noise_vars < 1.0] > 0.0)
    assert list(bo.bayes_branch[bo.noise_vars > 1.0]) == ["uninformative"] * 5


def test_sparse_rademacher_is_first_order_with_ordered_thresholds():
    """rho = 0.05: the informative branch exists up to delta_dyn = max_x Q(x) / x, the SE from M = 0 reaches
    it below delta_alg = min of Q(x) / x left of that maximum (just below the spectral threshold rho^2 = 1, as
    Q(x) = x - x^2 + O(x^3) for any zero-mean unit-variance prior), and the free entropies cross in between."""
    prior = dn.SparseRademacher(0.05)
    bo = se.lowrank_bayes_optimal(prior, np.linspace(0.6, 1.6, 21))
    assert bo.transition == "first-order"
    assert bo.delta_spectral == pytest.approx(1.0, rel=1e-12)
    assert bo.delta_alg < 1.0 < bo.delta_it < bo.delta_dyn
    x = np.geomspace(1e-4, 10, 2000)
    r = np.array([q_bayes(prior, u) for u in x]) / x
    peak = np.argmax(r)
    assert bo.delta_dyn == pytest.approx(r[peak], rel=1e-4)
    assert bo.delta_alg == pytest.approx(r[:peak].min(), rel=1e-4)
    wig = SpikedWignerSE(prior)
    M_low, M_high = wig.branches(bo.delta_it)
    assert M_low == 0.0 and M_high > 0.5
    assert wig.free_entropy(M_high, bo.delta_it) == pytest.approx(0.0, abs=1e-5)
    # the Bayes-optimal (larger free entropy) branch switches at delta_it
    informative = bo.noise_vars[bo.bayes_branch == "informative"]
    assert informative.max() < bo.delta_it < bo.noise_vars[bo.bayes_branch == "uninformative"].min()


def test_sparse_rademacher_tricritical_density_lies_between_0_08_and_0_1():
    """Lesieur, Krzakala, Zdeborova (2015, 2017): the transition becomes first order below rho ~ 0.09."""
    assert se.lowrank_bayes_optimal(dn.SparseRademacher(0.1), np.linspace(0.9, 1.1, 11)).transition == "continuous"
    assert se.lowrank_bayes_optimal(dn.SparseRademacher(0.08), np.linspace(0.9, 1.1, 11)).transition == "first-order"


@pytest.mark.parametrize("prior, delta", [(dn.Rademacher(), 0.6), (dn.SparseRademacher(0.05), 1.2),
                                          (dn.SparseRademacher(0.05), 0.7), (dn.BernoulliGauss(0.3, mean=1.0), 0.5)])
def test_free_entropy_derivative_in_the_snr_is_a_quarter_of_m_squared(prior, delta):
    """dPhi / d(1 / Delta) = M^2 / 4 along each branch (I-MMSE: dI / d(1 / Delta) = (rho^2 - M^2) / 4)."""
    wig = SpikedWignerSE(prior)
    lam, step = 1.0 / delta, 1e-4 / delta
    for branch in (0, 1):
        phi = lambda l: wig.free_entropy(wig.branches(1.0 / l)[branch], 1.0 / l)  # noqa: E731
        slope = (phi(lam + step) - phi(lam - step)) / (2.0 * step)
        M = wig.branches(delta)[branch]
        assert slope == pytest.approx(M * M / 4.0, rel=1e-5, abs=1e-9)


def test_mutual_information_tends_to_the_prior_entropy_at_low_noise():
    bo = se.lowrank_bayes_optimal(dn.Rademacher(), [0.02, 0.03])
    assert bo.mutual_information[0] == pytest.approx(math.log(2.0), rel=1e-6)
    rho = 0.2
    entropy = -(1 - rho) * math.log(1 - rho) - rho * math.log(rho / 2)
    bo = se.lowrank_bayes_optimal(dn.SparseRademacher(rho), [0.01, 0.02])
    assert bo.mutual_information[0] == pytest.approx(entropy, rel=1e-4)


def test_se_argument_checks_name_the_argument():
    with pytest.raises(ValueError, match="noise_var"):
        se.lowrank(dn.Rademacher(), 0.0)
    with pytest.raises(ValueError, match="init"):
        se.lowrank(dn.Rademacher(), 0.5, init="warm")
    with pytest.raises(ValueError, match="alpha"):
        se.lowrank((dn.Gaussian(), dn.Gaussian()), 0.5, alpha=-1.0)
    with pytest.raises(ValueError, match="noise_vars"):
        se.lowrank_bayes_optimal(dn.Rademacher(), [1.0, 0.5])


# ------------------------------------------------------------------ instances, inputs, backends

def test_spiked_wigner_instance_has_the_model_statistics():
    n, delta = 1500, 0.7
    inst = amp.spiked_wigner(n, dn.Rademacher(), delta, seed=4)
    Y, X = inst.Y, inst.X
    assert Y.shape == (n, n) and X.shape == (n, 1) and np.array_equal(Y, Y.T)
    W = (Y - X @ X.T / math.sqrt(n)) / math.sqrt(delta)
    off = W[np.triu_indices(n, 1)]
    assert abs(off.mean()) < 5e-3 and off.var() == pytest.approx(1.0, abs=0.01)
    assert np.diag(W).var() == pytest.approx(2.0, abs=0.3)
    assert np.array_equal(amp.spiked_wigner(n, dn.Rademacher(), delta, seed=4).Y, Y)


def test_spiked_wishart_instance_has_the_model_statistics():
    n, m, delta = 1200, 800, 0.3
    inst = amp.spiked_wishart(n, m, dn.Gaussian(), dn.Rademacher(), delta, seed=2)
    assert inst.Y.shape == (n, m) and inst.U.shape == (n, 1) and inst.V.shape == (m, 1)
    W = (inst.Y - inst.U @ inst.V.T / math.sqrt(n)) / math.sqrt(delta)
    assert W.var() == pytest.approx(1.0, abs=0.01) and inst.alpha == pytest.approx(m / n)
    assert set(np.unique(inst.V)) == {-1.0, 1.0}


def test_bad_inputs_raise_value_errors_naming_the_argument():
    inst = amp.spiked_wigner(50, dn.Rademacher(), 0.5, seed=0)
    Y, X = inst.Y, inst.X
    with pytest.raises(ValueError, match="noise_var"):
        amp.lowrank(Y, dn.Rademacher(), -1.0)
    with pytest.raises(ValueError, match="noise_var"):
        amp.spiked_wigner(50, dn.Rademacher(), 0.0)
    with pytest.raises(ValueError, match="Y"):
        amp.lowrank(np.where(np.eye(50) > 0, np.nan, Y), dn.Rademacher(), 0.5)
    with pytest.raises(ValueError, match="Y must be square"):
        amp.lowrank(Y[:, :40], dn.Rademacher(), 0.5)
    with pytest.raises(ValueError, match="symmetric"):
        amp.lowrank(Y + np.triu(np.ones((50, 50)), 1), dn.Rademacher(), 0.5)
    with pytest.raises(ValueError, match="truth"):
        amp.lowrank(Y, dn.Rademacher(), 0.5, truth=X[:40])
    with pytest.raises(ValueError, match="init"):
        amp.lowrank(Y, dn.Rademacher(), 0.5, init="informative")
    with pytest.raises(ValueError, match="init_overlap"):
        amp.lowrank(Y, dn.Rademacher(), 0.5, truth=X, init_overlap=1.5)
    with pytest.raises(ValueError, match="max_iter"):
        amp.lowrank(Y, dn.Rademacher(), 0.5, max_iter=-1)
    with pytest.raises(ValueError, match="damping"):
        amp.lowrank(Y, dn.Rademacher(), 0.5, damping=0.0)
    rect = amp.spiked_wishart(40, 30, dn.Gaussian(), dn.Gaussian(), 0.5, seed=0)
    with pytest.raises(ValueError, match=r"truth\[1\]"):
        amp.lowrank(rect.Y, (dn.Gaussian(), dn.Gaussian()), 0.5, truth=(rect.U, rect.U))
    with pytest.raises(ValueError, match="prior"):
        amp.lowrank(rect.Y, (dn.Gaussian(),) * 3, 0.5)


class NaNAfter(dn.GaussMixture):
    """Rademacher whose f_in returns NaN from its `calls`-th call on (a test prior)."""

    def __init__(self, calls):
        super().__init__([0.5, 0.5], [-1.0, 1.0], [0.0, 0.0])
        self.calls = calls

    def f_in(self, B, A):
        self.calls -= 1
        W, C = super().f_in(B, A)
        return (W * math.nan, C) if self.calls <= 0 else (W, C)


def test_divergence_is_detected_and_reported():
    inst = amp.spiked_wigner(200, dn.Rademacher(), 0.5, seed=0)
    with pytest.warns(amp.DivergenceWarning, match="iteration 3"):
        run = amp.lowrank(inst.Y, NaNAfter(3), 0.5, truth=inst.X, max_iter=10)
    assert run.diverged and run.n_iter == 2 and np.all(np.isfinite(run.W)) and len(run.history["mse"]) == 3


class Isotropic2(dn.InputDenoiser):
    """A test prior on R^2, w ~ N(0, I_2): f_in(B, A) = (I + A)^{-1} B, Chat = (I + A)^{-1}."""

    k = 2

    def f_in(self, B, A):
        C = np.linalg.inv(np.eye(2) + A)
        return B @ C, np.broadcast_to(C, (B.shape[0], 2, 2))

    def sample(self, d, rng):
        return rng.normal((d, 2))

    def second_moment(self):
        return np.eye(2)

    def mean(self):
        return np.zeros(2)


def test_rank_two_amp_reaches_the_isotropic_fixed_point():
    """Gaussian prior on R^2: M = Q(M / Delta) with Q(x) = x (I + x)^{-1} gives M = (1 - Delta) I; the
    overlap matrix of AMP has both singular values there (up to a rotation of the two directions)."""
    n, delta = 2000, 0.4
    inst = amp.spiked_wigner(n, Isotropic2(), delta, seed=0)
    run = amp.lowrank(inst.Y, Isotropic2(), delta, truth=inst.X, max_iter=30, init_overlap=0.3, seed=1)
    m, q = run.history["m"][-1], run.history["q"][-1]
    assert m.shape == q.shape == (2, 2) and run.W.shape == (n, 2)
    np.testing.assert_allclose(np.linalg.svd(m, compute_uv=False), 1 - delta, atol=5 / math.sqrt(n))
    np.testing.assert_allclose(np.linalg.eigvalsh(q), 1 - delta, atol=5 / math.sqrt(n))
    with pytest.raises(ValueError, match="k = 1"):
        amp.lowrank(inst.Y, Isotropic2(), delta, init="spectral")
    with pytest.raises(ValueError, match="k = 1"):
        se.lowrank(Isotropic2(), delta)


def test_converged_run_stops_and_says_so():
    inst = amp.spiked_wigner(500, dn.Rademacher(), 0.3, seed=0)
    run = amp.lowrank(inst.Y, dn.Rademacher(), 0.3, truth=inst.X, max_iter=200, tol=1e-6, init_overlap=0.3)
    assert run.converged and run.n_iter < 200 and "converged" in run.message
    assert run.history["residual"][0] == math.inf and run.history["residual"][-1] < 1e-6


@pytest.mark.parametrize("rectangular", [False, True])
def test_lowrank_runs_on_every_backend_with_the_same_iterates(backend, xp, rectangular):
    """The spectral start is deterministic: the same instance on NumPy and on `backend` gives the same history."""
    if rectangular:
        inst = amp.spiked_wishart(300, 200, dn.Gaussian(), dn.Rademacher(), 0.3, seed=1)
        args = (inst.Y, (dn.Gaussian(), dn.Rademacher()), 0.3)
        truth = (inst.U, inst.V)
    else:
        inst = amp.spiked_wigner(300, dn.Rademacher(), 0.5, seed=1)
        args, truth = (inst.Y, dn.Rademacher(), 0.5), inst.X
    ref = amp.lowrank(*args, truth=truth, max_iter=6, tol=0.0, init="spectral")
    moved = tuple(xp.asarray(t) for t in truth) if rectangular else xp.asarray(truth)
    run = amp.lowrank(xp.asarray(args[0]), *args[1:], truth=moved, max_iter=6, tol=0.0, init="spectral")
    W = run.W[0] if rectangular else run.W
    assert namespace(W) is namespace(xp.asarray(args[0]))
    np.testing.assert_allclose(run.history["mse"], ref.history["mse"], rtol=1e-8)


def test_spiked_instances_and_informative_runs_on_torch():
    pytest.importorskip("torch")
    xp = backend_namespace("torch")
    inst = amp.spiked_wigner(400, dn.Rademacher(), 0.5, seed=0, backend="torch")
    assert namespace(inst.Y) is xp
    run = amp.lowrank(inst.Y, dn.Rademacher(), 0.5, truth=inst.X, max_iter=15, init_overlap=0.3, seed=1)
    assert namespace(run.W) is xp and run.history["m"][-1] > 0.5
    rect = amp.spiked_wishart(300, 200, dn.Gaussian(), dn.Gaussian(), 0.3, seed=0, backend="torch", dtype="float32")
    run = amp.lowrank(rect.Y, (dn.Gaussian(), dn.Gaussian()), 0.3, truth=(rect.U, rect.V), max_iter=10)
    assert run.W[1].dtype == xp.float32 and run.history["m_v"][-1] > 0.5


# ------------------------------------------------------------------ the sparse Rademacher prior

def test_sparse_rademacher_prior_is_the_three_atom_mixture_with_unit_second_moment():
    rho = 0.1
    prior = dn.SparseRademacher(rho)
    ref = dn.GaussMixture([1 - rho, rho / 2, rho / 2], [0.0, -1 / math.sqrt(rho), 1 / math.sqrt(rho)], [0, 0, 0])
    B = np.linspace(-30, 30, 101)[:, None]
    A = np.array([[2.5]])
    for a, b in zip(prior.f_in(B, A), ref.f_in(B, A)):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    assert prior.second_moment()[0, 0] == pytest.approx(1.0) and prior.mean()[0] == 0.0
    w = to_numpy(prior.sample(200_000, amp.backend.RNG(0)))
    assert np.mean(w == 0) == pytest.approx(1 - rho, abs=0.003) and np.mean(w ** 2) == pytest.approx(1.0, abs=0.03)
    np.testing.assert_allclose(dn.SparseRademacher(1.0).f_in(B, A)[0], dn.Rademacher().f_in(B, A)[0], rtol=1e-14)
    assert repr(prior) == "SparseRademacher(rho=0.1)"
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="rho"):
            dn.SparseRademacher(bad)


# ------------------------------------------------------------------ demo

def test_lowrank_demo_prints_table_and_writes_png(tmp_path, capsys, load_demo):
    demo = load_demo("lowrank_demo")
    out = tmp_path / "lowrank.png"
    demo.main(["--n", "300", "--seeds", "2", "--iterations", "4", "--out", str(out)])
    text = capsys.readouterr().out
    assert "SE mse" in text and len([line for line in text.splitlines() if line.strip()[:1].isdigit()]) >= 5
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
