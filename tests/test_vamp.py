"""(G)VAMP (amp.vamp) against its state evolution (state_evolution.vamp) on rotationally invariant
designs, GAMP on the same designs, VAMP = GAMP on iid designs, and the spectrum arguments of
amp.teacher_student.

Tolerance of the per-iteration comparisons, as in test_lowrank.py: the seed average of AMP's MSE may
differ from the SE by 4 s_t / sqrt(S) + 1/d (s_t the spread over the S seeds at iteration t: one
run fluctuates by O(1/sqrt(d)), its mean over S seeds by s_t / sqrt(S); 1/d bounds the O(1/d) bias
of the mean). A correct SE exceeds it with probability P(|t_{S-1}| > 4) per iteration: 1% for the
S = 6 used here, 0.1% for the S = 16 of the slow versions; the seeds are fixed.
"""
import math
import warnings

import numpy as np
import pytest

import amp
import denoisers as dn
import state_evolution as se
from amp.backend import RNG, backend_namespace, namespace, to_numpy
from amp.instances import haar_columns
from state_evolution.vamp import eigenvalue_law

SEEDS = 6
SLOW_SEEDS = 16


pytestmark = pytest.mark.usefixtures("single_threaded_blas")


def assert_tracks(runs, curve, d, what):
    """The seed mean of `runs` (S, T + 1) follows `curve` within 4 standard errors + 1/d at every iteration."""
    runs, curve = np.asarray(runs, dtype=float), np.asarray(curve, dtype=float)
    assert runs.shape[1] == curve.size, (runs.shape, curve.size)
    mean = runs.mean(axis=0)
    tol = 4.0 * runs.std(axis=0, ddof=1) / math.sqrt(runs.shape[0]) + 1.0 / d
    worst = int(np.argmax(np.abs(mean - curve) - tol))
    assert np.all(np.abs(mean - curve) <= tol), (
        f"{what}, iteration {worst}: AMP {mean[worst]:.5f} vs SE {curve[worst]:.5f} (tol {tol[worst]:.5f})")
    return tol


# ------------------------------------------------------------------ VAMP vs its SE, GAMP on the same designs

CASES = {
    # name: (prior, channel, alpha, condition number, d, iterations)
    "bernoulli_gauss_linear_kappa_100": (dn.BernoulliGauss(0.3), dn.Linear(1e-3), 0.6, 100.0, 2000, 15),
    "gaussian_sign_kappa_10": (dn.Gaussian(), dn.Sign(), 2.0, 10.0, 1000, 10),
}
SLOW_CASES = dict(CASES, gaussian_relu_kappa_100=(dn.Gaussian(), dn.ReLU(), 2.0, 100.0, 1000, 20),
                  gaussian_sign_kappa_100=(dn.Gaussian(), dn.Sign(), 2.0, 100.0, 1000, 10))


def vamp_and_gamp_runs(prior, channel, alpha, kappa, d, T, seeds, gamp_iter=50):
    """VAMP's histories {key: (S, T + 1)}, GAMP's results and the instances' spectrum (the same for all seeds)."""
    runs, gamps = {"mse": [], "gamma": [], "tau": []}, []
    for s in range(seeds):
        inst = amp.teacher_student(d, alpha, prior, channel, seed=s, condition_number=kappa)
        run = amp.vamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=T, tol=0.0, svd=inst.svd)
        assert not run.diverged, run.message
        for key in runs:
            runs[key].append(run.history[key])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", amp.DivergenceWarning)
            gamps.append(amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=gamp_iter, tol=0.0))
    return {key: np.array(value) for key, value in runs.items()}, gamps, inst.spectrum


def check_case(case, seeds):
    prior, channel, alpha, kappa, d, T = SLOW_CASES[case]
    runs, gamps, spectrum = vamp_and_gamp_runs(prior, channel, alpha, kappa, d, T, seeds)
    curve = se.vamp(prior, channel, alpha, spectrum, max_iter=T, tol=0.0).history
    tol = assert_tracks(runs["mse"], curve["mse"], d, case)
    assert curve["mse"][0] - curve["mse"][-1] > 10 * np.median(tol)
    # the extrinsic precisions VAMP measures are the SE's too; they grow by orders of magnitude, so
    # their logarithms are compared (gamma_1^0 = 0 for the uninformative start)
    assert curve["gamma"][0] == 0.0 and np.all(runs["gamma"][:, 0] == 0.0)
    assert_tracks(np.log(runs["gamma"][:, 1:]), np.log(curve["gamma"][1:]), d, f"{case}: log gamma_1")
    assert_tracks(np.log(runs["tau"]), np.log(curve["tau"]), d, f"{case}: log tau_1")
    # GAMP, whose Onsager terms assume iid entries, is flagged diverged or ends far from the SE
    for g in gamps:
        assert g.diverged or g.history["mse"][-1] > 3 * curve["mse"][-1], g.message
    return gamps


