"""Low-rank matrix AMP (Lesieur, Krzakala, Zdeborová, J. Stat. Mech. 2017) for the spiked models
of `amp.spiked`, with any input denoiser.

Symmetric, Y = X* X*^T / sqrt(n) + sqrt(Delta) W (n, n); iteration t:
    B^t = Y What^t / (sqrt(n) Delta) - What^{t-1} (sum_i Chat_i^t) / (n Delta)     (n, k)
    A^t = What^{tT} What^t / (n Delta)                                            (k, k)
    What^{t+1}, Chat^{t+1} = f_in(B^t, A^t),   What^{-1} = 0.
Rectangular, Y = U* V*^T / sqrt(n) + sqrt(Delta) W (n, m), alpha = m / n; the two sides alternate:
    B_u^t = Y Vhat^t / (sqrt(n) Delta) - Uhat^t (sum_j Chat_v,j^t) / (n Delta),   A_u^t = Vhat^{tT} Vhat^t / (n Delta)
    Uhat^{t+1}, Chat_u^{t+1} = f_u(B_u^t, A_u^t)
    B_v^t = Y^T Uhat^{t+1} / (sqrt(n) Delta) - Vhat^t (sum_i Chat_u,i^{t+1}) / (n Delta),
    A_v^t = Uhat^{t+1 T} Uhat^{t+1} / (n Delta)
    Vhat^{t+1}, Chat_v^{t+1} = f_v(B_v^t, A_v^t),
where the Onsager term of B_u^0 is absent (Vhat^0 was produced by no Uhat). Each Onsager term
carries the iterate that entered the field of the one it corrects: Vhat^t = f_v(B_v^{t-1}) and
B_v^{t-1} is built from Uhat^t. Chat enters through its coordinate mean, d What / d B being the
covariance of the tilted law for any prior.

Spectral initialisation (k = 1, Montanari and Venkataramanan 2021): the start is the fixed point of
the same AMP with a linear denoiser What = s B, whose iterates are the top eigenvector
(singular vectors) of Y. With Y~ = Y / sqrt(n Delta), top eigenvalue lambda_1 = beta + 1/beta
(beta = rho / sqrt(Delta) the spike strength, BBP), squared overlap eps = 1 - 1/beta^2:
    What^{-1} = What^0 = sqrt(n rho eps) phi_1,   Chat^0 = s = sqrt(Delta) / beta,
so that B^0 = beta What^0 / sqrt(Delta) is distributed as the state evolution's field at
M^0 = Q^0 = rho eps. Rectangular: top singular value sigma^2 = theta^2 + 1 + alpha + alpha / theta^2
(theta^2 = alpha rho_u rho_v / Delta), squared overlaps
    eps_u = (1 - alpha / theta^4) / (1 + 1 / theta^2),   eps_v = (1 - alpha / theta^4) / (1 + alpha / theta^2);
Uhat^0 = sqrt(n rho_u eps_u) phi_u, Vhat^0 = sqrt(m rho_v eps_v) phi_v, and the first Onsager
coefficient is chosen so that B_u^0 = (alpha rho_v eps_v / (Delta eps_u)) Uhat^0, the field of the
state evolution at M_v^0 = Q_v^0 = rho_v eps_v.
"""
import math
import warnings

import array_api_compat as aac
import numpy as np
from scipy import linalg

from amp.backend import RNG, namespace, to_numpy
from amp.gamp import DIVERGENCE_FACTOR, DivergenceWarning, initial_state
from amp.results import IterationResult
from amp.validation import check_count, check_finite_array, check_positive, check_unit_interval

INITS = ("informative", "random", "spectral")
#: relative asymmetry of Y tolerated in the symmetric model (rounding of Y = Y^T)
SYMMETRY_RTOL = 1e-6
#: Lanczos steps at most, and the relative Ritz residual at which the top eigenpair is accepted
LANCZOS_STEPS = 300
LANCZOS_RTOL = 1e-10


