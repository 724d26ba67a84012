"""The state evolution's integrals: closed forms, independent 1-D integrals, Nishimori identities."""
import math

import numpy as np
import pytest
from scipy import integrate, special

import denoisers as dn
import state_evolution as se
from state_evolution.gamp import q_bayes, q_hat_bayes

CHANNELS = [dn.Linear(0.1), dn.Sign(), dn.Sign(0.1), dn.ReLU(), dn.ReLU(0.1), dn.Abs(), dn.Abs(0.1), dn.Door(0.674)]
PRIORS = [dn.Gaussian(), dn.Gaussian(0.5, 2.0), dn.Rademacher(), dn.BernoulliGauss(0.3),
          dn.GaussMixture([0.2, 0.8], [-1.0, 2.0], [0.5, 0.1])]


def test_se_matches_closed_form_recursion_gaussian_prior_linear_channel():
    """Gaussian prior N(0, 1), AWGN noise D: q_hat = alpha / (D + 1 - q), q' = q_hat / (1 + q_hat)."""
    alpha, D, eps = 0.7, 0.05, 0.01
    hist = se.gamp(dn.Gaussian(), dn.Linear(D), alpha=alpha, max_iter=20, tol=0.0, init_overlap=eps).history
    q = eps
    for t in range(21):
        q_hat = alpha / (D + 1.0 - q)
        assert hist["q"][t] == pytest.approx(q, rel=1e-10)
        assert hist["q_hat"][t] == pytest.approx(q_hat, rel=1e-10)
        q = q_hat / (1.0 + q_hat)


@pytest.mark.parametrize("q", [0.1, 0.7, 0.999])
def test_sign_q_hat_matches_one_dimensional_integral(q):
    """Sign channel, rho = 1: q_hat = alpha E_xi sum_y Phi(u) (N(u) / Phi(u))^2 / V, u = y sqrt(q) xi / sqrt(V)."""
    alpha, V = 1.3, 1.0 - q

    def integrand(xi):
        u = math.sqrt(q) * xi / math.sqrt(V)
        total = 0.0
        for y in (-1.0, 1.0):
            log_phi = special.log_ndtr(y * u)
            total += math.exp(2 * (-0.5 * u * u - 0.5 * math.log(2 * math.pi)) - log_phi) / V
        return total * math.exp(-0.5 * xi * xi) / math.sqrt(2 * math.pi)

    scale = math.sqrt(V / q)
    ref = alpha * integrate.quad(integrand, -12, 12, points=[-scale, 0.0, scale], limit=400, epsrel=1e-12)[0]
    assert q_hat_bayes(dn.Sign(), alpha, q, 1.0) == pytest.approx(ref, rel=1e-8)


@pytest.mark.parametrize("channel", CHANNELS, ids=repr)
@pytest.mark.parametrize("q", [0.3, 0.9, 0.9999])
def test_output_nishimori_identity_e_g2_equals_minus_e_dg(channel, q):
    """On the Nishimori line E[g_out^2] = -E[d g_out / d omega]: checks g, dg, the label law and the
    kink-aware quadrature together."""
    V = 1.0 - q
    Vm = np.array([[V]])

    def fn(y, Omega):
        g, dg = channel.g_out(y, Omega, Vm)
        return g[:, 0, 0] ** 2, dg[:, 0, 0, 0, 0]

    e_g2, e_dg = se.output_expectation(channel, fn, math.sqrt(q), math.sqrt(q), math.sqrt(V), V)
    assert e_g2 == pytest.approx(-e_dg, rel=1e-6)


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
@pytest.mark.parametrize("q_hat", [0.2, 3.0, 500.0])
def test_input_nishimori_identities(prior, q_hat):
    """On the Nishimori line E[What^2] = E[What w*] and E[Chat] = rho - E[What^2]."""
    A = np.array([[q_hat]])

    def fn(B, w):
        W, C = prior.f_in(B, A)
        return W[:, 0] ** 2, W[:, 0] * w[:, 0], C[:, 0, 0]

    e_w2, e_ww, e_c = se.input_expectation(prior, fn, q_hat, q_hat)
    rho = prior.second_moment()[0, 0]
    assert e_w2 == pytest.approx(e_ww, rel=1e-8)
    assert e_c == pytest.approx(rho - e_w2, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("prior", PRIORS, ids=repr)
def test_q_bayes_is_monotone_between_mu2_and_rho(prior):
    rho, mu2 = prior.second_moment()[0, 0], prior.mean()[0] ** 2
    qs = [q_bayes(prior, qh) for qh in (0.0, 0.1, 1.0, 10.0, 1e3, 1e6)]
    assert qs[0] == pytest.approx(mu2, abs=1e-12)
    assert np.all(np.diff(qs[:-1]) > 0) and qs[-1] <= rho and qs[-1] == pytest.approx(rho, rel=1e-4)


def test_se_stops_at_tol_and_records_entry_zero():
    hist = se.gamp(dn.Rademacher(), dn.Sign(), alpha=2.0, max_iter=200, tol=1e-9).history
    assert hist["residual"][0] == math.inf and hist["residual"][-1] < 1e-9
    assert len(hist["mse"]) == len(hist["q_hat"]) < 201
