"""Generalised vector AMP (GVAMP; Schniter, Rangan, Fletcher 2016) for y ~ P_out(. | z), z = A w,
A = X / sqrt(d), with any scalar prior and output channel (k = L = 1); VAMP for the linear model
(Rangan, Schniter, Fletcher 2019) is the case of the `Linear` channel, where the output step
returns tau_2 = 1 / noise_var and p_2 = y exactly.

Four steps per iteration, each passing an extrinsic Gaussian message to the next. In terms of the
field B_1 = gamma_1 r_1 (d,) and precision gamma_1 of the prior's pseudo-observation
r_1 = w + N(0, 1 / gamma_1), and of the output's prior z ~ N(p_1, 1 / tau_1) (n,):
    prior:    What_1, Chat_1 = f_in(B_1, gamma_1),  c_1 = <Chat_1>,
              gamma_2 = 1 / c_1 - gamma_1,  r_2 = (What_1 / c_1 - B_1) / gamma_2
    channel:  zhat_1 = p_1 + V g,  v_1 = V + V^2 <dg>  (g, dg = g_out(y, p_1, V), V = 1 / tau_1),
              tau_2 = 1 / v_1 - tau_1,  p_2 = (zhat_1 / v_1 - tau_1 p_1) / tau_2
    LMMSE:    the Gaussian posterior of w with prior N(r_2, 1 / gamma_2) and z = A w ~ N(p_2, 1 / tau_2),
              What_2 = (tau_2 A^T A + gamma_2)^{-1} (tau_2 A^T p_2 + gamma_2 r_2),
              c_2 = tr (tau_2 A^T A + gamma_2)^{-1} / d,  zhat_2 = A What_2,
              v_2 = tr A (tau_2 A^T A + gamma_2)^{-1} A^T / n,
              gamma_1 = 1 / c_2 - gamma_2,  B_1 = What_2 / c_2 - gamma_2 r_2,
              tau_1 = 1 / v_2 - tau_2,  p_1 = (zhat_2 / v_2 - tau_2 p_2) / tau_1.
The LMMSE step runs in the singular basis of X = U diag(s) V^T (computed once, or handed over):
with lambda_i = s_i^2 / d and a = V^T r_2, b = U^T p_2 (r = min(n, d) entries),
    What_2 = r_2 + V [tau_2 (s / sqrt d) (b - (s / sqrt d) a) / (tau_2 lambda + gamma_2)],
    c_2 = (sum_i 1 / (tau_2 lambda_i + gamma_2) + (d - r) / gamma_2) / d,
    v_2 = sum_i lambda_i / (tau_2 lambda_i + gamma_2) / n,
so an iteration costs O((n + d) r) and never solves a linear system.
"""
import math
import warnings

import array_api_compat as aac

from amp.backend import RNG, namespace, to_numpy
from amp.gamp import DIVERGENCE_FACTOR, DivergenceWarning
from amp.results import IterationResult
from amp.validation import check_compatible, check_count, check_finite_array, check_unit_interval


def initial_precision(prior, init_overlap):
    """gamma_1^0 = eps / ((1 - eps) Var(w)): the precision of r_1^0 = w* + N(0, 1 / gamma_1^0) whose
    linear estimate has normalised overlap eps = init_overlap with w* (0 for eps = 0)."""
    var = float(prior.second_moment()[0, 0] - prior.mean()[0] ** 2)
    return init_overlap / ((1.0 - init_overlap) * var)


def _check_inputs(X, y, prior, channel, truth, max_iter, tol, damping, init_overlap, svd):
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got shape {tuple(X.shape)}")
    check_finite_array("X", X)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0]} samples but X has {X.shape[0]} (first axes must agree)")
    channel.check_labels(y)
    check_compatible(prior, channel, 1)
    if prior.k != 1:
        raise ValueError(f"vamp handles k = L = 1, the prior has k = {prior.k}")
    if truth is not None:
        if tuple(truth.shape) != (X.shape[1], 1):
            raise ValueError(f"truth must have shape (d, 1) = {(X.shape[1], 1)}, got {tuple(truth.shape)}")
        check_finite_array("truth", truth)
    check_count("max_iter", max_iter)
    if not float(tol) >= 0.0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    check_unit_interval("damping", damping, open_left=True)
    if not 0.0 <= float(init_overlap) < 1.0:
        raise ValueError(f"init_overlap must lie in [0, 1), got {init_overlap}")
    if svd is not None:
        r = min(X.shape)
        shapes = tuple(tuple(a.shape) for a in svd)
        if shapes != ((X.shape[0], r), (r,), (r, X.shape[1])):
            raise ValueError(f"svd must be (U (n, r), s (r,), Vt (r, d)) with r = min(n, d) = {r}, got shapes {shapes}")