def lowrank(Y, prior, noise_var, truth=None, max_iter=100, tol=1e-8, damping=1.0, init=None, init_overlap=0.01,
            callback=None, seed=None):
    """Run low-rank AMP on a spiked matrix Y with known noise variance Delta = noise_var.

    Y : (n, n) symmetric array (spiked Wigner) when `prior` is one input denoiser, or (n, m) array
    (spiked Wishart) when `prior` is a pair (prior_u, prior_v); NumPy, CuPy, PyTorch, ...
    truth : optional (n, k) spike X*, or the pair (U*, V*), for the recorded m, q and mse.
    damping : eta in (0, 1]: What <- (1 - eta) What + eta f_in(B, A), same for Chat.
    init : 'informative' (What^0 at normalised overlap init_overlap with the truth, as `amp.gamp`;
    needs truth), 'random' (What^0 = mu + sqrt(init_overlap) xi L, no information) or 'spectral'
    (k = 1, see the module docstring); default 'informative' with a truth, else 'random'.
    callback : called as callback(t, W, C) after iteration t; returning True stops the run.
    seed : seed of the random initialisation.
    Returns an IterationResult: symmetric, W (n, k) and C (k, k), history lists `mse`
    = ||What - X*||^2 / (n k), `m` = What^T X* / n, `q` = What^T What / n (with a truth) and `residual`
    = ||What^t - What^{t-1}||_F / sqrt(n k) (inf at entry 0); rectangular, W = (Uhat, Vhat),
    C = (Chat_u, Chat_v), the same keys per side with suffixes _u, _v and, unsuffixed, the two
    sides stacked ((n + m) rows). The model is invariant under X* -> -X*: m may come out negative.
    """
    rectangular = isinstance(prior, (tuple, list))
    priors = tuple(prior) if rectangular else (prior,)
    _check_inputs(Y, priors, noise_var, truth, max_iter, tol, damping, init, init_overlap, rectangular)
    noise_var = float(noise_var)
    init = init or ("informative" if truth is not None else "random")
    xp = namespace(Y)
    if truth is not None:
        truth = tuple(xp.astype(t, Y.dtype) for t in (truth if rectangular else (truth,)))
    if rectangular:
        return _rectangular(Y, priors, noise_var, truth, max_iter, tol, damping, init, init_overlap, callback, seed)
    return _symmetric(Y, prior, noise_var, truth, max_iter, tol, damping, init, init_overlap, callback, seed)


def _check_inputs(Y, priors, noise_var, truth, max_iter, tol, damping, init, init_overlap, rectangular):
    if Y.ndim != 2:
        raise ValueError(f"Y must be a 2-d array, got shape {tuple(Y.shape)}")
    check_finite_array("Y", Y)
    check_positive("noise_var", noise_var)
    if len(priors) != (2 if rectangular else 1):
        raise ValueError(f"prior must be one input denoiser or a pair (prior_u, prior_v), got {len(priors)}")
    if rectangular and priors[0].k != priors[1].k:
        raise ValueError(f"prior_u has k = {priors[0].k} but prior_v has k = {priors[1].k}")
    if not rectangular:
        if Y.shape[0] != Y.shape[1]:
            raise ValueError(f"Y must be square for the symmetric model, got shape {tuple(Y.shape)}; "
                             f"pass prior=(prior_u, prior_v) for the rectangular one")
        xp = namespace(Y)
        if float(xp.max(xp.abs(Y - Y.T))) > SYMMETRY_RTOL * float(xp.max(xp.abs(Y))):
            raise ValueError("Y must be symmetric for the symmetric model (pass a pair of priors for Y = U V^T)")
    k = priors[0].k
    if truth is not None:
        parts = tuple(truth) if rectangular else (truth,)
        if len(parts) != len(priors):
            raise ValueError("truth must be the pair (U*, V*) for the rectangular model")
        for name, part, rows in zip(("truth[0]", "truth[1]") if rectangular else ("truth",), parts, Y.shape):
            if tuple(part.shape) != (rows, k):
                raise ValueError(f"{name} must have shape {(rows, k)}, got {tuple(part.shape)}")
            check_finite_array(name, part)
    check_count("max_iter", max_iter)
    if not float(tol) >= 0.0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    check_unit_interval("damping", damping, open_left=True)
    check_unit_interval("init_overlap", init_overlap)
    if init not in (None,) + INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "informative" and truth is None:
        raise ValueError("init='informative' needs the truth")
    if init == "spectral" and k != 1:
        raise ValueError(f"init='spectral' handles rank k = 1, the prior has k = {k}")


def _start(prior, rows, init, init_overlap, truth, Y, seed):
    """What^0 (rows, k) and Chat^0 (k, k) of one side for the 'informative' and 'random' starts."""
    xp = namespace(Y)
    return initial_state(prior, rows, init_overlap, truth if init == "informative" else None, xp, Y.dtype,
                         aac.device(Y), seed)


def _oriented(phi, mean):
    """phi (rows, 1) with the sign that aligns sum(phi) with the prior mean (positive for mean 0)."""
    xp = namespace(phi)
    total = float(xp.sum(phi))
    return -phi if (total < 0) == (mean >= 0) else phi


