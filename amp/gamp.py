"""GAMP for the sequence multi-index model (GLM when L = k = 1), Bayes-optimal or ERM.

Iteration t (DESIGN.md section 3), with x_mu in R^{L x d}:
    V       = Chat^t                                               (k, k)
    Omega_mu = x_mu What^t / sqrt(d) - g^{t-1}_mu V                 (n, L, k)
    g, dg   = g_out(y, Omega, V)                                   (n, L, k), (n, L, k, L, k)
    A       = -(1/d) sum_mu sum_l dg_mu[l, :, l, :]                (k, k)
    B       = (1/sqrt(d)) sum_mu x_mu^T g_mu + What^t A            (d, k)
    What^{t+1}, Chat^{t+1} = f_in(B, A)  (Chat averaged over coordinates), damped by eta.
Steps 2 to 5 are one streaming pass over X, row block by row block (for a NumPy X with
L = k = 1 and a channel with a scalar kernel, the fused numba pass of `amp.fused`; for a Dask X,
that pass on each row chunk where it lies, `amp.distributed`).
"""
import math
import warnings

import array_api_compat as aac
import numpy as np

from amp.backend import namespace, to_numpy
from amp.results import IterationResult
from amp.validation import check_compatible, check_count, check_finite_array, check_unit_interval

#: target bytes of X per row block: small enough that the block is still in (L3) cache for X^T g,
#: large enough to amortise the NumPy calls per block (measured best at 4 to 16 MiB, benchmarks/)
BLOCK_BYTES = 8 << 20
#: a residual beyond this many prior scales means the iteration has blown up
DIVERGENCE_FACTOR = 1e6
#: a posterior variance below this fraction of the prior's is exact recovery: the run stops there
EXACT_RECOVERY_FRACTION = 1e-12
#: auto_damping never takes eta below this (six halvings of eta = 1)
MIN_DAMPING = 1.0 / 64


class DivergenceWarning(RuntimeWarning):
    """An iteration produced NaN/Inf or an exploding residual and was stopped."""


def initial_state(prior, d, init_overlap, truth, xp, dtype, device, seed):
    """What^0 (d, k) and Chat^0 (k, k) at normalised overlap eps = init_overlap.

    With mu = E[w], Sigma = Cov(w) = L L^T and xi ~ N(0, I_k) per row:
        What^0 = mu + eps (W* - mu) + sqrt(eps (1 - eps)) xi L^T,   Chat^0 = (1 - eps) Sigma,
    so that m^0 = q^0 = mu mu^T + eps Sigma (the Nishimori initialisation the state
    evolution starts from). With a truth, xi L^T is projected orthogonally to the columns of
    W* - mu, so that m^0 is exactly the start the SE assumes, not that start plus an O(1/sqrt(d))
    random overlap which unstable directions (hidden units about to specialise) would amplify.
    Without a truth, What^0 = mu + sqrt(eps) xi L^T.
    """
    mu = prior.mean()
    cov = prior.second_moment() - np.outer(mu, mu)
    chol = np.linalg.cholesky(cov + 1e-300 * np.eye(len(mu)))
    const = lambda a: xp.asarray(a, dtype=dtype, device=device)  # noqa: E731
    # drawn on the host so that a seed gives the same start on every backend (d x k numbers)
    xi = const(np.random.default_rng(seed).standard_normal((d, prior.k)) @ chol.T)
    if truth is None:
        W0 = const(mu) + math.sqrt(init_overlap) * xi
    else:
        dev = truth - const(mu)
        xi = xi - dev @ xp.linalg.solve(dev.T @ dev, dev.T @ xi)
        W0 = const(mu) + init_overlap * dev + math.sqrt(init_overlap * (1 - init_overlap)) * xi
    return W0, const((1.0 - init_overlap) * cov)