def vamp(X, y, prior, channel, truth=None, max_iter=50, tol=1e-8, damping=1.0, init_overlap=0.0,
         callback=None, seed=None, svd=None):
    """Run (G)VAMP on data (X, y) with a scalar input denoiser `prior` and output denoiser `channel`.

    X : (n, d) array (NumPy, CuPy, PyTorch, ...); y : (n,) labels in the same namespace.
    truth : optional (d, 1) teacher w*, for the recorded m, q and mse (and the informative start).
    damping : eta in (0, 1]: What_1, c_1 and zhat_1, v_1 <- (1 - eta) old + eta new.
    init_overlap : eps in [0, 1): B_1^0 = gamma_1^0 w* + sqrt(gamma_1^0) xi with gamma_1^0 from
    `initial_precision` (mu in place of w* without a truth); the output side starts from the prior
    of z, p_1^0 = A mu 1, 1 / tau_1^0 = Var(w) tr(A^T A) / n. The same start as `state_evolution.vamp`.
    callback : called as callback(t, W, C) after iteration t; returning True stops the run.
    seed : seed of the random initialisation. svd : optional (U (n, r), s (r,), Vt (r, d)) of X
    (e.g. `Instance.svd`), r = min(n, d); computed here otherwise.
    Returns an IterationResult with W = What_1 (d, 1), C = c_1 (1, 1) and history lists `mse`, `m`,
    `q` (with a truth), `gamma` (gamma_1), `tau` (tau_1) and `residual` = ||What_1^t - What_1^{t-1}|| / sqrt(d).
    """
    _check_inputs(X, y, prior, channel, truth, max_iter, tol, damping, init_overlap, svd)
    xp = namespace(X, y)
    n, d = X.shape
    dtype, device = X.dtype, aac.device(X)
    const = lambda a: xp.asarray(a, dtype=dtype, device=device)  # noqa: E731
    if truth is not None:
        truth = xp.astype(truth, dtype)
    U, s, Vt = xp.linalg.svd(X, full_matrices=False) if svd is None else svd
    sigma = s / math.sqrt(d)
    lam = sigma * sigma
    r = s.shape[0]
    mu = float(prior.mean()[0])
    var = float(prior.second_moment()[0, 0]) - mu * mu
    blowup = DIVERGENCE_FACTOR * (1.0 + math.sqrt(float(prior.second_moment()[0, 0])))

    gamma = initial_precision(prior, init_overlap)
    xi = RNG(seed, xp, device).normal((d, 1), dtype=dtype)
    B1 = gamma * (truth if truth is not None else const(mu)) + math.sqrt(gamma) * xi
    tau = n / (var * float(xp.sum(lam)))
    p1 = (U @ (sigma * (Vt @ xp.full((d,), mu, dtype=dtype, device=device))))
    W, C = prior.f_in(B1, const([[gamma]]))
    c1 = float(xp.mean(C))
    history = {key: [] for key in (("mse", "m", "q") if truth is not None else ()) + ("gamma", "tau", "residual")}
    _record(history, _stats(W, W, truth), gamma, tau, d, initial=True)
    result = IterationResult(W=W, C=const([[c1]]), history=history)
    zhat = v1 = None
    for t in range(max_iter):
        # extrinsic message of the prior, then the output denoiser at z ~ N(p_1, 1 / tau_1)
        gamma2 = 1.0 / c1 - gamma
        r2 = (W / c1 - B1)[:, 0] / gamma2
        V = 1.0 / tau
        g, dg = channel.g_out(y, p1[:, None, None], const([[V]]))
        zhat_new, v_new = p1 + V * g[:, 0, 0], V + V * V * float(xp.mean(dg))
        zhat = zhat_new if zhat is None else (1.0 - damping) * zhat + damping * zhat_new
        v1 = v_new if v1 is None else (1.0 - damping) * v1 + damping * v_new
        tau2 = 1.0 / v1 - tau
        bad = _bad_precisions(gamma2=gamma2, tau2=tau2)
        if bad:
            _flag(result, t, bad)
            break
        p2 = (zhat / v1 - tau * p1) / tau2
        # LMMSE in the singular basis
        a, b = Vt @ r2, U.T @ p2
        shrink = 1.0 / (tau2 * lam + gamma2)
        corr = tau2 * sigma * (b - sigma * a) * shrink
        W2 = r2 + corr @ Vt
        c2 = (float(xp.sum(shrink)) + (d - r) / gamma2) / d
        z2 = U @ (sigma * (a + corr))
        v2 = float(xp.sum(lam * shrink)) / n
        gamma_new, tau_new = 1.0 / c2 - gamma2, 1.0 / v2 - tau2
        bad = _bad_precisions(gamma1=gamma_new, tau1=tau_new)
        if bad:
            _flag(result, t, bad)
            break
        B1_new = (W2 / c2 - gamma2 * r2)[:, None]
        p1 = (z2 / v2 - tau2 * p2) / tau_new
        W_new, C_new = prior.f_in(B1_new, const([[gamma_new]]))
        W_new = (1.0 - damping) * W + damping * W_new
        c1_new = (1.0 - damping) * c1 + damping * float(xp.mean(C_new))
        stats = _stats(W_new, W, truth)
        bad = _divergence(stats, c1_new, d, blowup)
        if bad:
            _flag(result, t, bad)
            break
        W, c1, B1, gamma, tau = W_new, c1_new, B1_new, gamma_new, tau_new
        residual = _record(history, stats, gamma, tau, d)
        result.W, result.C, result.n_iter = W, const([[c1]]), t + 1
        if callback is not None and callback(t + 1, W, result.C):
            result.message = f"stopped by callback at iteration {t + 1}"
            break
        if result.reached_tol(t, residual, tol):
            break
    else:
        result.message = f"reached max_iter = {max_iter} (residual {history['residual'][-1]:.3g})"
    return result


