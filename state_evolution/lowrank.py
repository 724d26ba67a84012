"""State evolution of low-rank matrix AMP, twin of `amp.lowrank`, and the Bayes-optimal phase
diagram of the spiked Wigner model (rank k = 1; Lesieur, Krzakala, Zdeborová, J. Stat. Mech. 2017).

Per iteration, with m = What^T X* / n and q = What^T What / n:
    symmetric:    m_hat = m / Delta,  q_hat = q / Delta,
                  (m, q)^{t+1} = (E[f_in(B, q_hat) w*], E[f_in(B, q_hat)^2]),  B = m_hat w* + sqrt(q_hat) xi;
    rectangular:  side u from (m_hat, q_hat) = alpha (m_v, q_v) / Delta,
                  then side v from (m_hat, q_hat) = (m_u^{t+1}, q_u^{t+1}) / Delta.
On the Nishimori line (m = q = M, the 'informative' and 'spectral' starts) this is
M^{t+1} = E[f_in(M_hat w* + sqrt(M_hat) xi, M_hat) w*] = q_bayes(prior, M / Delta).

Bayes-optimal analysis (symmetric, k = 1). The replica free entropy (Lelarge and Miolane 2019) is
    Phi(Delta) = max_M [ Psi_in(M / Delta) - M^2 / (4 Delta) ],  Psi_in(x) = E log Z_in(x w* + sqrt(x) xi, x),
whose stationary points are the SE fixed points M = Q(M / Delta), Q(x) = q_bayes(prior, x) (Psi_in' = Q / 2);
the mutual information is I(X*; Y) / n = rho^2 / (4 Delta) - Phi, and dPhi / d(1 / Delta) = M^2 / 4
(I-MMSE: the matrix MMSE is rho^2 - M^2). Fixed points are the roots of h(x) = Q(x) - Delta x in
x = M / Delta, a function whose Q part does not depend on Delta (cached on one grid of x).
"""
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize

from amp.results import IterationResult
from amp.validation import check_count, check_positive, check_unit_interval
from state_evolution.gamp import q_bayes
from state_evolution.integrate import Nodes, input_expectation

INITS = ("informative", "random", "spectral")
#: relative tolerance to which the thresholds are refined by bisection (in Delta)
DELTA_TOL = 1e-6
#: the grid of x = M / Delta on which fixed points are bracketed
X_GRID = np.geomspace(1e-10, 1e10, 241)


def input_step(prior, m_hat, q_hat, nodes=Nodes()):
    """(E[f_in(B, q_hat) w*], E[f_in(B, q_hat)^2]) for B = m_hat w* + sqrt(q_hat) xi, k = 1."""
    A = np.array([[q_hat]])

    def fn(B, w):
        f = prior.f_in(B, A)[0][:, 0]
        return f * w[:, 0], f * f
    m, q = input_expectation(prior, fn, m_hat, q_hat, nodes)
    return float(m), float(q)


def _moments(prior):
    return float(prior.second_moment()[0, 0]), float(prior.mean()[0])


def _initial(prior, init, init_overlap, eps_spectral):
    """(m^0, q^0) of one side: the twin of `amp.lowrank`'s start."""
    rho, mu = _moments(prior)
    if init == "spectral":
        return rho * eps_spectral, rho * eps_spectral
    q0 = mu * mu + init_overlap * (rho - mu * mu)
    return (q0 if init == "informative" else mu * mu), q0


def spectral_overlaps(rho, noise_var, rho_v=None, alpha=None):
    """Squared normalised overlaps of the top eigenvector (singular vectors) with the spike (BBP).

    Symmetric: eps = max(0, 1 - Delta / rho^2). Rectangular (rho_v and alpha = m / n given), with
    theta^2 = alpha rho rho_v / Delta: eps_u = (1 - alpha / theta^4) / (1 + 1 / theta^2),
    eps_v = (1 - alpha / theta^4) / (1 + alpha / theta^2), zero below theta^4 = alpha.
    """
    if rho_v is None:
        return max(0.0, 1.0 - noise_var / rho ** 2)
    theta2 = alpha * rho * rho_v / noise_var
    top = max(0.0, 1.0 - alpha / theta2 ** 2)
    return top / (1.0 + 1.0 / theta2), top / (1.0 + alpha / theta2)