def _symmetric(Y, prior, noise_var, truth, max_iter, tol, damping, init, init_overlap, callback, seed):
    xp = namespace(Y)
    n, k = Y.shape[0], prior.k
    truth_w = None if truth is None else truth[0]
    scale = 1.0 / (math.sqrt(n) * noise_var)
    if init == "spectral":
        W, W_prev, C = _spectral_symmetric(Y, prior, noise_var)
    else:
        W, C = _start(prior, n, init, init_overlap, truth_w, Y, seed)
        W_prev = xp.zeros_like(W)
    blowup = DIVERGENCE_FACTOR * (1.0 + math.sqrt(np.trace(prior.second_moment()) / k))
    history = _empty_history(truth is not None, ("",))
    _record(history, _stats(W, W, C, truth_w), n, k, initial=True)
    result = IterationResult(W=W, C=C, history=history)
    for t in range(max_iter):
        B = scale * (Y @ W) - W_prev @ C / noise_var
        A = W.T @ W / (n * noise_var)
        W_new, C_new = prior.f_in(B, A)
        W_new = (1.0 - damping) * W + damping * W_new
        C_new = (1.0 - damping) * C + damping * xp.mean(C_new, axis=0)
        stats = _stats(W_new, W, C_new, truth_w)
        bad = _divergence(stats, n, k, blowup)
        if bad:
            _flag(result, t, bad)
            break
        W_prev, W, C = W, W_new, C_new
        residual = _record(history, stats, n, k)
        result.W, result.C, result.n_iter = W, C, t + 1
        if _stop(result, callback, t, W, C, residual, tol):
            break
    else:
        result.message = f"reached max_iter = {max_iter} (residual {history['residual'][-1]:.3g})"
    return result


def _spectral_symmetric(Y, prior, noise_var):
    """What^0 = What^{-1} = sqrt(n rho eps) phi_1 (n, 1) and Chat^0 = sqrt(Delta) / beta (1, 1)."""
    xp = namespace(Y)
    n = Y.shape[0]
    lam, phi = top_eigenpair(lambda v: Y @ v, Y)
    lam /= math.sqrt(n * noise_var)
    beta = 0.5 * (lam + math.sqrt(lam * lam - 4.0)) if lam > 2.0 else 1.0
    eps = 1.0 - 1.0 / beta ** 2
    rho = float(prior.second_moment()[0, 0])
    W = math.sqrt(n * rho * eps) * _oriented(phi[:, None], float(prior.mean()[0]))
    C = xp.asarray([[math.sqrt(noise_var) / beta]], dtype=Y.dtype, device=aac.device(Y))
    return W, W, C


def _rectangular(Y, priors, noise_var, truth, max_iter, tol, damping, init, init_overlap, callback, seed):
    xp = namespace(Y)
    (n, m), k = Y.shape, priors[0].k
    prior_u, prior_v = priors
    truth_u, truth_v = truth if truth is not None else (None, None)
    scale = 1.0 / (math.sqrt(n) * noise_var)
    alpha = m / n
    if init == "spectral":
        U, V, U_src, onsager_u = _spectral_rectangular(Y, priors, noise_var)
        Cu = Cv = xp.zeros((1, 1), dtype=Y.dtype, device=aac.device(Y))
    else:
        U, Cu = _start(prior_u, n, init, init_overlap, truth_u, Y, seed)
        V, Cv = _start(prior_v, m, init, init_overlap, truth_v, Y, None if seed is None else [seed, 1])
        U_src, onsager_u = xp.zeros_like(U), Cv
    blowup = DIVERGENCE_FACTOR * (1.0 + math.sqrt(max(np.trace(p.second_moment()) for p in priors) / k))
    history = _empty_history(truth is not None, ("", "_u", "_v"))
    _record_pair(history, _stats(U, U, Cu, truth_u), _stats(V, V, Cv, truth_v), n, m, k, initial=True)
    result = IterationResult(W=(U, V), C=(Cu, Cv), history=history)
    for t in range(max_iter):
        Bu = scale * (Y @ V) - (alpha / noise_var) * (U_src @ onsager_u)
        U_new, Cu_new = prior_u.f_in(Bu, V.T @ V / (n * noise_var))
        U_new = (1.0 - damping) * U + damping * U_new
        Cu_new = (1.0 - damping) * Cu + damping * xp.mean(Cu_new, axis=0)
        Bv = scale * (Y.T @ U_new) - V @ Cu_new / noise_var
        V_new, Cv_new = prior_v.f_in(Bv, U_new.T @ U_new / (n * noise_var))
        V_new = (1.0 - damping) * V + damping * V_new
        Cv_new = (1.0 - damping) * Cv + damping * xp.mean(Cv_new, axis=0)
        stats_u, stats_v = _stats(U_new, U, Cu_new, truth_u), _stats(V_new, V, Cv_new, truth_v)
        bad = _divergence(stats_u, n, k, blowup) or _divergence(stats_v, m, k, blowup)
        if bad:
            _flag(result, t, bad)
            break
        U, V, Cu, Cv = U_new, V_new, Cu_new, Cv_new
        U_src, onsager_u = U, Cv
        residual = _record_pair(history, stats_u, stats_v, n, m, k)
        result.W, result.C, result.n_iter = (U, V), (Cu, Cv), t + 1
        if _stop(result, callback, t, (U, V), (Cu, Cv), residual, tol):
            break
    else:
        result.message = f"reached max_iter = {max_iter} (residual {history['residual'][-1]:.3g})"
    return result


