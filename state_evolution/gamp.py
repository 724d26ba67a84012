"""Bayes-optimal (Nishimori) state evolution of GAMP, twin of `amp.gamp` (k = L = 1).

With rho = E[w^2] and V^t = rho - q^t:
    q_hat^t = alpha E[g_out(y, omega, V^t)^2],  omega = sqrt(q^t) xi,  z = omega + sqrt(V^t) zeta,  y ~ P_out(.|z)
    q^{t+1} = E[f_in(B, q_hat^t)^2],             B = q_hat^t w* + sqrt(q_hat^t) xi,  w* ~ P_in
    MSE^{t+1} = rho - q^{t+1}.
Entry t of the history pairs with entry t of an `amp.gamp` run under the same init_overlap:
q^0 = mu^2 + eps (rho - mu^2). Damping eta < 1 gives q <- (1 - eta) q + eta q^{t+1}: the same
fixed points as damped AMP, but not its trajectory (damped AMP has a memory that a scalar
recursion does not track), so compare damped runs at convergence only.
"""
import math

import numpy as np

from amp.results import IterationResult
from amp.validation import check_compatible, check_count, check_positive, check_unit_interval
from state_evolution.integrate import Nodes, input_expectation, output_expectation

#: V = rho - q is kept above this fraction of rho (the MSE floor of the SE)
MIN_VARIANCE_FRACTION = 1e-12


def q_hat_bayes(channel, alpha, q, rho, nodes=Nodes()):
    """alpha E[g_out^2] on the Nishimori line at overlap q (scalar)."""
    V = rho - q
    g2 = output_expectation(channel, lambda y, Omega: channel.g_out(y, Omega, np.array([[V]]))[0][:, 0, 0] ** 2,
                            math.sqrt(q), math.sqrt(q), math.sqrt(V), V, nodes)
    return alpha * float(g2)


def q_bayes(prior, q_hat, nodes=Nodes()):
    """E[f_in(B, q_hat)^2] on the Nishimori line, B = q_hat w* + sqrt(q_hat) xi (scalar)."""
    A = np.array([[q_hat]])
    return float(input_expectation(prior, lambda B, w: prior.f_in(B, A)[0][:, 0] ** 2, q_hat, q_hat, nodes))


def gamp(prior, channel, alpha, max_iter=100, tol=1e-8, damping=1.0, init_overlap=0.01, nodes=Nodes()):
    """Iterate the Bayes-optimal SE of GAMP for `prior` and `channel` at sample ratio alpha.

    Returns an IterationResult whose history has lists `mse`, `m`, `q`, `q_hat` (entry 0 the
    initial state; q_hat[t] is computed from q[t]) and `residual` = |q^t - q^{t-1}|.
    Stops when the residual falls below tol.
    """
    alpha = check_positive("alpha", alpha)
    max_iter = check_count("max_iter", max_iter)
    tol = float(tol)
    if not tol >= 0.0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    damping = check_unit_interval("damping", damping, open_left=True)
    init_overlap = check_unit_interval("init_overlap", init_overlap)
    check_compatible(prior, channel, channel.tokens)
    if prior.k != 1 or channel.tokens != 1:
        raise ValueError(f"state_evolution.gamp handles k = L = 1 denoisers, got prior and channel with "
                         f"k = {prior.k} and channel.tokens = {channel.tokens}")
    rho = float(prior.second_moment()[0, 0])
    mu2 = float(prior.mean()[0]) ** 2
    q_max = rho - MIN_VARIANCE_FRACTION * rho
    q = min(mu2 + init_overlap * (rho - mu2), q_max)
    history = {"mse": [], "m": [], "q": [], "q_hat": [], "residual": []}
    result = IterationResult(history=history)

    def record(q, residual):
        q_hat = q_hat_bayes(channel, alpha, q, rho, nodes)
        for key, value in (("mse", rho - q), ("m", q), ("q", q), ("q_hat", q_hat), ("residual", residual)):
            history[key].append(value)
        return q_hat

    q_hat = record(q, math.inf)
    for t in range(max_iter):
        q_new = (1.0 - damping) * q + damping * q_bayes(prior, q_hat, nodes)
        if not math.isfinite(q_new) or not math.isfinite(q_hat):
            result.diverged = True
            result.message = f"state evolution produced NaN/Inf at iteration {t + 1}"
            break
        q_new = min(q_new, q_max)
        residual = abs(q_new - q)
        q = q_new
        q_hat = record(q, residual)
        if result.reached_tol(t, residual, tol):
            break
    else:
        result.message = f"reached max_iter = {max_iter}"
    return result