def test_vamp_matches_its_se_where_gamp_diverges_bernoulli_gauss_kappa_100():
    gamps = check_case("bernoulli_gauss_linear_kappa_100", SEEDS)
    assert all(g.diverged and "diverged" in g.message for g in gamps)


def test_gvamp_matches_its_se_per_iteration_sign_channel_kappa_10():
    check_case("gaussian_sign_kappa_10", SEEDS)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES)
def test_vamp_matches_its_se_per_iteration_many_seeds(case):
    check_case(case, SLOW_SEEDS)


# ------------------------------------------------------------------ iid designs: VAMP = GAMP

def test_vamp_and_gamp_reach_the_same_fixed_point_mse_on_iid_designs():
    """Bernoulli-Gauss linear model on iid X: the per-seed difference of the two fixed-point MSEs is zero
    within 4 standard errors + 1/d, and both are the SE's."""
    prior, channel, alpha, d = dn.BernoulliGauss(0.3), dn.Linear(1e-3), 0.6, 2000
    v_mse, g_mse = [], []
    for s in range(3):
        inst = amp.teacher_student(d, alpha, prior, channel, seed=s)
        v = amp.vamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=100, tol=1e-6)
        g = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=300, tol=1e-6)
        assert v.converged and g.converged, (v.message, g.message)
        v_mse.append(v.history["mse"][-1]), g_mse.append(g.history["mse"][-1])
    diff = np.array(v_mse) - np.array(g_mse)
    assert abs(diff.mean()) <= 4 * diff.std(ddof=1) / math.sqrt(3) + 1.0 / d
    assert np.max(np.abs(diff) / np.array(g_mse)) < 0.01
    fixed_point = se.gamp(prior, channel, alpha=alpha, max_iter=400, tol=1e-12).history["mse"][-1]
    assert_tracks(np.array(v_mse)[:, None], [fixed_point], d, "VAMP at its fixed point")


@pytest.mark.parametrize("prior, channel, alpha", [(dn.BernoulliGauss(0.3), dn.Linear(1e-3), 0.6),
                                                   (dn.Gaussian(), dn.Sign(), 2.0)])
def test_vamp_se_on_the_marchenko_pastur_spectrum_is_the_gamp_se(prior, channel, alpha):
    """The SE fixed points agree; the spectrum is a 1200-sample draw of the Marchenko-Pastur law, whose
    sampling error moves the MSE by ~1e-3 relative."""
    d = 2000 if alpha < 1 else 1000
    s = np.linalg.svd(np.random.default_rng(5).standard_normal((round(alpha * d), d)), compute_uv=False)
    v = se.vamp(prior, channel, alpha, s, max_iter=300, tol=1e-12).history["mse"][-1]
    g = se.gamp(prior, channel, alpha=alpha, max_iter=400, tol=1e-12).history["mse"][-1]
    assert v == pytest.approx(g, rel=5e-3)


# ------------------------------------------------------------------ closed forms

def test_gaussian_prior_linear_channel_vamp_is_the_exact_posterior_mean():
    """Gaussian prior, Gaussian noise: VAMP's fixed point is (A^T A / Delta + I)^{-1} A^T y / Delta, whatever
    the spectrum, and the SE's MSE is E_lambda[1 / (lambda / Delta + 1)]."""
    d, alpha, delta = 300, 0.8, 0.05
    prior, channel = dn.Gaussian(), dn.Linear(delta)
    inst = amp.teacher_student(d, alpha, prior, channel, seed=0, condition_number=30.0)
    run = amp.vamp(inst.X, inst.y, prior, channel, max_iter=50, tol=1e-12)
    A = inst.X / math.sqrt(d)
    exact = np.linalg.solve(A.T @ A / delta + np.eye(d), A.T @ inst.y / delta)
    assert run.converged
    np.testing.assert_allclose(run.W[:, 0], exact, rtol=1e-8, atol=1e-10)
    lam, weights = eigenvalue_law(inst.spectrum, alpha)
    mmse = float(weights @ (1.0 / (lam / delta + 1.0)))
    curve = se.vamp(prior, channel, alpha, inst.spectrum, max_iter=100, tol=1e-14)
    assert curve.history["mse"][-1] == pytest.approx(mmse, rel=1e-8)


