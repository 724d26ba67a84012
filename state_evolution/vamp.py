"""Bayes-optimal state evolution of (G)VAMP, twin of `amp.vamp` (k = L = 1), from the spectrum of the design.

On the Nishimori line every message is an exact Gaussian channel: r_1 = w* + N(0, 1 / gamma_1),
z = p_1 + N(0, 1 / tau_1) with p_1 ~ N(0, rho_z - 1 / tau_1), rho_z = E[z^2] = rho E_lambda[lambda] / alpha.
With lambda the eigenvalues of A^T A = X^T X / d (their empirical distribution over d, zeros included):
    prior:    c_1 = mmse_in(gamma_1) = rho - q_bayes(prior, gamma_1),         gamma_2 = 1 / c_1 - gamma_1
    channel:  v_1 = V - V^2 E[g_out^2] at V = 1 / tau_1, q = rho_z - V,      tau_2 = 1 / v_1 - tau_1
    LMMSE:    c_2 = E_lambda[1 / (tau_2 lambda + gamma_2)],                    gamma_1 = 1 / c_2 - gamma_2
              v_2 = E_lambda[lambda / (tau_2 lambda + gamma_2)] / alpha,       tau_1 = 1 / v_2 - tau_2
(Rangan, Schniter, Fletcher 2019; Schniter, Rangan, Fletcher 2016). Entry t of the history pairs
with entry t of `amp.vamp`: q^t = m^t = q_bayes(prior, gamma_1^t), mse^t = rho - q^t.
"""
import math

import numpy as np

from amp.results import IterationResult
from amp.validation import check_compatible, check_count, check_positive
from state_evolution.gamp import q_bayes, q_hat_bayes
from state_evolution.integrate import Nodes


def eigenvalue_law(spectrum, alpha):
    """Eigenvalues (J,) and weights (J,) of the empirical law of X^T X / d over its d eigenvalues.

    spectrum : (r,) singular values of X, up to scale; they are scaled to sum s^2 = n d, so that the
    r nonzero eigenvalues s^2 / d have mean max(alpha, 1); for alpha < 1 a fraction 1 - alpha of the
    d eigenvalues are zeros.
    """
    s = np.asarray(spectrum, dtype=float)
    if s.ndim != 1 or s.size == 0 or not (np.all(np.isfinite(s)) and np.all(s >= 0) and np.any(s > 0)):
        raise ValueError("spectrum must be a 1-d array of finite singular values >= 0, not all zero")
    lam = s * s * (max(alpha, 1.0) / np.mean(s * s))
    weights = np.full(s.size, min(alpha, 1.0) / s.size)
    if alpha < 1.0:
        return np.append(lam, 0.0), np.append(weights, 1.0 - alpha)
    return lam, weights


def vamp(prior, channel, alpha, spectrum, max_iter=50, tol=1e-10, init_overlap=0.0, nodes=Nodes()):
    """Iterate the Bayes-optimal SE of `amp.vamp` for `prior`, `channel`, n / d = alpha and the
    design's singular values `spectrum` (see `eigenvalue_law`; e.g. `Instance.spectrum`).

    init_overlap : eps in [0, 1), gamma_1^0 = eps / ((1 - eps) Var(w)) as in `amp.vamp`;
    tau_1^0 = rho / (rho_z Var(w)).
    Returns an IterationResult whose history has lists `mse`, `m`, `q`, `gamma` (gamma_1), `tau`
    (tau_1) (entry 0 the initial state) and `residual` = |q^t - q^{t-1}|; it stops when the
    residual falls below tol, and is flagged diverged if a precision leaves (0, inf).
    """
    alpha = check_positive("alpha", alpha)
    max_iter = check_count("max_iter", max_iter)
    tol = float(tol)
    if not tol >= 0.0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if not 0.0 <= float(init_overlap) < 1.0:
        raise ValueError(f"init_overlap must lie in [0, 1), got {init_overlap}")
    check_compatible(prior, channel, 1)
    if prior.k != 1:
        raise ValueError(f"state_evolution.vamp handles k = L = 1, the prior has k = {prior.k}")
    lam, weights = eigenvalue_law(spectrum, alpha)
    rho = float(prior.second_moment()[0, 0])
    mu2 = float(prior.mean()[0]) ** 2
    var = rho - mu2
    rho_z = rho * float(weights @ lam) / alpha
    gamma = init_overlap / ((1.0 - init_overlap) * var)
    tau = rho / (rho_z * var)
    q = q_bayes(prior, gamma, nodes) if gamma > 0 else mu2
    history = {"mse": [rho - q], "m": [q], "q": [q], "gamma": [gamma], "tau": [tau], "residual": [math.inf]}
    result = IterationResult(history=history)
    for t in range(max_iter):
        gamma2 = 1.0 / (rho - q) - gamma
        V = 1.0 / tau
        v1 = V - V * V * q_hat_bayes(channel, 1.0, max(rho_z - V, 0.0), rho_z, nodes)
        tau2 = 1.0 / v1 - tau
        shrink = 1.0 / (tau2 * lam + gamma2)
        gamma_new = 1.0 / float(weights @ shrink) - gamma2
        tau_new = 1.0 / (float(weights @ (lam * shrink)) / alpha) - tau2
        if not all(math.isfinite(x) and x > 0 for x in (gamma2, tau2, gamma_new, tau_new)):
            result.diverged = True
            result.message = f"a precision left (0, inf) at iteration {t + 1}"
            break
        gamma, tau = gamma_new, tau_new
        q_new = q_bayes(prior, gamma, nodes)
        residual = abs(q_new - q)
        q = q_new
        for key, value in (("mse", rho - q), ("m", q), ("q", q), ("gamma", gamma), ("tau", tau),
                           ("residual", residual)):
            history[key].append(value)
        if result.reached_tol(t, residual, tol):
            break
    else:
        result.message = f"reached max_iter = {max_iter}"
    return result
