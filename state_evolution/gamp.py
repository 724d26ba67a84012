"""Bayes-optimal (Nishimori) state evolution of GAMP, twin of `amp.gamp`.

Order parameter q^t (k, k), rho = E[w w^T], V^t = rho - q^t; per token l = 1..L, with xi_l,
zeta_l ~ N(0, I_k):
    omega_l = (q^t)^{1/2} xi_l,   z_l = omega_l + (V^t)^{1/2} zeta_l,   y ~ P_out(. | Z)
    q_hat^t = alpha E[sum_l g_l g_l^T],                 g = g_out(y, Omega, V^t)      (k, k)
    q^{t+1} = E[f_in(B, q_hat^t) f_in(B, q_hat^t)^T],  B = q_hat^t w* + (q_hat^t)^{1/2} xi,  w* ~ P_in
    MSE^{t+1} = tr(rho - q^{t+1}) / k.
For k = L = 1 the expectations are one-dimensional integrals (`q_hat_bayes`, `q_bayes`, graded at
the channel's kinks). Otherwise (`q_hat_matrix`, `q_matrix`) they are Gaussian expectations in
`state_evolution.gaussian` (tensor Gauss-Hermite for few dimensions, randomised QMC beyond), whose
error estimates the history reports: for a channel with a finite label set the output side sums
the labels with their probabilities exp(log_z_out) and integrates xi only (L k dimensions), any
other channel integrates (xi, zeta) (2 L k dimensions) with the labels of `label_quadrature`; the
input side integrates B, Gaussian given each Gaussian component (mu_j, S_j) of the prior:
B ~ N(q_hat mu_j, q_hat S_j q_hat + q_hat) (k dimensions).

Entry t of the history pairs with entry t of an `amp.gamp` run under the same init_overlap:
q^0 = mu mu^T + eps Cov(w). For k > 1 this start is diagonal in the hidden units (each student unit
a little aligned with its own teacher unit), which breaks their permutation symmetry slightly, so
the specialisation of hidden units shows without extra arguments. Damping eta < 1 gives
q <- (1 - eta) q + eta q^{t+1}: the same fixed points as damped AMP, but not its trajectory (damped
AMP has a memory that this recursion does not track), so compare damped runs at convergence only.
"""
import math

import numpy as np

from amp.results import IterationResult
from amp.validation import check_compatible, check_count, check_positive, check_unit_interval
from state_evolution.gaussian import GaussianRule, gaussian_expectation
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


def psd_sqrt(M):
    """Symmetric square root of a symmetric matrix, negative eigenvalues clipped to 0."""
    lam, U = np.linalg.eigh(0.5 * (M + M.T))
    return (U * np.sqrt(np.clip(lam, 0.0, None))) @ U.T


def q_hat_matrix(channel, alpha, q, rho, rule=GaussianRule()):
    """alpha E[sum_l g_l g_l^T] (k, k) on the Nishimori line at overlap q (k, k), and its error."""
    L, k = channel.tokens, channel.k
    D = L * k
    V = rho - q
    sq, sV = psd_sqrt(q), psd_sqrt(V)

    def outer(g):  # (N, L, k) -> sum_l g_l g_l^T (N, k, k)
        return np.einsum("nla,nlb->nab", g, g)

    if channel.labels is not None and tuple(channel.label_shape) == ():
        def fn(u):  # sum over labels y of P(y | Omega) g g^T
            Omega = u.reshape(-1, L, k) @ sq
            total = 0.0
            for label in channel.labels:
                y = np.full(Omega.shape[0], float(label))
                log_p, g, _ = channel.posterior(y, Omega, V)
                p, gg = np.exp(log_p), outer(g)
                total = total + np.where(p[:, None, None] > 0.0, p[:, None, None] * gg, 0.0)
            return total
        value, error = gaussian_expectation(fn, D, rule)
    else:
        def fn(u):  # labels drawn from the channel at Z = Omega + V^{1/2} zeta
            Omega = u[:, :D].reshape(-1, L, k) @ sq
            Z = Omega + u[:, D:].reshape(-1, L, k) @ sV
            ys, wy = channel.label_quadrature(Z, rule.labels)
            m, N = wy.shape
            Omegas = np.broadcast_to(Omega, (m,) + Omega.shape).reshape(m * N, L, k)
            gg = outer(channel.g_out(ys.reshape((m * N,) + ys.shape[2:]), Omegas, V)[0]).reshape(m, N, k, k)
            return np.einsum("mn,mnab->nab", wy, gg)
        value, error = gaussian_expectation(fn, 2 * D, rule)
    return alpha * _symmetric(value), alpha * error


