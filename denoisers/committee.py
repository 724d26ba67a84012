"""Committee machines and other multi-index channels (L = 1, k > 1).

Committee(k, activation): y = sign(sum_a act(z_a)), sign(0) = 0, through `Quadrature`, except the
closed form for k = 2 and the sign activation. There the label regions are orthants: y = +1 on
z1, z2 > 0, y = -1 on z1, z2 < 0, y = 0 on the two mixed ones. With sigma_a = sqrt(V_aa),
mu = omega / sigma and r = V_12 / (sigma_1 sigma_2), an orthant (s1, s2) has the probability
    P_s(mu) = Phi2(s1 mu_1, s2 mu_2; s1 s2 r),   P(+-1) = P_(+-1, +-1),   P(0) = P_(1, -1) + P_(-1, 1),
and closed-form derivatives (c_1 = (mu_2 - r mu_1) / sqrt(1 - r^2), c_2 likewise, phi2 = phi2(mu_1, mu_2; r))
    d_1 P_s = s1 phi(mu_1) Phi(s2 c_1),   d_1^2 P_s = -mu_1 d_1 P_s - s1 s2 r phi2,   d_1 d_2 P_s = s1 s2 phi2,
so that g = d log P(y) / d omega and dg = d^2 P(y) / P(y) - g g^T (scaled by 1 / sigma) need only log P(y)
besides: `bvn_cdf` (fixed rules, absolute error ~2e-15) where P(y) >= exp(-TAIL), `log_bvn_cdf` below.

`log_bvn_cdf` gives log Phi2 with relative accuracy far in the tails, for every |rho| < 1: in the
frame of the bisector of the two constraints (slopes of the boundary lines at most 1) Phi2 is one
or two integrals over a half-line of phi(x) F(x), F the (log-concave) mass of a slice, each on the
window where its log-concave integrand is within e^-40 of its maximum, by Gauss-Legendre.
"""
import math

import numpy as np

from amp.backend import log_diff_ndtr, log_ndtr, log_npdf, logsumexp, namespace, ndtr
from denoisers.generic import Quadrature, bisect, checked_covariance, chunked, constant, gauss_legendre_panels
from denoisers.product_channel import ProductChannel
from denoisers.quadrature import gauss_legendre

#: Gauss-Legendre nodes on each side of the mode of a half-line integral of `log_bvn_cdf`
BVN_NODES = 24
#: the window of a half-line integral keeps its integrand within e^-DROP of the maximum
DROP = 40.0
#: Gauss-Legendre nodes of `bvn_cdf` for |rho| below each bound (as Genz 2004; absolute error ~2e-15)
BULK_NODES = ((0.3, 6), (0.75, 12), (1.0, 20))
#: from this |rho| on, `bvn_cdf` integrates Plackett's identity from the nearer end rho = +-1
NEAR_ONE = 0.925
#: `bvn_cdf` clips its arguments to +-CLIP: Phi2 changes by at most Phi(-CLIP) ~ 1e-300, exp(CLIP^2 / 2) is finite
CLIP = 37.0
#: label probabilities below exp(-TAIL) come from `log_bvn_cdf` (`bvn_cdf` keeps ~1e-11 relative above)
TAIL = 10.0
ACTIVATIONS = ("sign", "relu", "linear")


def _checked_rho(rho):
    rho = float(rho)
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must lie in (-1, 1), got {rho}")
    return rho


def bvn_cdf(a, b, rho):
    """Phi2(a, b; rho) = P(X1 < a, X2 < b) with absolute error ~2e-15 (not relative: `log_bvn_cdf` for the tails).

    a, b : arrays of one shape; rho : a float in (-1, 1). Plackett's identity d Phi2 / d rho = phi2(a, b; rho)
    integrated from rho = 0 (in t = asin rho, Drezner and Wesolowsky 1990) for |rho| < NEAR_ONE,
        Phi2 = Phi(a) Phi(b) + (1/2pi) ∫_0^{asin rho} exp(-(a^2 + b^2 - 2ab sin t) / (2 cos^2 t)) dt,
    by Gauss-Legendre (BULK_NODES); from rho = 1 for rho >= NEAR_ONE (`_bvn_near_one`), and for
    rho <= -NEAR_ONE by Phi2(a, b; rho) = Phi(a) - Phi2(a, -b; -rho).
    """
    rho = _checked_rho(rho)
    xp = namespace(a, b)
    a, b = xp.clip(a, -CLIP, CLIP), xp.clip(b, -CLIP, CLIP)
    if rho >= NEAR_ONE:
        return _bvn_near_one(a, b, rho)
    if rho <= -NEAR_ONE:
        return ndtr(a) - _bvn_near_one(a, -b, -rho)
    nodes = next(n for bound, n in BULK_NODES if abs(rho) < bound)
    t, w = gauss_legendre(nodes)
    theta = 0.5 * math.asin(rho) * (t + 1.0)
    sec2 = 1.0 / np.cos(theta) ** 2
    log_f = _outer(a * b, np.sin(theta) * sec2) - _outer(0.5 * (a * a + b * b), sec2)
    return ndtr(a) * ndtr(b) + xp.exp(log_f) @ constant(math.asin(rho) * w / (4.0 * math.pi), a)


