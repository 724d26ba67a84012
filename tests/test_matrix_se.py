"""The matrix-valued state evolution (k > 1 or L > 1) on the Gaussian rules of
`state_evolution.gaussian`, checked where it must agree with the scalar SE (k = L = 1
denoisers sent through the matrix route) and where its expectations have closed forms."""
import numpy as np
import pytest

import denoisers as dn
from state_evolution.gamp import psd_sqrt, q_bayes, q_hat_bayes, q_hat_matrix, q_matrix
from state_evolution.gaussian import GaussianRule, gaussian_expectation

ONE = np.array([[1.0]])


@pytest.mark.parametrize("q", [0.1, 0.5])
def test_finite_label_route_matches_scalar_se_for_sign(q):
    """Sign has the label set (-1, 1): the matrix route sums the labels and integrates xi only;
    its integrand is analytic in xi, so Gauss-Hermite reaches the scalar SE's 1e-9 accuracy."""
    value, error = q_hat_matrix(dn.Sign(), 2.0, np.array([[q]]), ONE)
    assert abs(value[0, 0] - q_hat_bayes(dn.Sign(), 2.0, q, 1.0)) < 1e-9
    assert error[0, 0] < 1e-9


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_generic_route_matches_scalar_se_for_linear(q):
    """Linear has continuous labels: the route over (xi, zeta, label noise) is exact for it."""
    value, _ = q_hat_matrix(dn.Linear(0.1), 2.0, np.array([[q]]), ONE)
    assert abs(value[0, 0] - q_hat_bayes(dn.Linear(0.1), 2.0, q, 1.0)) < 1e-12


@pytest.mark.parametrize("prior", [dn.Gaussian(), dn.Rademacher(), dn.BernoulliGauss(0.3)], ids=repr)
def test_input_side_matches_scalar_se(prior):
    for q_hat in (0.1, 1.0):
        value, error = q_matrix(prior, np.array([[q_hat]]))
        assert abs(value[0, 0] - q_bayes(prior, q_hat)) < max(1e-6, 10 * error[0, 0])


def test_quasi_monte_carlo_estimate_lies_within_its_reported_error():
    """Forced to randomised QMC, the estimate of E[u1^2 u2^2 cos(u3)] = e^{-1/2} (closed form) falls
    within 5 of its reported standard errors, and that error is small but not zero."""
    rule = GaussianRule(max_points=10, qmc_log2=10, repeats=8)
    value, error = gaussian_expectation(lambda u: u[:, 0] ** 2 * u[:, 1] ** 2 * np.cos(u[:, 2]), 3, rule)
    assert 0 < error < 0.02
    assert abs(value - np.exp(-0.5)) < 5 * error


def test_tensor_hermite_is_exact_for_polynomials():
    value, error = gaussian_expectation(lambda u: u[:, 0] ** 4 * u[:, 1] ** 2, 2)
    assert abs(value - 3.0) < 1e-12 and error < 1e-12


def test_psd_sqrt_squares_back_and_clips_negative_eigenvalues():
    M = np.array([[2.0, 0.5], [0.5, 1.0]])
    assert np.allclose(psd_sqrt(M) @ psd_sqrt(M), M, atol=1e-14)
    assert np.allclose(psd_sqrt(-M), 0.0)