def _spectral_rectangular(Y, priors, noise_var):
    """Uhat^0 (n, 1), Vhat^0 (m, 1), and the fictitious Uhat^{-1} with its Onsager coefficient
    c (1, 1) such that B_u^0 = Y Vhat^0 / (sqrt(n) Delta) - (alpha / Delta) Uhat^{-1} c is the
    spectral field of the module docstring (Uhat^{-1} = Uhat^0)."""
    xp = namespace(Y)
    (n, m), alpha = Y.shape, Y.shape[1] / Y.shape[0]
    rho_u, rho_v = (float(p.second_moment()[0, 0]) for p in priors)
    sigma2, phi_v = top_eigenpair(lambda v: Y.T @ (Y @ v), Y, size=m)
    sigma = math.sqrt(sigma2 / (n * noise_var))
    gap = sigma * sigma - 1.0 - alpha
    theta2 = 0.5 * (gap + math.sqrt(gap * gap - 4.0 * alpha)) if gap > 2.0 * math.sqrt(alpha) else math.sqrt(alpha)
    top = 1.0 - alpha / theta2 ** 2
    eps_u, eps_v = top / (1.0 + 1.0 / theta2), top / (1.0 + alpha / theta2)
    ratio = (1.0 + 1.0 / theta2) / (1.0 + alpha / theta2)  # eps_v / eps_u, finite at the edge
    phi_u = Y @ phi_v
    phi_u = phi_u / xp.linalg.vector_norm(phi_u)
    sign = 1.0 if (float(xp.sum(phi_u)) >= 0) == (float(priors[0].mean()[0]) >= 0) else -1.0
    phi_u, phi_v = sign * phi_u[:, None], sign * phi_v[:, None]
    U = math.sqrt(n * rho_u * eps_u) * phi_u
    V = math.sqrt(m * rho_v * eps_v) * phi_v
    # Y V / (sqrt(n) Delta) = sigma sqrt(m rho_v eps_v) phi_u / sqrt(Delta): subtract what exceeds the target field
    c = (sigma * math.sqrt(alpha * rho_v * ratio / rho_u) / math.sqrt(noise_var)
         - alpha * rho_v * ratio / noise_var) * noise_var / alpha
    return U, V, U, xp.asarray([[c]], dtype=Y.dtype, device=aac.device(Y))


def top_eigenpair(matvec, like, size=None):
    """Largest eigenvalue and unit eigenvector (size,) of a symmetric operator, by Lanczos with full
    reorthogonalisation: O(steps) products `matvec(v)` instead of an O(size^3) eigendecomposition.

    like : an array whose namespace, dtype and device the vectors take; size : its first axis by default.
    The tridiagonal Ritz problem (steps x steps) is solved on the host every 5 steps.
    """
    xp = namespace(like)
    size = like.shape[0] if size is None else size
    steps = min(size, LANCZOS_STEPS)
    basis = xp.zeros((steps, size), dtype=like.dtype, device=aac.device(like))
    v = RNG(0, xp, aac.device(like)).normal((size,), dtype=like.dtype)
    v = v / xp.linalg.vector_norm(v)
    diag, off = [], []
    for j in range(steps):
        basis[j] = v
        w = matvec(v)
        diag.append(float(xp.sum(w * v)))
        for _ in range(2):  # twice is enough to keep the basis orthogonal to rounding
            w = w - (basis[:j + 1] @ w) @ basis[:j + 1]
        off.append(float(xp.linalg.vector_norm(w)))
        if j % 5 == 4 or j == steps - 1:
            theta, S = linalg.eigh_tridiagonal(np.array(diag), np.array(off[:-1]))
            if off[-1] * abs(S[-1, -1]) <= LANCZOS_RTOL * max(abs(theta[-1]), abs(theta[0])) or j == steps - 1:
                break
        v = w / off[-1]
    ritz = xp.asarray(S[:, -1], dtype=like.dtype, device=aac.device(like)) @ basis[:j + 1]
    return float(theta[-1]), ritz / xp.linalg.vector_norm(ritz)