def lowrank(prior, noise_var, max_iter=100, tol=1e-10, init="informative", init_overlap=0.01, alpha=1.0,
            nodes=Nodes()):
    """Iterate the SE of `amp.lowrank` (k = 1) at noise variance Delta = noise_var.

    prior : one input denoiser (symmetric model) or a pair (prior_u, prior_v) (rectangular, with
    aspect ratio alpha = m / n). init, init_overlap : as for `amp.lowrank` ('random' gives m^0 = mu^2,
    q^0 = mu^2 + init_overlap Var(w); for a zero-mean prior it then stays at m = 0, the unstable
    fixed point from which AMP escapes on finite-size fluctuations when Delta < rho^2).
    Returns an IterationResult whose history has lists `mse` (= rho - 2 m + q), `m`, `q` (entry 0
    the initial state) and `residual` = max |d(m, q)|; rectangular: the same per side with suffixes
    _u, _v and, unsuffixed, the stacking of the two sides with weights 1 : alpha.
    """
    noise_var = check_positive("noise_var", noise_var)
    max_iter = check_count("max_iter", max_iter)
    if not float(tol) >= 0.0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    init_overlap = check_unit_interval("init_overlap", init_overlap)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    rectangular = isinstance(prior, (tuple, list))
    priors = tuple(prior) if rectangular else (prior,)
    for p in priors:
        if p.k != 1:
            raise ValueError(f"state_evolution.lowrank handles rank k = 1, got a prior with k = {p.k}")
    if rectangular:
        return _rectangular(priors, noise_var, check_positive("alpha", alpha), max_iter, float(tol), init,
                            init_overlap, nodes)
    return _symmetric(prior, noise_var, max_iter, float(tol), init, init_overlap, nodes)


def _symmetric(prior, noise_var, max_iter, tol, init, init_overlap, nodes):
    rho, _ = _moments(prior)
    m, q = _initial(prior, init, init_overlap, spectral_overlaps(rho, noise_var))
    history = {"mse": [rho - 2 * m + q], "m": [m], "q": [q], "residual": [math.inf]}
    result = IterationResult(history=history)
    for t in range(max_iter):
        m_new, q_new = input_step(prior, m / noise_var, q / noise_var, nodes)
        if not (math.isfinite(m_new) and math.isfinite(q_new)):
            result.diverged = True
            result.message = f"state evolution produced NaN/Inf at iteration {t + 1}"
            break
        residual = max(abs(m_new - m), abs(q_new - q))
        m, q = m_new, q_new
        for key, value in (("mse", rho - 2 * m + q), ("m", m), ("q", q), ("residual", residual)):
            history[key].append(value)
        if result.reached_tol(t, residual, tol):
            break
    else:
        result.message = f"reached max_iter = {max_iter}"
    return result


def _rectangular(priors, noise_var, alpha, max_iter, tol, init, init_overlap, nodes):
    prior_u, prior_v = priors
    (rho_u, _), (rho_v, _) = _moments(prior_u), _moments(prior_v)
    eps_u, eps_v = spectral_overlaps(rho_u, noise_var, rho_v, alpha)
    (mu_, qu), (mv, qv) = _initial(prior_u, init, init_overlap, eps_u), _initial(prior_v, init, init_overlap, eps_v)
    history = {key: [] for key in ("mse", "m", "q", "mse_u", "m_u", "q_u", "mse_v", "m_v", "q_v", "residual")}
    result = IterationResult(history=history)

    def record(mu_, qu, mv, qv, residual):
        for side, (m, q, rho) in (("_u", (mu_, qu, rho_u)), ("_v", (mv, qv, rho_v))):
            history["m" + side].append(m), history["q" + side].append(q), history["mse" + side].append(rho - 2 * m + q)
        for key in ("m", "q", "mse"):
            history[key].append((history[key + "_u"][-1] + alpha * history[key + "_v"][-1]) / (1.0 + alpha))
        history["residual"].append(residual)

    record(mu_, qu, mv, qv, math.inf)
    for t in range(max_iter):
        mu_new, qu_new = input_step(prior_u, alpha * mv / noise_var, alpha * qv / noise_var, nodes)
        mv_new, qv_new = input_step(prior_v, mu_new / noise_var, qu_new / noise_var, nodes)
        if not all(math.isfinite(v) for v in (mu_new, qu_new, mv_new, qv_new)):
            result.diverged = True
            result.message = f"state evolution produced NaN/Inf at iteration {t + 1}"
            break
        residual = max(abs(mu_new - mu_), abs(qu_new - qu), abs(mv_new - mv), abs(qv_new - qv))
        mu_, qu, mv, qv = mu_new, qu_new, mv_new, qv_new
        record(mu_, qu, mv, qv, residual)
        if result.reached_tol(t, residual, tol):
            break
    else:
        result.message = f"reached max_iter = {max_iter}"
    return result