def _bad_precisions(**precisions):
    """Which extrinsic precision is not a finite positive number, or ''."""
    for name, value in precisions.items():
        if not (math.isfinite(value) and value > 0.0):
            return f"non-positive or non-finite precision {name} = {value:.3g}"
    return ""


def _flag(result, t, why):
    result.diverged = True
    result.message = f"diverged at iteration {t + 1}: {why}; returning the last finite iterate"
    warnings.warn(result.message, DivergenceWarning, stacklevel=3)


def _stats(W_new, W, truth):
    """[squared residual sum, finite, m, q, squared error sum] on the host, in one transfer."""
    xp = namespace(W_new)
    d = W_new.shape[0]
    parts = [xp.reshape(xp.sum((W_new - W) ** 2), (1,)),
             xp.reshape(xp.astype(xp.all(xp.isfinite(W_new)), W_new.dtype), (1,))]
    if truth is not None:
        parts += [xp.reshape(xp.sum(W_new * truth) / d, (1,)), xp.reshape(xp.sum(W_new * W_new) / d, (1,)),
                  xp.reshape(xp.sum((W_new - truth) ** 2), (1,))]
    return to_numpy(xp.concat(parts)).astype(float)


def _divergence(stats, c1, d, blowup):
    sq_residual, finite = stats[:2]
    if not (finite == 1.0 and math.isfinite(sq_residual) and math.isfinite(c1)):
        return "NaN or Inf in the estimate"
    if math.sqrt(sq_residual / d) > blowup:
        return f"residual {math.sqrt(sq_residual / d):.3g} exploded"
    if not c1 > 0.0:
        return "non-positive posterior variance"
    return ""


def _record(history, stats, gamma, tau, d, initial=False):
    residual = math.inf if initial else math.sqrt(stats[0] / d)
    history["residual"].append(residual)
    history["gamma"].append(gamma)
    history["tau"].append(tau)
    if "mse" in history:
        history["m"].append(float(stats[2]))
        history["q"].append(float(stats[3]))
        history["mse"].append(float(stats[4]) / d)
    return residual