def _stop(result, callback, t, W, C, residual, tol):
    if callback is not None and callback(t + 1, W, C):
        result.message = f"stopped by callback at iteration {t + 1}"
        return True
    if residual < tol:
        result.converged = True
        result.message = f"converged at iteration {t + 1} (residual {residual:.3g} < tol {tol:g})"
        return True
    return False


def _flag(result, t, why):
    result.diverged = True
    result.message = f"diverged at iteration {t + 1}: {why}; returning the last finite iterate"
    warnings.warn(result.message, DivergenceWarning, stacklevel=4)


def _stats(W_new, W, C_new, truth):
    """[squared residual sum, finite, min diag C, m (k*k), q (k*k), squared error sum] on the host,
    reduced on the device and moved in one small transfer. Sums, not means, so that the two sides
    of the rectangular model can be stacked."""
    xp = namespace(W_new)
    rows = W_new.shape[0]
    parts = [xp.reshape(xp.sum((W_new - W) ** 2), (1,)),
             xp.reshape(xp.astype(xp.all(xp.isfinite(W_new)) & xp.all(xp.isfinite(C_new)), W_new.dtype), (1,)),
             xp.reshape(xp.min(xp.linalg.diagonal(C_new)), (1,))]
    if truth is not None:
        parts += [xp.reshape(W_new.T @ truth / rows, (-1,)), xp.reshape(W_new.T @ W_new / rows, (-1,)),
                  xp.reshape(xp.sum((W_new - truth) ** 2), (1,))]
    return to_numpy(xp.concat(parts)).astype(float)


def _divergence(stats, rows, k, blowup):
    """Why the new iterate (`_stats` of `rows` rows) is unusable, or '' when it is fine."""
    sq_residual, finite, min_var = stats[:3]
    if not (finite == 1.0 and math.isfinite(sq_residual) and math.isfinite(min_var)):
        return "NaN or Inf in the estimate"
    if math.sqrt(sq_residual / (rows * k)) > blowup:
        return f"residual {math.sqrt(sq_residual / (rows * k)):.3g} exploded"
    if min_var < 0.0:
        return "negative posterior variance"
    return ""


def _empty_history(with_truth, suffixes):
    keys = ("mse", "m", "q") if with_truth else ()
    history = {key + s: [] for s in suffixes for key in keys}
    history["residual"] = []
    return history


def _overlaps(stats, k):
    """m (k, k), q (k, k) and the squared-error sum of `_stats` (with a truth)."""
    return stats[3:3 + k * k].reshape(k, k), stats[3 + k * k:3 + 2 * k * k].reshape(k, k), float(stats[-1])


def _append(history, suffix, m, q, mse, k):
    history["m" + suffix].append(float(m[0, 0]) if k == 1 else m)
    history["q" + suffix].append(float(q[0, 0]) if k == 1 else q)
    history["mse" + suffix].append(mse)


def _record(history, stats, rows, k, initial=False):
    """Append the `_stats` of one iterate (rows, k) to `history`; returns the residual."""
    residual = math.inf if initial else math.sqrt(stats[0] / (rows * k))
    history["residual"].append(residual)
    if "mse" in history:
        m, q, sq_err = _overlaps(stats, k)
        _append(history, "", m, q, sq_err / (rows * k), k)
    return residual


def _record_pair(history, stats_u, stats_v, n, m_rows, k, initial=False):
    """Append both sides' `_stats` and their stacking ((n + m) rows); returns the stacked residual."""
    total = n + m_rows
    residual = math.inf if initial else math.sqrt((stats_u[0] + stats_v[0]) / (total * k))
    history["residual"].append(residual)
    if "mse" in history:
        (mu, qu, eu), (mv, qv, ev) = _overlaps(stats_u, k), _overlaps(stats_v, k)
        _append(history, "_u", mu, qu, eu / (n * k), k)
        _append(history, "_v", mv, qv, ev / (m_rows * k), k)
        _append(history, "", (n * mu + m_rows * mv) / total, (n * qu + m_rows * qv) / total, (eu + ev) / (total * k), k)
    return residual