def _bvn_near_one(a, b, rho):
    """Phi2(a, b; rho) for rho >= NEAR_ONE. With s = sqrt(1 - t^2) in ∫_rho^1 phi2(a, b; t) dt,
        Phi2 = Phi(min(a, b)) - (1/2pi) ∫_0^A exp(-d^2 / (2 s^2)) h(s^2) ds,   A = sqrt(1 - rho^2), d = a - b,
        h(x) = exp(-ab / (1 + sqrt(1 - x))) / sqrt(1 - x) = exp(-ab / 2) (1 + c1 x + c2 x^2 + O(x^3)),
    c1 = (4 - ab) / 8, c2 = c1 (12 - ab) / 16. The Taylor part is exp(-ab / 2) (G_0 + c1 G_1 + c2 G_2), with
        G_j = ∫_0^A s^2j exp(-d^2 / (2 s^2)) ds:   G_0 = A e - |d| sqrt(2pi) Phi(-|d| / A),
        G_j = (A^(2j+1) e - d^2 G_(j-1)) / (2j + 1),   e = exp(-d^2 / (2 A^2)),
    and the rest, exp(-d^2 / (2 s^2)) O(s^6) (smooth even for d -> 0), takes 20-point Gauss-Legendre on [0, A].
    exp(-ab / 2) enters each exponential, whose argument is then <= 0 (d^2 >= -4ab).
    """
    xp = namespace(a, b)
    A2 = (1.0 - rho) * (1.0 + rho)
    A = math.sqrt(A2)
    hk, d2 = a * b, (a - b) * (a - b)
    d = xp.sqrt(d2)
    c1 = (4.0 - hk) / 8.0
    c2 = c1 * (12.0 - hk) / 16.0
    e = xp.exp(-0.5 * hk - 0.5 * d2 / A2)  # exp(-ab / 2) e; G0, G1, G2 below are exp(-ab / 2) G_j
    G0 = A * e - math.sqrt(2.0 * math.pi) * d * xp.exp(-0.5 * hk + log_ndtr(-d / A))
    G1 = (A2 * A * e - d2 * G0) / 3.0
    G2 = (A2 * A2 * A * e - d2 * G1) / 5.0
    t, w = gauss_legendre(BULK_NODES[-1][1])
    x = (0.5 * A * (t + 1.0)) ** 2
    root = np.sqrt(1.0 - x)
    gauss = _outer(d2, -0.5 / x)
    rest = (xp.exp(gauss - _outer(hk, 1.0 / (1.0 + root))) / constant(root, a)
            - xp.exp(gauss - 0.5 * hk[..., None]) * (1.0 + _outer(c1, x) + _outer(c2, x * x)))
    integral = G0 + c1 * G1 + c2 * G2 + rest @ constant(0.5 * A * w, a)
    return ndtr(xp.minimum(a, b)) - integral / (2.0 * math.pi)


def _outer(v, c):
    """v (...) times the NumPy constants c (m,): (..., m) in v's namespace."""
    return v[..., None] * constant(c, v)


