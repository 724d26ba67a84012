"""State evolution predicts GAMP iteration by iteration on large random instances.

Tolerance at iteration t: the seed average of AMP's MSE may differ from the SE by
    4 s_t / sqrt(S) + 1 / d,
where s_t is the spread of the MSE across the S seeds (finite-size fluctuations of one
run are O(1/sqrt(d)), so the mean of S independent runs fluctuates by s_t / sqrt(S); four
standard errors keep the false-alarm rate below 1e-4 per iteration) and 1/d bounds the
O(1/d) finite-size bias of the mean. An SE that is off by a few per cent of the MSE fails.
"""
import numpy as np
import pytest

import amp
import denoisers as dn
import state_evolution as se

D = 2000
SEEDS = 6


def amp_mse_runs(prior, channel, alpha, init_overlap, max_iter):
    runs = []
    for s in range(SEEDS):
        inst = amp.teacher_student(d=D, alpha=alpha, prior=prior, channel=channel, seed=s)
        run = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=max_iter, tol=0.0,
                       init_overlap=init_overlap, seed=1000 + s)
        assert not run.diverged, run.message
        runs.append(run.history["mse"])
    return np.array(runs)


CASES = {
    "sign_perceptron_gaussian_prior": (dn.Gaussian(), dn.Sign(), 2.0, 0.01, 15),
    "sparse_linear_bernoulli_gauss": (dn.BernoulliGauss(0.3), dn.Linear(1e-3), 0.6, 0.01, 30),
    "relu_gaussian_prior": (dn.Gaussian(), dn.ReLU(), 2.0, 0.01, 20),
    "phase_retrieval_small_overlap": (dn.Gaussian(), dn.Abs(), 2.0, 0.1, 20),
}


@pytest.mark.parametrize("case", CASES)
def test_se_predicts_amp_mse_per_iteration(case):
    prior, channel, alpha, eps, T = CASES[case]
    runs = amp_mse_runs(prior, channel, alpha, eps, T)
    curve = np.array(se.gamp(prior, channel, alpha=alpha, max_iter=T, tol=0.0, init_overlap=eps).history["mse"])
    assert runs.shape[1] == curve.size == T + 1
    mean, spread = runs.mean(axis=0), runs.std(axis=0, ddof=1)
    tol = 4.0 * spread / np.sqrt(SEEDS) + 1.0 / D
    worst = np.argmax(np.abs(mean - curve) - tol)
    assert np.all(np.abs(mean - curve) <= tol), (
        f"iteration {worst}: AMP {mean[worst]:.5f} vs SE {curve[worst]:.5f} (tol {tol[worst]:.5f})")
    # the comparison is not vacuous: the MSE moves far more than the typical tolerance
    assert curve[0] - curve[-1] > 10 * np.median(tol)


def test_damped_amp_reaches_the_se_fixed_point():
    """Damping changes the trajectory (damped AMP has memory the scalar SE does not track),
    not the fixed point: damped AMP converges to the undamped SE's fixed point."""
    prior, channel, alpha, eps = dn.Gaussian(), dn.Sign(), 2.0, 0.01
    final = []
    for s in range(SEEDS):
        inst = amp.teacher_student(d=D, alpha=alpha, prior=prior, channel=channel, seed=s)
        run = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=60, tol=1e-6,
                       damping=0.5, init_overlap=eps, seed=1000 + s)
        assert run.converged, run.message
        final.append(run.history["mse"][-1])
    fixed_point = se.gamp(prior, channel, alpha=alpha, max_iter=100, tol=1e-10, init_overlap=eps).history["mse"][-1]
    tol = 4.0 * np.std(final, ddof=1) / np.sqrt(SEEDS) + 1.0 / D
    assert abs(np.mean(final) - fixed_point) <= tol
