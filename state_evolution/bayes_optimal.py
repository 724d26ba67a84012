"""Bayes-optimal analysis of a GLM (k = L = 1): SE fixed points, replica free entropy,
error curves and phase transitions.

On the Nishimori line the SE is the monotone map q -> F(q) = Q(alpha G(q)) with
    G(q) = E[g_out^2](q)       (output side, alpha-free),   Q(q_hat) = E[f_in(B, q_hat)^2],
and the replica-symmetric free entropy of a fixed point (q, q_hat = alpha G(q)) is
    Phi = Psi_in(q_hat) + alpha Psi_out(q) - q q_hat / 2,
    Psi_in(q_hat) = E log Z_in(q_hat w* + sqrt(q_hat) xi, q_hat),
    Psi_out(q) = E log Z_out(y, sqrt(q) xi, rho - q),  y ~ P_out(. | sqrt(q) xi + sqrt(rho - q) zeta)
(Barbier et al., PNAS 2019). Fixed points are the roots of h(q) = F(q) - q on [mu^2, rho]; the
uninformative branch is the one the SE reaches from q = mu^2 (+ a vanishing overlap), the
informative branch the one it reaches from q = rho. When the informative branch is perfect
recovery (h > 0 up to q = rho) it is represented at V = rho - q = MIN_VARIANCE_FRACTION rho; its
free entropy may then diverge like kappa log(1 / V) (a continuous prior with a noiseless
channel), and kappa's sign decides the comparison.
"""
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import optimize

from amp.validation import check_positive
from state_evolution.gamp import MIN_VARIANCE_FRACTION, q_bayes
from state_evolution.integrate import Nodes, input_expectation, output_conditional, output_expectation

#: relative tolerance to which thresholds are refined by bisection (in alpha)
ALPHA_TOL = 1e-5
#: a free-entropy slope in log(1/V) beyond this is a divergence (+-inf)
KAPPA_TOL = 1e-6
#: halvings of a grid interval searched for a two-branch region hidden between grid points
JUMP_LEVELS = 12