def log_bvn_cdf(a, b, rho, nodes=BVN_NODES):
    """log Phi2(a, b; rho) = log P(X1 < a, X2 < b), X standard bivariate normal with correlation rho.

    a, b : arrays of one shape; rho : a float in (-1, 1). Relative accuracy ~1e-14 (nodes = 24).
    rho >= 0: with c = sqrt((1 + rho) / 2), s = sqrt((1 - rho) / 2), x_A = (b - a) / (2 s),
        Phi2 = ∫_{-x_A}^∞ phi(x) Phi((a - x s) / c) dx + ∫_{x_A}^∞ phi(x) Phi((b - x s) / c) dx;
    rho < 0: with c = sqrt((1 - rho) / 2), s = sqrt((1 + rho) / 2), x_A = -(a + b) / (2 s), m = (a - b) / (2 c),
        Phi2 = ∫_{x_A}^∞ phi(x) [Phi(m + (x - x_A) s / c) - Phi(m - (x - x_A) s / c)] dx.
    """
    rho = _checked_rho(rho)
    xp = namespace(a, b)
    if rho >= 0.0:
        c, s = math.sqrt(0.5 * (1.0 + rho)), math.sqrt(0.5 * (1.0 - rho))
        x_A = (b - a) / (2.0 * s)
        x0 = xp.stack([-x_A, x_A])
        alpha = xp.stack([a, b]) - x0 * s  # so that the slice is x2 < (alpha - w s) / c at x = x0 + w
        arg = lambda w: (_expand(alpha, w) - w * s) / c  # noqa: E731
        log_f = lambda w: log_ndtr(arg(w))  # noqa: E731
        d_log_f = lambda w: -(s / c) * xp.exp(log_npdf(arg(w)) - log_ndtr(arg(w)))  # noqa: E731
        # F decreases: the mode lies in [x0, max(x0, 0)]
        reach = xp.where(x0 > 0.0, 0.0, -x0) + 1.0
        return logsumexp(_log_half_line(x0, log_f, d_log_f, reach, nodes), axis=0)
    c, s = math.sqrt(0.5 * (1.0 - rho)), math.sqrt(0.5 * (1.0 + rho))
    x0, m, slope = -(a + b) / (2.0 * s), (a - b) / (2.0 * c), s / c
    log_f = lambda w: _log_segment(_expand(m, w), slope * w)  # noqa: E731

    def d_log_f(w):
        mw, lf = _expand(m, w), log_f(w)
        return slope * (xp.exp(log_npdf(mw + slope * w) - lf) + xp.exp(log_npdf(mw - slope * w) - lf))
    # the mode lies within the distance of the apex (x_A, m) from the origin, plus a margin
    return _log_half_line(x0, log_f, d_log_f, xp.abs(x0) + xp.abs(m) + 10.0, nodes)


def _expand(v, w):
    """v (shape S) broadcast against w (shape S + extra axes)."""
    return namespace(v).reshape(v, tuple(v.shape) + (1,) * (w.ndim - v.ndim))


def _log_half_line(x0, log_f, d_log_f, reach, nodes):
    """log ∫_{x0}^∞ phi(x) F(x) dx for log-concave F given as log_f(w), d_log_f(w) of w = x - x0.

    psi(w) = log phi(x0 + w) + log F is concave with psi'' <= -1: its maximum w_hat (in [0, reach]) is
    bisected on psi', then the window edges where psi = psi(w_hat) - DROP (at most sqrt(2 DROP) to the
    left, and 2 DROP / (sqrt(lam^2 + 2 DROP) + lam) to the right, lam = -psi'(w_hat) >= 0), and
    Gauss-Legendre with `nodes` points integrates each side of w_hat.
    """
    xp = namespace(x0)
    psi = lambda w: log_npdf(_expand(x0, w) + w) + log_f(w)  # noqa: E731
    d_psi = lambda w: d_log_f(w) - (_expand(x0, w) + w)  # noqa: E731
    w_hat = bisect(lambda w: d_psi(w) > 0.0, xp.zeros_like(x0), reach, 45)
    level = psi(w_hat) - DROP
    width = math.sqrt(2.0 * DROP)
    left = bisect(lambda w: psi(w) < level, xp.where(w_hat > width, w_hat - width, 0.0), w_hat, 40)
    slope = xp.where(d_psi(w_hat) < 0.0, -d_psi(w_hat), 0.0)
    right_max = w_hat + 2.0 * DROP / (xp.sqrt(slope * slope + 2.0 * DROP) + slope)
    right = bisect(lambda w: psi(w) >= level, w_hat, right_max, 40)
    w, log_w = gauss_legendre_panels(xp.stack([left, w_hat], axis=-1), xp.stack([w_hat, right], axis=-1), nodes)
    return logsumexp(log_w + psi(w), axis=-1)


def _log_segment(m, h):
    """log(Phi(m + h) - Phi(m - h)) for h >= 0; for h (1 + |m|) < 1e-3 the Taylor form
    log(2 h phi(m)) + log1p((m^2 - 1) h^2 / 6) (the difference of the logs would round to 0)."""
    xp = namespace(m, h)
    small = h * (1.0 + xp.abs(m)) < 1e-3
    h_small, h_large = xp.where(small, h, 1.0), xp.where(small, 1.0, h)
    taylor = xp.log(2.0 * h_small) + log_npdf(m) + xp.log1p((m * m - 1.0) * h_small * h_small / 6.0)
    return xp.where(small, taylor, log_diff_ndtr(m - h_large, m + h_large))