class SpikedWignerSE:
    """The Bayes-optimal SE of the symmetric spiked model for one prior (k = 1), in x = M / Delta.

    Q(x) = q_bayes(prior, x) and Psi_in(x) are cached; fixed points at Delta are the roots of
    h(x) = Q(x) - Delta x (the SE raises M where h > 0).
    """

    def __init__(self, prior, nodes=Nodes()):
        if prior.k != 1:
            raise ValueError(f"lowrank_bayes_optimal handles rank k = 1, got a prior with k = {prior.k}")
        self.prior, self.nodes = prior, nodes
        self.rho, mu = _moments(prior)
        self.mu2 = mu * mu
        self.var = self.rho - self.mu2
        self.Q = lru_cache(maxsize=None)(lambda x: q_bayes(self.prior, x, self.nodes) if x > 0 else self.mu2)
        self.psi_in = lru_cache(maxsize=None)(self._psi_in)
        self.Q_grid = np.array([self.Q(float(x)) for x in X_GRID])

    def _psi_in(self, x):
        if x == 0.0:
            return 0.0
        A = np.array([[x]])
        return float(input_expectation(self.prior, lambda B, w: self.prior.log_z_in(B, A), x, x, self.nodes))

    def branches(self, delta):
        """(M_uninformative, M_informative): the SE fixed points reached from M = mu^2 and from M = rho.

        Scans h on the points x_low = mu^2 / Delta < grid < x_high = rho / Delta (h(x_high) < 0 as
        Q < rho, unless Q(x_high) rounds to rho: perfect recovery), plus the extrema of h between grid
        points: the first root above x_low and the last one below x_high, refined by brentq.
        """
        x_low, x_high = self.mu2 / delta, self.rho / delta
        inner = X_GRID[(X_GRID > x_low) & (X_GRID < x_high)]
        x = np.concatenate([[x_low], inner, [x_high]])
        h = np.concatenate([[self.Q(x_low)], self.Q_grid[np.searchsorted(X_GRID, inner)], [self.Q(x_high)]]) - delta * x
        if self.mu2 == 0.0:
            h[0] = 0.0  # M = 0 is a fixed point, stable where Q'(0) = Var(w)^2 <= Delta
        x, h = self._refine_extrema(x, h, delta)
        if self.mu2 == 0.0 and self.var ** 2 <= delta:
            M_low = 0.0
        else:
            down = np.nonzero(h[1:] < 0)[0]  # none: Q(x_high) rounds to rho, perfect recovery
            M_low = self._fixed_point(x, h, down[0], delta) if down.size else self.rho
        if h[-1] >= 0:
            return M_low, self.rho
        return M_low, self._fixed_point(x, h, np.nonzero(h[:-1] >= 0)[0][-1], delta)

    def _refine_extrema(self, x, h, delta):
        """Add to the scan the interior extrema of h that the grid would miss: near delta_dyn (delta_alg) the
        positive bump (negative dip) of h narrows below the grid spacing before it disappears."""
        extra = []
        for j in range(1, x.size - 1):
            peak = h[j] >= max(h[j - 1], h[j + 1]) and h[j] < 0
            dip = h[j] <= min(h[j - 1], h[j + 1]) and h[j] > 0
            if peak or dip:
                sign = 1.0 if dip else -1.0
                best = optimize.minimize_scalar(lambda u: sign * (self.Q(u) - delta * u), bounds=(x[j - 1], x[j + 1]),
                                                method="bounded", options={"xatol": 1e-10 * x[j]})
                extra.append((best.x, sign * best.fun))
        if not extra:
            return x, h
        x = np.concatenate([x, [e[0] for e in extra]])
        h = np.concatenate([h, [e[1] for e in extra]])
        order = np.argsort(x, kind="stable")
        return x[order], h[order]

    def _fixed_point(self, x, h, j, delta):
        """M = Delta x at the root of h in [x_j, x_{j+1}] (h_j >= 0 > h_{j+1}); 0 for the root x = 0."""
        if h[j] == 0.0 and x[j] == 0.0:
            return 0.0
        return delta * optimize.brentq(lambda u: self.Q(u) - delta * u, x[j], x[j + 1], xtol=1e-300, rtol=1e-14)

    def free_entropy(self, M, delta):
        """Phi = Psi_in(M / Delta) - M^2 / (4 Delta) at a fixed point M."""
        return self.psi_in(M / delta) - M * M / (4.0 * delta)


@dataclass
class LowRankBranch:
    """One SE branch over the noise variances: arrays of M, mse = rho - M (vector error of AMP with
    the sign broken), matrix_mse = rho^2 - M^2 and free_entropy Phi."""

    M: np.ndarray
    mse: np.ndarray
    matrix_mse: np.ndarray
    free_entropy: np.ndarray