def _block_rows(n, L, d, itemsize, block_rows):
    if block_rows is not None:
        return check_count("block_rows", block_rows, minimum=1)
    return max(1, min(n, BLOCK_BYTES // max(1, L * d * itemsize)))


def output_sweep(X, y, What, g_prev, V, channel, block_rows):
    """One streaming pass over X: g^t (n, L, k), sum of diagonal dg blocks (k, k), X^T g (d, k).

    X : (n, L, d) view; each row block is read for Omega = x What / sqrt(d) - g_prev V and,
    while still in cache, for its share of X^T g.
    """
    xp = namespace(X)
    n, L, d = X.shape
    k = What.shape[1]
    sqrt_d = math.sqrt(d)
    g_all = xp.empty((n, L, k), dtype=X.dtype, device=aac.device(X))
    dg_sum = xp.zeros((k, k), dtype=X.dtype, device=aac.device(X))
    XtG = xp.zeros((d, k), dtype=X.dtype, device=aac.device(X))
    for r0 in range(0, n, block_rows):
        r1 = min(n, r0 + block_rows)
        Xb = xp.reshape(X[r0:r1], ((r1 - r0) * L, d))
        Omega = xp.reshape(_block_times(Xb, What), (r1 - r0, L, k)) / sqrt_d - g_prev[r0:r1] @ V
        g, dg = channel.g_out(y[r0:r1], Omega, V)
        for l in range(L):
            dg_sum = dg_sum + xp.sum(dg[:, l, :, l, :], axis=0)
        XtG = XtG + _block_transposed_times(Xb, xp.reshape(g, ((r1 - r0) * L, k)))
        g_all[r0:r1] = g
    return g_all, dg_sum, XtG


#: for NumPy blocks with 1 < k <= this, products with X go column by column (see _block_times)
COLUMNWISE_K = 8


def _columnwise(Xb, k):
    return isinstance(Xb, np.ndarray) and 1 < k <= COLUMNWISE_K


def _block_times(Xb, W):
    """Xb @ W (rows, k). For a NumPy block and small k, one matrix-vector product per column: OpenBLAS's
    matrix-vector kernel streams the cached block about twice as fast as its gemm with k = 2 columns
    (benchmarks/multi_index.py)."""
    if _columnwise(Xb, W.shape[1]):
        return np.stack([Xb @ W[:, a] for a in range(W.shape[1])], axis=1)
    return Xb @ W


def _block_transposed_times(Xb, G):
    """Xb^T @ G (d, k), column by column like `_block_times`."""
    if _columnwise(Xb, G.shape[1]):
        return np.stack([G[:, a] @ Xb for a in range(G.shape[1])], axis=1)
    return Xb.T @ G


def local_sweep(X, y, What, g_prev, V, channel, block_rows, kernel):
    """The pass over an in-memory X (n, L, d): the fused numba sweep of `amp.fused` with the channel's
    `kernel` (from `_fused_kernel`), or the row blocks of `output_sweep` when kernel is None."""
    if kernel is None:
        return output_sweep(X, y, What, g_prev, V, channel, block_rows)
    from amp.fused import output_sweep as fused_sweep  # numba: compiled once, then cached
    return fused_sweep(X, y, What, g_prev, V, kernel)


def _fused_kernel(X3, prior, channel, fused):
    """The channel's (kernel, params) when the fused sweep of `amp.fused` applies, else None.

    It applies to a NumPy float32/float64 X (n, 1, d) with C-contiguous rows, k = 1 and a channel
    whose `scalar_kernel()` is not None; fused=True demands it, fused=False declines it.
    """
    if fused not in (None, True, False):
        raise ValueError(f"fused must be None, True or False, got {fused!r}")
    applies = (fused is not False and isinstance(X3, np.ndarray) and X3.shape[1] == 1 and prior.k == 1
               and X3.dtype in (np.float32, np.float64) and X3[:, 0].flags.c_contiguous)
    kernel = channel.scalar_kernel() if applies else None
    if fused and kernel is None:
        raise ValueError("fused=True needs a C-contiguous float32/float64 NumPy X with L = k = 1 and a channel "
                         f"with a scalar_kernel(); got {type(X3).__name__}, L = {X3.shape[1]}, k = {prior.k}, "
                         f"{channel!r}")
    return kernel


def _check_inputs(X, y, prior, channel, truth, tol, damping, init_overlap):
    if X.ndim not in (2, 3):
        raise ValueError(f"X must have shape (n, d) or (n, L, d), got shape {tuple(X.shape)}")
    if not aac.is_dask_array(X):  # a Dask X is checked on its workers by amp.distributed.prepare
        check_finite_array("X", X)
    check_compatible(prior, channel, 1 if X.ndim == 2 else X.shape[1])
    label_shape = (X.shape[0],) + tuple(getattr(channel, "label_shape", ()))
    if tuple(y.shape) != label_shape:
        raise ValueError(f"y must have shape (n, *label_shape) = {label_shape} for {channel!r}, got {tuple(y.shape)}")
    channel.check_labels(y)
    if truth is not None:
        if tuple(truth.shape) != (X.shape[-1], prior.k):
            raise ValueError(f"truth must have shape (d, k) = {(X.shape[-1], prior.k)}, got {tuple(truth.shape)}")
        check_finite_array("truth", truth)
    if not float(tol) >= 0.0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    check_unit_interval("damping", damping, open_left=True)
    check_unit_interval("init_overlap", init_overlap)


def gamp(X, y, prior, channel, truth=None, max_iter=100, tol=1e-8, damping=1.0, init_overlap=0.01,
         callback=None, seed=None, block_rows=None, fused=None, auto_damping=False):
    """Run GAMP on data (X, y) with an input denoiser `prior` and an output denoiser `channel`.

    X : (n, d) or (n, L, d) array (NumPy, CuPy, PyTorch, ...); y : (n, ...) labels in the same namespace.
    A dask.array X chunked by rows is swept chunk by chunk on dask's scheduler (`amp.distributed`);
    y and truth are then NumPy arrays, and so are the returned W, C.
    truth : optional (d, k) teacher W*, for the recorded m, q and mse.
    damping : eta in (0, 1]: What <- (1 - eta) What + eta f_in(B, A), same for Chat.
    init_overlap : normalised initial overlap eps in [0, 1] (see `initial_state`), the same
    convention as `state_evolution.gamp`.
    callback : called as callback(t, W, C) after iteration t; returning True stops the run.
    seed : seed of the random initialisation. block_rows : samples per row block of the generic pass.
    fused : None (auto), True or False: the numba sweep of `amp.fused` (NumPy X, L = k = 1, a channel
    with a `scalar_kernel()`; threads as set by `numba.set_num_threads`) instead of the row-block
    pass; True raises where it does not apply, False never uses it. Both give the same iterates
    up to rounding.
    auto_damping : start at eta = damping and halve eta (down to MIN_DAMPING) whenever a step is
    unusable (see `_divergence`) or overshoots: with steps D^t = What^t - What^{t-1}, when
    <D^{t+1}, D^t> < -||D^t||^2, i.e. the step reverses and its component along the previous one
    outgrows it (so the residual grows): the oscillating divergence, multiplier lambda < -1, that
    damping cures. The step is retried from the last good iterate What^t: f_in(B, A) there is kept
    and only re-mixed, at no extra pass over X. Growth without reversal (the escape from an
    uninformative fixed point) and decaying oscillations are left alone. At the floor an
    overshooting step is taken and an unusable one stops the run as without auto_damping.
    Returns an IterationResult with W (d, k), C (k, k) and history lists `mse`, `m`, `q`
    (with a truth) and `residual` = ||What^t - What^{t-1}||_F / sqrt(d k) (inf at entry 0); with
    auto_damping also `damping` (the eta of each step, entry 0 the initial one) and `events`, one
    dict {"iteration", "damping", "reason"} per halving.
    """
    _check_inputs(X, y, prior, channel, truth, tol, damping, init_overlap)
    max_iter = check_count("max_iter", max_iter)
    dask_X = aac.is_dask_array(X)
    if dask_X:  # X stays on the workers in row chunks; y, What, g and the statistics are NumPy
        from amp import distributed
        X, xp = distributed.prepare(X, y=y, truth=truth), namespace(y)
    else:
        xp = namespace(X, y)
    X3 = X if X.ndim == 3 else X[:, None, :]
    n, L, d = X3.shape
    k, dtype, device = prior.k, X.dtype, aac.device(X)
    y = xp.astype(y, dtype, copy=False)
    if truth is not None:
        truth = xp.astype(truth, dtype, copy=False)
    rows = _block_rows(n, L, d, X.dtype.itemsize, block_rows)
    kernel = None if dask_X else _fused_kernel(X3, prior, channel, fused)
    rho = prior.second_moment()
    blowup = DIVERGENCE_FACTOR * (1.0 + math.sqrt(np.trace(rho) / k))
    variance_floor = EXACT_RECOVERY_FRACTION * max(np.trace(rho - np.outer(prior.mean(), prior.mean())) / k, 1e-300)

    W, C = initial_state(prior, d, init_overlap, truth, xp, dtype, device, seed)
    g_prev = xp.zeros((n, L, k), dtype=dtype, device=device)
    step = None  # D^t = What^t - What^{t-1}, kept for auto_damping's overshoot test
    history = {key: [] for key in (("mse", "m", "q") if truth is not None else ()) + ("residual",)}
    if auto_damping:
        history.update(damping=[damping], events=[])
    _record(history, _stats(W, W, C, truth), k, initial=True)
    result = IterationResult(W=W, C=C, history=history)
    for t in range(max_iter):
        if dask_X:
            g, dg_sum, XtG = distributed.output_sweep(X3, y, W, g_prev, C, prior, channel, rows, fused)
        else:
            g, dg_sum, XtG = local_sweep(X3, y, W, g_prev, C, channel, rows, kernel)
        A = -(dg_sum + dg_sum.T) / (2 * d)  # symmetric up to rounding; f_in relies on it
        B = XtG / math.sqrt(d) + W @ A
        W_f, C_f = prior.f_in(B, A)
        C_f = xp.mean(C_f, axis=0)
        while True:
            W_new = (1.0 - damping) * W + damping * W_f
            C_new = (1.0 - damping) * C + damping * C_f
            stats = _stats(W_new, W, C_new, truth, step)
            bad = _divergence(stats, blowup)
            why = auto_damping and (bad or _overshoot(stats, history["residual"][-1] ** 2 * d * k))
            if not why or damping / 2 < MIN_DAMPING:
                break
            damping /= 2
            history["events"].append({"iteration": t + 1, "damping": damping, "reason": why})
        if bad:
            result.diverged = True
            floor = f" at damping {damping:g}" if auto_damping else ""
            result.message = f"diverged at iteration {t + 1}{floor}: {bad}; returning the last finite iterate"
            warnings.warn(result.message, DivergenceWarning, stacklevel=2)
            break
        W, C, g_prev, step = W_new, C_new, g, (W_new - W if auto_damping else None)
        residual = _record(history, stats, k)
        if auto_damping:
            history["damping"].append(damping)
        result.W, result.C, result.n_iter = W, C, t + 1
        if callback is not None and callback(t + 1, W, C):
            result.message = f"stopped by callback at iteration {t + 1}"
            break
        if result.reached_tol(t, residual, tol):
            break
        if stats[3] <= variance_floor:
            result.converged = True
            result.message = f"exact recovery at iteration {t + 1} (posterior variance {stats[3]:.3g})"
            break
    else:
        result.message = f"reached max_iter = {max_iter} (residual {history['residual'][-1]:.3g})"
    return result


def _stats(W_new, W, C_new, truth, step=None):
    """[residual, finite(W_new, C_new), min and max diag C_new, <W_new - W, step>, m (k*k), q (k*k), mse]
    as one host array (the inner product with the previous step is 0 without one).

    Everything is reduced on the device and moved in one small transfer per iteration.
    """
    xp = namespace(W_new)
    d, k = W_new.shape
    turn = xp.zeros((1,), dtype=W_new.dtype, device=aac.device(W_new)) if step is None else \
        xp.reshape(xp.sum((W_new - W) * step), (1,))
    parts = [xp.reshape(xp.linalg.vector_norm(W_new - W) / math.sqrt(d * k), (1,)),
             xp.reshape(xp.astype(xp.all(xp.isfinite(W_new)) & xp.all(xp.isfinite(C_new)), W_new.dtype), (1,)),
             xp.reshape(xp.min(xp.linalg.diagonal(C_new)), (1,)),
             xp.reshape(xp.max(xp.linalg.diagonal(C_new)), (1,)),
             turn]
    if truth is not None:
        parts += [xp.reshape(W_new.T @ truth / d, (-1,)), xp.reshape(W_new.T @ W_new / d, (-1,)),
                  xp.reshape(xp.sum((W_new - truth) ** 2) / (d * k), (1,))]
    return to_numpy(xp.concat(parts)).astype(float)


def _divergence(stats, blowup):
    """Why the new iterate is unusable, or '' when it is fine."""
    residual, finite, min_var = stats[:3]
    if not (finite == 1.0 and math.isfinite(residual) and math.isfinite(min_var)):
        return "NaN or Inf in the estimate"
    if residual > blowup:
        return f"residual {residual:.3g} exploded"
    if min_var < 0.0:
        return "negative posterior variance"
    return ""


def _overshoot(stats, step_norm2):
    """Why auto_damping should cut a usable step, or '': <D^{t+1}, D^t> < -||D^t||^2 = -step_norm2."""
    turn = stats[4]
    if turn < -step_norm2:
        return f"overshoot: the step reverses and outgrows the previous one {-turn / step_norm2:.3g} times"
    return ""


def _record(history, stats, k, initial=False):
    """Append one iteration's `_stats` to `history`; returns the residual."""
    residual = math.inf if initial else float(stats[0])
    history["residual"].append(residual)
    if "mse" in history:
        m, q = stats[5:5 + k * k].reshape(k, k), stats[5 + k * k:5 + 2 * k * k].reshape(k, k)
        history["m"].append(float(m[0, 0]) if k == 1 else m)
        history["q"].append(float(q[0, 0]) if k == 1 else q)
        history["mse"].append(float(stats[-1]))
    return residual