def q_matrix(prior, q_hat, rule=GaussianRule()):
    """E[f_in(B, q_hat) f_in(B, q_hat)^T] (k, k) on the Nishimori line, and its error."""
    weights, means, covs = prior.components()
    shifts = means @ q_hat  # q_hat mu_j (q_hat symmetric), (J, k)
    roots = np.stack([psd_sqrt(q_hat @ S @ q_hat + q_hat) for S in covs])  # (J, k, k)

    def fn(u):
        B = shifts[:, None, :] + u[None] @ roots  # (J, N, k)
        f = prior.f_in(B.reshape(-1, prior.k), q_hat)[0].reshape(B.shape)
        return np.einsum("j,jna,jnb->nab", weights, f, f)
    value, error = gaussian_expectation(fn, prior.k, rule)
    return _symmetric(value), error


def _symmetric(M):
    return 0.5 * (M + np.swapaxes(M, -1, -2))


def _clip_overlap(q, rho):
    """Project q onto 0 <= q <= rho - floor I (eigenvalues of q and of rho - q clipped)."""
    floor = MIN_VARIANCE_FRACTION * np.trace(rho) / rho.shape[0]
    lam, U = np.linalg.eigh(_symmetric(q))
    q = (U * np.clip(lam, 0.0, None)) @ U.T
    lam, U = np.linalg.eigh(_symmetric(rho - q))
    return rho - (U * np.clip(lam, floor, None)) @ U.T


def gamp(prior, channel, alpha, max_iter=100, tol=1e-8, damping=1.0, init_overlap=0.01, nodes=Nodes(),
         rule=GaussianRule()):
    """Iterate the Bayes-optimal SE of GAMP for `prior` and `channel` at sample ratio alpha.

    nodes : the one-dimensional rules of the k = L = 1 case; rule : the Gaussian rule otherwise.
    Returns an IterationResult whose history has lists `mse`, `m`, `q`, `q_hat` (entry 0 the
    initial state; q_hat[t] is computed from q[t]; floats for k = L = 1, (k, k) arrays else) and
    `residual` = max |q^t - q^{t-1}|; for k > 1 or L > 1 also `q_hat_error` and `q_error`, (k, k)
    arrays of the estimated absolute integration errors of the entries of q_hat[t] and q[t].
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
    scalar = prior.k == 1 and channel.tokens == 1
    rho, mu = np.asarray(prior.second_moment(), dtype=float), np.asarray(prior.mean(), dtype=float)
    q = _clip_overlap(np.outer(mu, mu) + init_overlap * (rho - np.outer(mu, mu)), rho)
    if scalar:
        r = float(rho[0, 0])
        conjugate = lambda q: (np.array([[q_hat_bayes(channel, alpha, float(q[0, 0]), r, nodes)]]), 0.0)  # noqa: E731
        overlap = lambda q_hat: (np.array([[q_bayes(prior, float(q_hat[0, 0]), nodes)]]), 0.0)  # noqa: E731
        history = {"mse": [], "m": [], "q": [], "q_hat": [], "residual": []}
    else:
        conjugate = lambda q: q_hat_matrix(channel, alpha, q, rho, rule)  # noqa: E731
        overlap = lambda q_hat: q_matrix(prior, q_hat, rule)  # noqa: E731
        history = {"mse": [], "m": [], "q": [], "q_hat": [], "residual": [], "q_hat_error": [], "q_error": []}
    result = IterationResult(history=history)
    as_entry = (lambda M: float(M[0, 0])) if scalar else (lambda M: M.copy())  # noqa: E731

    def record(q, q_error, residual):
        q_hat, q_hat_error = conjugate(q)
        entries = {"mse": float(np.trace(rho - q)) / rho.shape[0], "m": as_entry(q), "q": as_entry(q),
                   "q_hat": as_entry(q_hat), "residual": residual,
                   "q_hat_error": q_hat_error, "q_error": q_error}
        for key in history:
            history[key].append(entries[key])
        return q_hat

    q_hat = record(q, np.zeros_like(q), math.inf)
    for t in range(max_iter):
        if not np.all(np.isfinite(q_hat)):
            result.diverged = True
            result.message = f"state evolution produced NaN/Inf at iteration {t}"
            break
        q_new, q_error = overlap(q_hat)
        q_new = (1.0 - damping) * q + damping * q_new
        if not np.all(np.isfinite(q_new)):
            result.diverged = True
            result.message = f"state evolution produced NaN/Inf at iteration {t + 1}"
            break
        q_new = _clip_overlap(q_new, rho)
        residual = float(np.max(np.abs(q_new - q)))
        q = q_new
        q_hat = record(q, q_error, residual)
        if result.reached_tol(t, residual, tol):
            break
    else:
        result.message = f"reached max_iter = {max_iter}"
    return result