@dataclass
class LowRankBayesOptimalResult:
    """Bayes-optimal phase diagram of the symmetric spiked model over `noise_vars` (Delta).

    uninformative / informative : LowRankBranch (SE fixed points reached from M = mu^2 and M = rho);
    bayes_branch : per Delta, the branch of larger free entropy; M, mse, matrix_mse (the MMSE of
    X* X*^T / n), free_entropy, mutual_information (= rho^2 / (4 Delta) - Phi) : of that branch.
    delta_spectral : rho^2 (rho = E[w^2]), the BBP threshold of the top eigenvalue of Y.
    delta_alg : below it AMP from the uninformative start reaches the informative branch;
    delta_dyn : above it the informative branch is gone; delta_it : the free entropies cross.
    Each is None when not in [min(noise_vars), max(noise_vars)], else refined by bisection to
    DELTA_TOL relative. transition : 'first-order' (a range of two distinct stable branches,
    delta_alg < delta_it < delta_dyn), 'continuous' (all three at the point where M = 0 loses
    stability, zero-mean priors) or None.
    """

    noise_vars: np.ndarray
    uninformative: LowRankBranch
    informative: LowRankBranch
    bayes_branch: np.ndarray
    M: np.ndarray
    mse: np.ndarray
    matrix_mse: np.ndarray
    free_entropy: np.ndarray
    mutual_information: np.ndarray
    delta_spectral: float
    delta_alg: float = None
    delta_dyn: float = None
    delta_it: float = None
    transition: str = None


def lowrank_bayes_optimal(prior, noise_vars, nodes=Nodes()):
    """SE fixed points from uninformative and informative starts, free entropies, Bayes-optimal errors
    and the thresholds delta_alg, delta_it, delta_dyn of the symmetric spiked model (k = 1) over the
    increasing noise variances `noise_vars` (a first-order range narrower than their spacing is missed)."""
    deltas = np.asarray(noise_vars, dtype=float)
    if deltas.ndim != 1 or deltas.size < 2 or not np.all(np.diff(deltas) > 0):
        raise ValueError("noise_vars must be an increasing 1-d array of at least two noise variances")
    check_positive("noise_vars", deltas[0])
    se = SpikedWignerSE(prior, nodes)
    rows = {"low": [], "high": []}
    for delta in deltas:
        for key, M in zip(("low", "high"), se.branches(delta)):
            rows[key].append((M, se.rho - M, se.rho ** 2 - M * M, se.free_entropy(M, delta)))
    low, high = (LowRankBranch(*map(np.array, zip(*rows[key]))) for key in ("low", "high"))
    separated = high.M - low.M > 1e-6 * se.rho
    # where the branches coincide, the fixed point is informative when it knows more than the mean
    pick_high = np.where(separated, high.free_entropy > low.free_entropy, high.M > se.mu2 + 1e-6 * se.rho)
    choose = lambda name: np.where(pick_high, getattr(high, name), getattr(low, name))  # noqa: E731
    phi = choose("free_entropy")
    result = LowRankBayesOptimalResult(
        noise_vars=deltas, uninformative=low, informative=high,
        bayes_branch=np.where(pick_high, "informative", "uninformative"), M=choose("M"), mse=choose("mse"),
        matrix_mse=choose("matrix_mse"), free_entropy=phi, mutual_information=se.rho ** 2 / (4.0 * deltas) - phi,
        delta_spectral=se.rho ** 2)
    _thresholds(se, deltas, low, high, result)
    return result


def _separated(se, delta):
    M_low, M_high = se.branches(delta)
    return M_high - M_low > 1e-6 * se.rho


def _bisect(predicate, lo, hi):
    """The point in [lo, hi] where `predicate` switches from its value at lo to its value at hi."""
    at_lo = predicate(lo)
    while hi - lo > DELTA_TOL * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if predicate(mid) == at_lo else (lo, mid)
    return 0.5 * (lo + hi)


def _thresholds(se, deltas, low, high, result):
    sep = high.M - low.M > 1e-6 * se.rho
    if not sep.any():
        zero_mean_switch = se.mu2 == 0.0 and deltas[0] <= se.var ** 2 <= deltas[-1]
        if zero_mean_switch:
            result.transition = "continuous"
            result.delta_alg = result.delta_dyn = result.delta_it = se.var ** 2
        return
    result.transition = "first-order"
    first, last = np.nonzero(sep)[0][[0, -1]]
    if first > 0:
        result.delta_alg = _bisect(lambda d: _separated(se, d), deltas[first - 1], deltas[first])
    if last < deltas.size - 1:
        result.delta_dyn = _bisect(lambda d: _separated(se, d), deltas[last], deltas[last + 1])
    lowest = deltas[first] if result.delta_alg is None else result.delta_alg

    def informative_wins(d):
        """Phi_informative > Phi_uninformative; where the branches coincide, whether d lies below the range."""
        M_low, M_high = se.branches(d)
        if M_high - M_low > 1e-6 * se.rho:
            return se.free_entropy(M_high, d) > se.free_entropy(M_low, d)
        return d < lowest

    wins = [informative_wins(d) for d in deltas]
    switch = [j for j in range(deltas.size - 1) if wins[j] and not wins[j + 1]]
    if switch:
        result.delta_it = _bisect(informative_wins, deltas[switch[0]], deltas[switch[0] + 1])