def sign_committee_2(y, Omega, V, nodes=BVN_NODES):
    """Closed form of y = sign(sign z1 + sign z2): log Z_out = log P(y) (n,), g (n, 1, 2) and dg (n, 1, 2, 1, 2),
    for y (n,) in {-1, 0, 1} (other labels: -inf and the prior's g = dg = 0), Omega (n, 1, 2), V (2, 2);
    `nodes` those of `log_bvn_cdf` in the tails. Derivatives as in the module doc, in log domain."""
    V, _, host = checked_covariance(V, 2, Omega)
    return _sign_committee_2(y, Omega, V, host, nodes)


def _sign_committee_2(y, Omega, V, host, nodes):
    """`sign_committee_2` for a checked V (2, 2) of Omega's dtype and device, and its host copy."""
    xp = namespace(Omega)
    sigma = xp.sqrt(xp.stack([V[0, 0], V[1, 1]]))
    r = float(host[0, 1] / math.sqrt(host[0, 0] * host[1, 1]))
    y = xp.astype(y, Omega.dtype)
    known = (y == 1.0) | (y == -1.0) | (y == 0.0)
    y = xp.where(known, y, 1.0)
    mu = Omega[:, 0, :] / sigma
    log_p = _log_label_probability(y, mu[:, 0], mu[:, 1], r, nodes)
    g, h = _label_derivatives(y, mu, r, log_p)
    n = Omega.shape[0]
    g = xp.where(known[:, None], g / sigma, 0.0)
    dg = xp.where(known[:, None, None], h / (sigma[:, None] * sigma[None, :]), 0.0)
    return (xp.where(known, log_p, -math.inf), xp.reshape(g, (n, 1, 2)), xp.reshape(dg, (n, 1, 2, 1, 2)))


def _log_label_probability(y, m1, m2, r, nodes):
    """log P(y) (n,) for y (n,) in {-1, 0, 1} at mu = (m1, m2) (n,): from `bvn_cdf` by
    P(+-1) = Phi2(+-m1, +-m2; r), P(0) = Phi(s m1) + Phi(s m2) - 2 Phi2(s m1, s m2; r) (one Phi2 per sample;
    s = -sign(m1 + m2) for the smaller terms), and where that is below exp(-TAIL), on those rows only, from
    `log_bvn_cdf` of the label's orthants."""
    xp = namespace(m1, m2)
    flip = (y < 0.0) | ((y == 0.0) & (m1 + m2 > 0.0))
    a, b = xp.where(flip, -m1, m1), xp.where(flip, -m2, m2)
    p2 = bvn_cdf(a, b, r)
    p = xp.where(y == 0.0, ndtr(a) + ndtr(b) - 2.0 * p2, p2)
    tail = p < math.exp(-TAIL)
    log_p = xp.log(xp.where(tail, 1.0, p))
    if bool(xp.any(tail)):
        log_p[tail] = _log_orthants(y[tail], a[tail], b[tail], r, nodes)
    return log_p


def _log_orthants(y, a, b, r, nodes):
    """log P(y) (m,) by `log_bvn_cdf` (relative accuracy far in the tails), for a, b (m,) the (flipped) mu:
    Phi2(a, b; r) for y = +-1, Phi2(a, -b; -r) + Phi2(-a, b; -r) for y = 0 (unchanged by the flip)."""
    xp = namespace(a, b)
    tie = y == 0.0
    log_p = xp.empty_like(a)
    if bool(xp.any(~tie)):
        log_p[~tie] = log_bvn_cdf(a[~tie], b[~tie], r, nodes)
    if bool(xp.any(tie)):
        a, b = a[tie], b[tie]
        log_p[tie] = logsumexp(log_bvn_cdf(xp.stack([a, -a]), xp.stack([-b, b]), -r, nodes), axis=0)
    return log_p