def test_eigenvalue_law_is_normalised_like_the_design():
    lam, w = eigenvalue_law([3.0, 2.0, 1.0], 0.5)
    assert w.sum() == pytest.approx(1.0) and w[-1] == pytest.approx(0.5) and lam[-1] == 0.0
    assert float(w @ lam) == pytest.approx(0.5)  # E_lambda[lambda] = tr(X^T X) / d^2 = n / d
    lam, w = eigenvalue_law([3.0, 2.0, 1.0], 2.0)
    assert float(w @ lam) == pytest.approx(2.0) and lam.size == 3


# ------------------------------------------------------------------ teacher_student with a spectrum

@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_rotationally_invariant_design_has_the_prescribed_spectrum(alpha):
    d, kappa = 400, 100.0
    inst = amp.teacher_student(d, alpha, dn.Gaussian(), dn.Linear(0.1), seed=1, condition_number=kappa)
    n, r = inst.n, min(inst.n, d)
    s = np.linalg.svd(inst.X, compute_uv=False)
    np.testing.assert_allclose(s, inst.spectrum, rtol=1e-10)
    assert s[0] / s[-1] == pytest.approx(kappa) and np.allclose(np.diff(np.log(s)), -math.log(kappa) / (r - 1))
    assert np.sum(inst.X ** 2) == pytest.approx(n * d)  # E[x_mu . x_mu] / d = 1, as for iid X
    U, sv, Vt = inst.svd
    np.testing.assert_allclose(U.T @ U, np.eye(r), atol=1e-12)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(r), atol=1e-12)
    np.testing.assert_allclose((U * sv) @ Vt, inst.X, atol=1e-10)
    np.testing.assert_allclose(inst.y, inst.X @ inst.W[:, 0] / math.sqrt(d), atol=5 * math.sqrt(0.1))


def test_haar_columns_are_haar_distributed():
    """With the signs of diag(R) moved into Q, Q[0, 0] is symmetric about 0 with E[Q_00^2] = 1/3
    (without the correction, LAPACK's sign convention biases it)."""
    rng = RNG(seed=0)
    first = np.array([to_numpy(haar_columns(3, 3, rng, np.float64))[0, 0] for _ in range(4000)])
    assert abs(first.mean()) < 4 * math.sqrt(1 / 3 / 4000)
    assert np.mean(first ** 2) == pytest.approx(1 / 3, abs=0.02)
    assert abs(np.mean(first > 0) - 0.5) < 0.03


def test_prescribed_spectrum_is_used_up_to_scale():
    d, alpha = 200, 0.5
    shape = np.linspace(1.0, 3.0, 100)
    inst = amp.teacher_student(d, alpha, dn.Gaussian(), dn.Sign(), seed=0, spectrum=shape)
    np.testing.assert_allclose(inst.spectrum, shape * math.sqrt(100 * 200 / np.sum(shape ** 2)))
    np.testing.assert_allclose(np.sort(np.linalg.svd(inst.X, compute_uv=False)), np.sort(inst.spectrum), rtol=1e-10)


def test_spectrum_arguments_are_checked():
    args = (100, 0.5, dn.Gaussian(), dn.Linear(0.1))
    with pytest.raises(ValueError, match="condition_number"):
        amp.teacher_student(*args, condition_number=0.5)
    with pytest.raises(ValueError, match="spectrum"):
        amp.teacher_student(*args, spectrum=np.ones(10))
    with pytest.raises(ValueError, match="spectrum"):
        amp.teacher_student(*args, spectrum=np.full(50, np.nan))
    with pytest.raises(ValueError, match="not both"):
        amp.teacher_student(*args, condition_number=10, spectrum=np.ones(50))
    with pytest.raises(ValueError, match="tokens"):
        amp.teacher_student(100, 0.5, dn.Gaussian(), TwoTokens(), tokens=2, condition_number=10)


class TwoTokens(dn.OutputDenoiser):
    """A test channel on L = 2 tokens: y = z_1 + z_2."""

    tokens = 2

    def sample(self, Z, rng):
        return namespace(Z).sum(Z[:, :, 0], axis=1)


def test_rotationally_invariant_instances_are_reproducible_and_iid_ones_unchanged():
    args = (150, 0.7, dn.Rademacher(), dn.Sign())
    a = amp.teacher_student(*args, seed=3, condition_number=10)
    b = amp.teacher_student(*args, seed=3, condition_number=10)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    iid = amp.teacher_student(*args, seed=3)
    assert iid.svd is None and iid.spectrum is None and np.array_equal(iid.W, a.W)


