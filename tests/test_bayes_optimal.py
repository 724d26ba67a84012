"""Bayes-optimal analysis: thresholds against the literature, free-entropy consistency,
error curves against closed forms, and AMP landing on the predicted branch."""
import math

import numpy as np
import pytest

import amp
import denoisers as dn
from state_evolution.bayes_optimal import NishimoriSE, bayes_optimal


@pytest.fixture(scope="module")
def rademacher_perceptron():
    return bayes_optimal(dn.Rademacher(), dn.Sign(), np.linspace(1.0, 2.0, 11))


@pytest.fixture(scope="module")
def phase_retrieval():
    return bayes_optimal(dn.Gaussian(), dn.Abs(), np.linspace(0.3, 1.5, 13))


def test_rademacher_perceptron_thresholds_match_literature(rademacher_perceptron):
    """alpha_alg = 1.493 (Barbier et al., PNAS 2019); alpha_IT = 1.245, the zero of the
    entropy of the uninformative branch (Gyorgyi 1990; Sompolinsky, Tishby, Seung 1990)."""
    bo = rademacher_perceptron
    assert bo.transition == "first-order" and bo.alpha_weak is None
    assert bo.alpha_alg == pytest.approx(1.493, abs=1e-3)
    assert bo.alpha_it == pytest.approx(1.245, abs=1e-3)
    # the Bayes-optimal error drops to zero at alpha_IT, AMP's (uninformative branch) at alpha_alg
    assert np.all(bo.mse[bo.alphas > bo.alpha_it + 1e-3] < 1e-9)
    assert np.all(bo.mse[bo.alphas < bo.alpha_it - 1e-3] > 0.1)
    assert np.all(bo.uninformative.mse[bo.alphas < bo.alpha_alg - 1e-3] > 0.1)


def test_phase_retrieval_thresholds_match_literature(phase_retrieval):
    """Noiseless real phase retrieval, Gaussian prior: alpha_weak = 1/2, alpha_IT = 1,
    alpha_alg = 1.13 (Barbier et al., PNAS 2019)."""
    bo = phase_retrieval
    assert bo.alpha_weak == pytest.approx(0.5, abs=1e-3)
    assert bo.alpha_it == pytest.approx(1.0, abs=1e-3)
    assert bo.alpha_alg == pytest.approx(1.13, abs=5e-3)
    below = bo.alphas < bo.alpha_weak
    assert np.all(bo.uninformative.q[below] == 0.0) and np.all(bo.uninformative.q[~below] > 0.0)


def test_noiseless_compressed_sensing_it_threshold_is_the_sparsity():
    """Noiseless linear model, Bernoulli-Gauss prior: alpha_IT = rho (Wu and Verdu 2012)."""
    bo = bayes_optimal(dn.BernoulliGauss(0.3), dn.Linear(0.0), np.linspace(0.2, 0.6, 5))
    assert bo.alpha_it == pytest.approx(0.3, abs=1e-3)
    assert bo.alpha_it < bo.alpha_alg


@pytest.mark.parametrize("prior, channel, alpha", [
    (dn.Gaussian(), dn.Sign(), 1.5),
    (dn.Rademacher(), dn.Sign(), 1.1),
    (dn.Gaussian(), dn.ReLU(0.1), 0.8),
    (dn.BernoulliGauss(0.3), dn.Linear(1e-2), 0.7),
], ids=["gauss-sign", "rademacher-sign", "gauss-relu", "bg-linear"])
def test_free_entropy_derivative_in_alpha_is_psi_out(prior, channel, alpha):
    """Along a branch dPhi/dalpha = Psi_out(q*) (stationarity of Phi in q and q_hat), checked
    with a central difference of the free entropy at the fixed points."""
    se = NishimoriSE(prior, channel)
    h = 1e-4

    def phi(a):
        q = se.branches(a)[0]
        return se.free_entropy(q, a)[0]

    numerical = (phi(alpha + h) - phi(alpha - h)) / (2 * h)
    assert numerical == pytest.approx(se.psi_out(se.branches(alpha)[0]), rel=1e-5)


def test_gaussian_perceptron_gen_error_is_arccos_of_overlap():
    """Sign channel, Gaussian prior: the Bayes predictor sign(omega) errs with probability
    arccos(sqrt(q / rho)) / pi."""
    bo = bayes_optimal(dn.Gaussian(), dn.Sign(), np.linspace(0.5, 3.0, 6))
    assert bo.transition is None and bo.alpha_it is None
    np.testing.assert_allclose(bo.gen_error, np.arccos(np.sqrt(bo.uninformative.q)) / math.pi, rtol=1e-8)
    assert np.all(np.diff(bo.gen_error) < 0)


def test_fifty_alphas_with_both_branches_is_fast():
    import time
    start = time.process_time()
    bo = bayes_optimal(dn.Gaussian(), dn.Abs(), np.linspace(0.2, 2.0, 50))
    assert bo.alpha_alg is not None
    # generous bound (the note reports the measured time); the claim is "under a minute"
    assert time.process_time() - start < 60.0


@pytest.mark.parametrize("alpha, branch", [(1.3, "uninformative"), (1.7, "informative")])
def test_amp_lands_on_the_predicted_branch(rademacher_perceptron, alpha, branch):
    """Rademacher perceptron at d = 4000: below alpha_alg AMP from a small overlap stays on
    the uninformative branch, above it reaches perfect recovery. Tolerance: finite-size
    fluctuations of the MSE, 5 sqrt(2 / d) times its scale, plus 1/d."""
    bo = bayes_optimal(dn.Rademacher(), dn.Sign(), [1.0, alpha])
    predicted = getattr(bo, branch).mse[-1]
    d = 4000
    inst = amp.teacher_student(d=d, alpha=alpha, prior=dn.Rademacher(), channel=dn.Sign(), seed=7)
    run = amp.gamp(inst.X, inst.y, dn.Rademacher(), dn.Sign(), truth=inst.W, max_iter=200, tol=1e-7,
                   init_overlap=0.01, seed=8)
    assert not run.diverged, run.message
    final = run.history["mse"][-1]
    assert abs(final - predicted) <= 5 * math.sqrt(2 / d) * max(predicted, 1e-3) + 1 / d
    if branch == "uninformative":  # below alpha_alg the informative branch (perfect recovery) is far away
        assert abs(final - bo.informative.mse[-1]) > 0.1
    else:
        assert run.converged and final < 1e-6