def _label_derivatives(y, mu, r, log_p):
    """Gradient (n, 2) and Hessian (n, 2, 2) of log P(y) in mu (n, 2) (see the module doc), each orthant term divided
    by P(y) = exp(log_p) in log domain. The label's orthants fill two slots: (1, -1) and (-1, 1) for y = 0, (y, y)
    counted once for y = +-1."""
    xp = namespace(mu)
    q = math.sqrt((1.0 - r) * (1.0 + r))
    tie = y == 0.0
    is_tie = xp.astype(tie, y.dtype)
    s1 = xp.stack([xp.where(tie, 1.0, y), xp.where(tie, -1.0, y)], axis=-1)  # (n, slot)
    s = xp.stack([s1, s1 * (1.0 - 2.0 * is_tie)[:, None]], axis=1)  # (n, a, slot): s_a of each orthant
    count = xp.stack([xp.ones_like(y), is_tie], axis=-1)
    c = (xp.flip(mu, axis=-1) - r * mu) / q  # c_a = (mu_b - r mu_a) / q
    log_u = (log_npdf(mu) - log_p[:, None])[..., None] + log_ndtr(xp.flip(s, axis=1) * c[..., None])
    g = xp.sum(count[:, None, :] * s * xp.exp(log_u), axis=-1)  # sum_slots s_a phi(mu_a) Phi(s_b c_a) / P(y)
    log_phi2 = -0.5 * (xp.sum(mu * mu, axis=-1) - 2.0 * r * mu[:, 0] * mu[:, 1]) / (q * q) - math.log(2.0 * math.pi * q)
    kappa = (1.0 - 3.0 * is_tie) * xp.exp(log_phi2 - log_p)  # times the sum over the label's orthants of s1 s2
    eye = constant(np.eye(2), mu)
    hess = (kappa[:, None, None] * (1.0 - (1.0 + r) * eye) - (mu * g)[:, :, None] * eye
            - g[:, :, None] * g[:, None, :])
    return g, hess


class Committee(Quadrature):
    """Committee machine y = sign(sum_a act(z_a)) on k hidden units, sign(0) = 0, L = 1.

    activation : "sign", "relu", "linear" or a callable act(z) in the namespace of z. Labels: {-1, 1}
    for odd k with "sign" and for "linear", {0, 1} for "relu", else {-1, 0, 1}. k = 2 with "sign" is
    the closed form (`sign_committee_2`, `nodes` its Gauss-Legendre nodes); the rest `Quadrature`.
    """

    def __init__(self, k, activation="sign", nodes=None):
        act = _activation(activation)
        self.activation = activation
        self.closed_form = activation == "sign" and k == 2

        def committee(Z):
            return namespace(Z).sign(namespace(Z).sum(act(Z[..., 0, :]), axis=-1))
        super().__init__(committee, tokens=1, k=k, labels=_committee_labels(k, activation), nodes=nodes)

    def __repr__(self):
        return f"Committee(k={self.k}, activation={self.activation!r}, nodes={self.nodes})"

    def _default_nodes(self):
        return BVN_NODES if self.closed_form else super()._default_nodes()

    def _posterior(self, y, Omega, V, nodes):
        if not self.closed_form:
            return super()._posterior(y, Omega, V, nodes)
        V, _, host = self._checked(y, Omega, V)
        return chunked(lambda y, Omega: _sign_committee_2(y, Omega, V, host, nodes), 4 * nodes, y, Omega)


def _activation(activation):
    if callable(activation):
        return activation
    if activation == "sign":
        return lambda z: namespace(z).sign(z)
    if activation == "relu":
        return lambda z: namespace(z).where(z > 0.0, z, 0.0)
    if activation == "linear":
        return lambda z: z
    raise ValueError(f"activation must be one of {ACTIVATIONS} or a callable, got {activation!r}")


def _committee_labels(k, activation):
    if activation == "linear" or (activation == "sign" and k % 2 == 1):
        return (-1.0, 1.0)
    if activation == "relu":
        return (0.0, 1.0)
    return (-1.0, 0.0, 1.0)


def z1_times_z2(noise_var):
    """y = z1 z2 + sqrt(noise_var) eta (L = 1, k = 2): the `ProductChannel`, a 1-D integral over z1."""
    return ProductChannel(noise_var)


def sign_z1_times_z2():
    """y = sign(z1 z2) in {-1, 1} (L = 1, k = 2), by the line rule of `Quadrature`."""
    return Quadrature(lambda Z: namespace(Z).sign(Z[..., 0, 0] * Z[..., 0, 1]), tokens=1, k=2, labels=(-1.0, 1.0))


def abs_difference(noise_var):
    """y = |z1| - |z2| + sqrt(noise_var) eta (L = 1, k = 2), by Gauss-Hermite quadrature."""
    return Quadrature(lambda Z: namespace(Z).abs(Z[..., 0, 0]) - namespace(Z).abs(Z[..., 0, 1]),
                      tokens=1, k=2, noise_var=noise_var)