def test_rotationally_invariant_design_on_torch():
    pytest.importorskip("torch")
    xp = backend_namespace("torch")
    inst = amp.teacher_student(200, 0.5, dn.Gaussian(), dn.Linear(0.1), seed=0, condition_number=10, backend="torch",
                               dtype="float32")
    assert namespace(inst.X) is xp and inst.X.dtype == xp.float32 and namespace(inst.svd[0]) is xp
    s = np.linalg.svd(to_numpy(inst.X).astype(float), compute_uv=False)
    np.testing.assert_allclose(s, inst.spectrum, rtol=1e-4)


# ------------------------------------------------------------------ backends, inputs, divergence

def test_vamp_runs_on_every_backend_with_the_same_iterates(backend, xp):
    """init_overlap = 0 is a deterministic start: the same instance on NumPy and on `backend` gives the same history."""
    prior, channel = dn.BernoulliGauss(0.3), dn.Linear(1e-3)
    inst = amp.teacher_student(300, 0.6, prior, channel, seed=0, condition_number=20)
    ref = amp.vamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=8, tol=0.0)
    run = amp.vamp(xp.asarray(inst.X), xp.asarray(inst.y), prior, channel, truth=xp.asarray(inst.W), max_iter=8,
                   tol=0.0)
    assert namespace(run.W) is namespace(xp.asarray(inst.X))
    np.testing.assert_allclose(run.history["mse"], ref.history["mse"], rtol=1e-7)
    with_svd = amp.vamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=8, tol=0.0, svd=inst.svd)
    np.testing.assert_allclose(with_svd.history["mse"], ref.history["mse"], rtol=1e-9)


def test_vamp_bad_inputs_raise_value_errors_naming_the_argument():
    prior, channel = dn.Gaussian(), dn.Linear(0.1)
    inst = amp.teacher_student(50, 0.6, prior, channel, seed=0, condition_number=5)
    X, y = inst.X, inst.y
    with pytest.raises(ValueError, match="X"):
        amp.vamp(X[:, :, None], y, prior, channel)
    with pytest.raises(ValueError, match="X contains NaN"):
        amp.vamp(np.where(X > 1, np.nan, X), y, prior, channel)
    with pytest.raises(ValueError, match="y has"):
        amp.vamp(X, y[:-1], prior, channel)
    with pytest.raises(ValueError, match="truth"):
        amp.vamp(X, y, prior, channel, truth=inst.W[:-1])
    with pytest.raises(ValueError, match="init_overlap"):
        amp.vamp(X, y, prior, channel, init_overlap=1.0)
    with pytest.raises(ValueError, match="svd"):
        amp.vamp(X, y, prior, channel, svd=(inst.svd[0], inst.svd[1][:-1], inst.svd[2]))
    with pytest.raises(ValueError, match="damping"):
        amp.vamp(X, y, prior, channel, damping=2.0)
    with pytest.raises(ValueError, match="alpha"):
        se.vamp(prior, channel, 0.0, inst.spectrum)
    with pytest.raises(ValueError, match="spectrum"):
        se.vamp(prior, channel, 0.6, [0.0, 0.0])


class NaNAfter(dn.GaussMixture):
    """N(0, 1) whose f_in returns NaN from its `calls`-th call on (a test prior)."""

    def __init__(self, calls):
        super().__init__([1.0], [0.0], [1.0])
        self.calls = calls

    def f_in(self, B, A):
        self.calls -= 1
        W, C = super().f_in(B, A)
        return (W * math.nan, C) if self.calls <= 0 else (W, C)


def test_vamp_divergence_is_detected_and_reported():
    inst = amp.teacher_student(100, 0.6, dn.Gaussian(), dn.Linear(0.1), seed=0, condition_number=5)
    with pytest.warns(amp.DivergenceWarning, match="iteration 3"):
        run = amp.vamp(inst.X, inst.y, NaNAfter(4), dn.Linear(0.1), truth=inst.W, max_iter=10, tol=0.0)
    assert run.diverged and run.n_iter == 2 and np.all(np.isfinite(run.W)) and len(run.history["mse"]) == 3


# ------------------------------------------------------------------ demo

def test_vamp_demo_prints_table_and_writes_png(tmp_path, capsys, load_demo):
    demo = load_demo("vamp_demo")
    out = tmp_path / "vamp.png"
    demo.main(["--d", "300", "--seeds", "2", "--iterations", "4", "--out", str(out)])
    text = capsys.readouterr().out
    assert "SE mse" in text and len([line for line in text.splitlines() if line.strip()[:1].isdigit()]) >= 5
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