class NishimoriSE:
    """The Bayes-optimal SE map of one (prior, channel) pair, with its alpha-free integrals cached."""

    def __init__(self, prior, channel, nodes=Nodes(), grid=96):
        if prior.k != 1 or channel.k != 1 or channel.tokens != 1:
            raise ValueError("bayes_optimal handles k = L = 1 denoisers")
        self.prior, self.channel, self.nodes = prior, channel, nodes
        self.rho = float(prior.second_moment()[0, 0])
        self.mu2 = float(prior.mean()[0]) ** 2
        self.q_max = self.rho - MIN_VARIANCE_FRACTION * self.rho
        span = self.rho - self.mu2
        # uniform in q, then geometric towards rho (V = rho - q down to the floor)
        uniform = self.mu2 + span * np.linspace(0.0, 1.0, grid // 2, endpoint=False)
        tail = self.rho - span * np.geomspace(0.5, MIN_VARIANCE_FRACTION * self.rho / span, grid - grid // 2)
        self.grid = np.unique(np.concatenate([uniform, tail, [self.q_max]]))
        self.G = lru_cache(maxsize=None)(self._G)
        self.Q = lru_cache(maxsize=None)(self._Q)
        self.psi_out = lru_cache(maxsize=None)(self._psi_out)
        self.psi_in = lru_cache(maxsize=None)(self._psi_in)

    def _output(self, fn, q):
        V = self.rho - q
        return output_expectation(self.channel, fn, math.sqrt(q), math.sqrt(q), math.sqrt(V), V, self.nodes)

    def _G(self, q):
        Vm = np.array([[self.rho - q]])
        return float(self._output(lambda y, Om: self.channel.g_out(y, Om, Vm)[0][:, 0, 0] ** 2, q))

    def _psi_out(self, q):
        Vm = np.array([[self.rho - q]])
        return float(self._output(lambda y, Om: self.channel.log_z_out(y, Om, Vm), q))

    def _Q(self, q_hat):
        return q_bayes(self.prior, q_hat, self.nodes)

    def _psi_in(self, q_hat):
        if q_hat == 0.0:
            return 0.0
        A = np.array([[q_hat]])
        return float(input_expectation(self.prior, lambda B, w: self.prior.log_z_in(B, A), q_hat, q_hat, self.nodes))

    def h(self, q, alpha):
        """F(q) - q: positive where the SE increases the overlap."""
        return self.Q(alpha * self.G(float(q))) - q

    def _refine(self, lo, hi, alpha):
        return optimize.brentq(lambda q: self.h(q, alpha), lo, hi, xtol=1e-13 * self.rho, rtol=1e-13)

    def branches(self, alpha):
        """(q_uninformative, q_informative): the SE fixed points reached from mu^2 and from rho."""
        q = self.grid
        h = np.array([self.h(x, alpha) for x in q])
        scale = 1e-12 * self.rho
        # from below: mu^2 is a fixed point when G(mu^2) = 0; it is left when h > 0 just above it
        if h[0] <= scale and h[1] < 0:
            q_low = self.mu2 if abs(h[0]) <= scale else self._refine(q[0], q[1], alpha)
        else:
            start = 1 if abs(h[0]) <= scale else 0
            down = np.nonzero(h[start:] < 0)[0]
            q_low = self.q_max if down.size == 0 else self._refine(q[start + down[0] - 1], q[start + down[0]], alpha)
        # from above: perfect recovery when h >= 0 at the floor of V
        if h[-1] >= 0:
            q_high = self.q_max
        else:
            up = np.nonzero(h >= 0)[0]
            q_high = self.mu2 if up.size == 0 else self._refine(q[up[-1]], q[up[-1] + 1], alpha)
        return q_low, q_high

    def free_entropy(self, q, alpha):
        """Phi at the fixed point q (finite value), and its slope kappa in log(1/V) at perfect recovery."""
        phi = self._phi(q, alpha)
        if q < self.q_max:
            return phi, 0.0
        q_up = self.rho - 100.0 * (self.rho - self.q_max)
        kappa = (phi - self._phi(q_up, alpha)) / math.log(100.0)
        return phi, kappa

    def _phi(self, q, alpha):
        q_hat = alpha * self.G(q)
        return self.psi_in(q_hat) + alpha * self.psi_out(q) - 0.5 * q * q_hat

    def gen_error(self, q):
        """Test error of the Bayes-optimal predictor at overlap q: misclassification rate for a
        finite label set (argmax_y Z_out(y | omega, V)), else the MSE of E[y | omega, V]."""
        V = self.rho - q
        Vm = np.array([[V]])
        labels = getattr(self.channel, "labels", None)
        if labels is not None:
            def wrong(y, Om):
                log_z = np.stack([self.channel.log_z_out(np.full(y.shape, lab), Om, Vm) for lab in labels])
                return (y != np.asarray(labels)[np.argmax(log_z, axis=0)]).astype(float)
            return float(self._output(wrong, q))
        (m1, m2), h_xi = output_conditional(self.channel, lambda y, Om: (y, y * y), math.sqrt(q), math.sqrt(q),
                                            math.sqrt(V), V, self.nodes)
        return float(np.sum(h_xi * (m2 - m1 ** 2)))

    def weak_slope(self):
        """d F / d q at q = mu^2 per unit alpha, when mu^2 is a fixed point (else None):
        F'(mu^2) = alpha Q'(0) G'(mu^2) with Q'(0) = Var(w)^2."""
        if abs(self.G(self.mu2)) > 1e-12:
            return None
        step = 1e-4 * (self.rho - self.mu2)
        slope_G = (4.0 * self.G(self.mu2 + step) - self.G(self.mu2 + 2 * step)) / (2.0 * step)  # G(mu^2) = 0
        return (self.rho - self.mu2) ** 2 * slope_G


def _compare(se, alpha, q_low, q_high):
    """Phi(informative) - Phi(uninformative), +-inf when the informative one diverges."""
    phi_low, _ = se.free_entropy(q_low, alpha)
    phi_high, kappa = se.free_entropy(q_high, alpha)
    if kappa > KAPPA_TOL:
        return math.inf
    if kappa < -KAPPA_TOL:
        return -math.inf
    return phi_high - phi_low


def _bisect(predicate, lo, hi):
    """Smallest alpha in [lo, hi] with predicate true, predicate(lo) false and predicate(hi) true."""
    while hi - lo > ALPHA_TOL * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if predicate(mid) else (mid, hi)
    return 0.5 * (lo + hi)


def _separated(q_low, q_high, rho):
    return q_high - q_low > 1e-6 * rho


@dataclass
class Branch:
    """One SE branch over the alphas: arrays of q, q_hat, mse, gen_error, free_entropy."""

    q: np.ndarray
    q_hat: np.ndarray
    mse: np.ndarray
    gen_error: np.ndarray
    free_entropy: np.ndarray


@dataclass
class BayesOptimalResult:
    """Bayes-optimal error curves and thresholds.

    uninformative / informative : Branch; bayes_branch : per alpha, 'informative' where its free
    entropy is larger, else 'uninformative'; mse, gen_error, free_entropy : of that branch.
    alpha_weak : where the uninformative fixed point q = mu^2 loses stability; alpha_alg : where
    the SE from mu^2 first reaches the informative branch; alpha_it : where the free entropies
    cross. Each is None when it is not in [min(alphas), max(alphas)], else refined by bisection
    to ALPHA_TOL relative. transition : 'first-order' (a range of two distinct stable branches),
    'continuous' or None.
    """

    alphas: np.ndarray
    uninformative: Branch
    informative: Branch
    bayes_branch: np.ndarray
    mse: np.ndarray
    gen_error: np.ndarray
    free_entropy: np.ndarray
    alpha_weak: float = None
    alpha_alg: float = None
    alpha_it: float = None
    transition: str = None
    notes: list = field(default_factory=list)


def bayes_optimal(prior, channel, alphas, nodes=Nodes()):
    """SE fixed points from uninformative and informative starts, free entropies, Bayes-optimal
    MSE and generalisation error over `alphas`, and the thresholds alpha_weak, alpha_alg, alpha_it."""
    alphas = np.asarray(alphas, dtype=float)
    if alphas.ndim != 1 or alphas.size < 2 or not np.all(np.diff(alphas) > 0):
        raise ValueError("alphas must be an increasing 1-d array of at least two sample ratios")
    for a in (alphas[0],):
        check_positive("alphas", a)
    se = NishimoriSE(prior, channel, nodes)
    rows = {"low": [], "high": []}
    for alpha in alphas:
        for key, q in zip(("low", "high"), se.branches(alpha)):
            q_hat = alpha * se.G(q)
            phi, kappa = se.free_entropy(q, alpha)
            phi = math.copysign(math.inf, kappa) if abs(kappa) > KAPPA_TOL else phi
            rows[key].append((q, q_hat, se.rho - q, se.gen_error(q), phi))
    low, high = (Branch(*map(np.array, zip(*rows[key]))) for key in ("low", "high"))
    pick_high = np.array([_compare(se, a, ql, qh) > 0 if _separated(ql, qh, se.rho) else True
                          for a, ql, qh in zip(alphas, low.q, high.q)])
    choose = lambda name: np.where(pick_high, getattr(high, name), getattr(low, name))  # noqa: E731
    result = BayesOptimalResult(alphas=alphas, uninformative=low, informative=high,
                                bayes_branch=np.where(pick_high, "informative", "uninformative"),
                                mse=choose("mse"), gen_error=choose("gen_error"), free_entropy=choose("free_entropy"))
    _thresholds(se, alphas, low, high, result)
    return result


def _coexistence_grid(se, alphas, q_low):
    """alphas, plus a point inside each two-branch region narrower than the grid spacing.

    Between neighbours that both show one branch but whose overlaps jump by more than a tenth of
    the prior's variance, the midpoint is examined, halving up to JUMP_LEVELS times.
    """
    grid, span = list(alphas), se.rho - se.mu2
    for a0, a1, q0, q1 in zip(alphas[:-1], alphas[1:], q_low[:-1], q_low[1:]):
        for _ in range(JUMP_LEVELS):
            if abs(q1 - q0) <= 0.1 * span:
                break
            mid = 0.5 * (a0 + a1)
            q_mid_low, q_mid_high = se.branches(mid)
            if _separated(q_mid_low, q_mid_high, se.rho):
                grid.append(mid)
                break
            a0, q0, a1, q1 = (mid, q_mid_low, a1, q1) if abs(q1 - q_mid_low) > abs(q_mid_low - q0) else (a0, q0, mid, q_mid_low)
    return np.array(sorted(grid))


def _thresholds(se, alphas, low, high, result):
    lo, hi = alphas[0], alphas[-1]
    slope = se.weak_slope()
    if slope is not None and slope > 0 and lo <= 1.0 / slope <= hi:
        result.alpha_weak = 1.0 / slope
    alphas = _coexistence_grid(se, alphas, low.q)
    sep = [_separated(*se.branches(a), se.rho) for a in alphas]
    if not any(sep):
        if result.alpha_weak is not None:
            result.transition = "continuous"
            result.alpha_it = result.alpha_alg = result.alpha_weak
        return
    result.transition = "first-order"
    if not sep[-1]:
        last = max(i for i, s in enumerate(sep) if s)
        result.alpha_alg = _bisect(lambda a: not _separated(*se.branches(a), se.rho), alphas[last], alphas[last + 1])
    alpha_alg = math.inf if result.alpha_alg is None else result.alpha_alg

    def informative_wins(a):
        q_low, q_high = se.branches(a)
        if _separated(q_low, q_high, se.rho):
            return _compare(se, a, q_low, q_high) > 0
        return a >= alpha_alg

    flags = [informative_wins(a) for a in alphas]
    if flags[-1] and not flags[0]:
        first = flags.index(True)
        result.alpha_it = _bisect(informative_wins, alphas[first - 1], alphas[first])
