"""The product channel y = z1 z2 + sqrt(noise_var) eta (L = 1, k = 2), by a 1-D integral over z1.

Given z1 = u, z2 is Gaussian: z2 | u ~ N(mu(u), c), mu(u) = omega_2 + beta (u - omega_1), beta = V_12 / V_11,
c = V_22 - V_12^2 / V_11. So y | u ~ N(h(u), s2(u)) with h(u) = u mu(u), s2(u) = c u^2 + noise_var, and
    Z_out = ∫ N(u; omega_1, V_11) N(y; h(u), s2(u)) du,
    z2 | u, y ~ N(m2(u), v2(u)),  m2 = (noise_var mu + c u y) / s2,  v2 = c noise_var / s2.
The posterior moments of (z1, z2) are those of the nodes (u_j, m2(u_j)), with E[v2] added to Var[z2], and
g_out, dg_out follow by `denoisers.posterior.g_from_moments`.

The rule: Gauss-Legendre panels (PANEL_NODES each) on a window omega_1 +- T sqrt(V_11), with edges at
  - the prior's grid omega_1 + sqrt(V_11) PRIOR_EDGES and the window's ends;
  - u = 0 and +- a ZERO_RATIO^j, a = sqrt(noise_var / c), up to the prior's panel width: s2 turns from noise_var
    to c u^2 there, and for y ~ 0 the likelihood has a peak of width ~a and 1/|u| tails (z2 ~ 0 explains y);
  - u = +- sqrt((y^2 / k^2 - noise_var) / c), where |y| / s(u) = k for k in CUTOFF_LEVELS: for y != 0 the
    likelihood is cut off towards u = 0 as exp(-y^2 / (2 s2(u))) (where h(u) << y);
  - on each branch of the parabola h, the points where the standardised residual (h(u) - y) / s(u) = k for k in
    0, +-ROOT_LEVELS (from h(u) = y + k s(u_r), u_r the branch's root of h = y or the vertex of h, then NEWTON
    Newton steps as s varies): the likelihood's peak is resolved in that residual, the same for a simple root
    (Gaussian peak, width s / |h'|) as for a double one (quartic, width sqrt(s / |beta|)) or none (at the vertex);
so that each panel sees an integrand smooth on its own scale, whatever the noise. The log-integrand (plus
log(2 pi sqrt(V_11))) is psi(u) <= -(u - omega_1)^2 / (2 V_11) - log(noise_var) / 2, so with psi_best the largest
psi at omega_1, 0 and the roots, T = sqrt(2 (DROP - log(noise_var) / 2 - psi_best)) drops only u where
psi < psi_best - DROP: T ~ 9.5 for typical labels; an atypical one (psi_best low) widens the window.
"""
import math

import numpy as np

from amp.backend import namespace
from denoisers.base import OutputDenoiser, check_variance
from denoisers.generic import checked_covariance, chunked, constant, gauss_legendre_panels
from denoisers.posterior import g_from_moments
from denoisers.quadrature import gauss_hermite

#: Gauss-Legendre nodes per panel
PANEL_NODES = 12
#: the window keeps the integrand within e^-DROP of its largest value at the candidate points
DROP = 45.0
#: panel edges of the prior, in units of sqrt(V_11) around omega_1
PRIOR_EDGES = np.linspace(-10.0, 10.0, 9)
#: geometric edges around u = 0: their ratio, and at most this many on each side
ZERO_RATIO, ZERO_LEVELS = 3.0, 8
#: panel edges where the likelihood's standardised residual |y - h(u)| / s is these, near each root of h(u) = y
ROOT_LEVELS = np.array([2.0, 5.0, 10.0])
#: edges near u = 0 where |y| / s(u) is these (the likelihood's cut-off there for y != 0)
CUTOFF_LEVELS = np.array([3.0, 6.0, 12.0])
#: Newton steps that place those edges where s(u) differs from its value at the root
NEWTON = 3


class ProductChannel(OutputDenoiser):
    """Bayes output denoiser of y = z1 z2 + sqrt(noise_var) eta, eta ~ N(0, 1), L = 1, k = 2 (see the module doc)."""

    tokens, k = 1, 2

    def __init__(self, noise_var):
        self.noise_var = check_variance("noise_var", noise_var)

    def __repr__(self):
        return f"ProductChannel(noise_var={self.noise_var})"

    def g_out(self, y, Omega, V):
        """g (n, 1, 2) and dg (n, 1, 2, 1, 2) for y (n,), Omega (n, 1, 2), V (2, 2)."""
        _, g, dg = self._posterior(y, Omega, V)
        return g, dg

    def log_z_out(self, y, Omega, V):
        """log Z_out (n,): the log density of y given Omega, V."""
        return self._posterior(y, Omega, V)[0]

    def posterior(self, y, Omega, V):
        """log Z_out, g and dg from one pass of the panel rule."""
        return self._posterior(y, Omega, V)

    def sample(self, Z, rng):
        """y = z1 z2 + sqrt(noise_var) eta, shape (n,), for Z (n, 1, 2)."""
        y = Z[:, 0, 0] * Z[:, 0, 1]
        return y + math.sqrt(self.noise_var) * rng.normal(tuple(y.shape), dtype=y.dtype)

    def label_quadrature(self, Z, n_nodes):
        """The exact rule for y | Z: z1 z2 plus the Gauss-Hermite nodes of the noise.

        Z : (N, 1, 2) NumPy array. Returns ys (n_nodes, N), weights (n_nodes, N).
        """
        x, h = gauss_hermite(n_nodes)
        ys = (Z[:, 0, 0] * Z[:, 0, 1])[None] + math.sqrt(self.noise_var) * x[:, None]
        return ys, np.broadcast_to(h[:, None], ys.shape)

    def check_labels(self, y):
        """ValueError for labels that are not a finite (n,) array."""
        if y.ndim != 1:
            raise ValueError(f"y must have shape (n,), got {tuple(y.shape)}")
        super().check_labels(y)

    def _posterior(self, y, Omega, V):
        """log Z_out (n,), g (n, 1, 2), dg (n, 1, 2, 1, 2), chunked over samples."""
        if Omega.ndim != 3 or tuple(Omega.shape[1:]) != (1, 2):
            raise ValueError(f"Omega must have shape (n, 1, 2), got {tuple(Omega.shape)}")
        if tuple(y.shape) != (Omega.shape[0],):
            raise ValueError(f"y must have shape (n,) = ({Omega.shape[0]},), got {tuple(y.shape)}")
        V = checked_covariance(V, 2, Omega)[2]
        xp = namespace(Omega)
        log_z, shift, cov = chunked(lambda y, Omega: self._moments(y, Omega, V), 4 * _max_edges() * PANEL_NODES,
                                    xp.astype(y, Omega.dtype), Omega)
        n = Omega.shape[0]
        # only E[Z | y] - Omega enters g_out: pass the shift and a zero Omega (no cancellation far in the tails)
        g, dg = g_from_moments(xp.reshape(shift, (n, 1, 2)), xp.reshape(cov, (n, 1, 2, 1, 2)), xp.zeros_like(Omega), V)
        return log_z, g, dg

    def _moments(self, y, Omega, V):
        """log Z_out (n,), E[Z | y] - omega (n, 2) and Cov[Z | y] (n, 2, 2) by the panel rule of the module doc."""
        f = _Integrand(y, Omega, V, self.noise_var)
        u, log_w = gauss_legendre_panels(*_panels(f), PANEL_NODES)
        psi, d1, d2, v2 = f.terms(u)
        log_z, shift, cov = _weighted_moments(log_w + psi, d1, d2, v2)
        return log_z - 0.5 * math.log(4.0 * math.pi * math.pi * f.V11), shift, cov


class _Integrand:
    """The integrand over u = z1 of the module doc for each sample: y (n,), Omega (n, 1, 2), V (2, 2)."""

    def __init__(self, y, Omega, V, noise_var):
        V11, V12, V22 = float(V[0, 0]), float(V[0, 1]), float(V[1, 1])
        self.V11, self.noise_var = V11, noise_var
        # c rounds to ~eps V_22 for |corr V| -> 1: floored there (and > 0)
        self.beta, self.c = V12 / V11, max(V22 - V12 * V12 / V11, 1e-16 * V22)
        self.y, self.omega_1, self.omega_2 = y[:, None], Omega[:, 0, :1], Omega[:, 0, 1:]

    def terms(self, u):
        """At u (n, M): psi = log N(u; omega_1, V_11) + log N(y; h(u), s2(u)) + log(2 pi sqrt(V_11)), the shifts
        u - omega_1 and m2(u) - omega_2, and v2(u), each (n, M)."""
        d1 = u - self.omega_1
        inv_s2 = 1.0 / (self.c * u * u + self.noise_var)
        resid = self.y - u * (self.omega_2 + self.beta * d1)
        psi = -0.5 * (d1 * d1 / self.V11 + resid * resid * inv_s2) + 0.5 * namespace(u).log(inv_s2)
        # m2 - omega_2 = beta d1 + c u resid / s2, since m2 = (noise_var mu + c u y) / s2
        return psi, d1, self.beta * d1 + self.c * u * resid * inv_s2, (self.c * self.noise_var) * inv_s2

    def roots(self, level):
        """The two roots of h(u) = beta u^2 + gamma u = level, gamma = omega_2 - beta omega_1, for levels (n, ...):
        (n, ..., 2), each on its own branch of the parabola (the stable pair -level / q, q / beta); the vertex
        -gamma / (2 beta) where they are not real, omega_1 for the one that does not exist (beta = 0)."""
        xp = namespace(level)
        beta, omega_1 = self.beta, xp.reshape(self.omega_1, (-1,) + (1,) * (level.ndim - 1))
        gamma = xp.reshape(self.omega_2, omega_1.shape) - beta * omega_1
        disc = gamma * gamma + 4.0 * beta * level
        q = -0.5 * (gamma + xp.where(gamma < 0.0, -1.0, 1.0) * xp.sqrt(xp.where(disc > 0.0, disc, 0.0)))
        near = xp.where(q == 0.0, omega_1, -level / xp.where(q == 0.0, 1.0, q))
        if beta == 0.0:
            return xp.stack([near, xp.broadcast_to(omega_1, near.shape)], axis=-1)
        vertex = -0.5 * gamma / beta
        real = disc >= 0.0
        return xp.stack([xp.where(real, near, vertex), xp.where(real, q / beta, vertex)], axis=-1)


def _weighted_moments(log_w, d1, d2, v2):
    """log sum exp(log_w) (n,), the mean (n, 2) and covariance (n, 2, 2) of the nodes (d1, d2) (n, M) weighted
    by exp(log_w), each node carrying the variance v2 (n, M) in its second coordinate. Centred sums (no
    E[z^2] - E[z]^2 cancellation)."""
    xp = namespace(log_w, d1, d2)
    top = xp.max(log_w, axis=-1, keepdims=True)
    w = xp.exp(log_w - top)
    total = xp.sum(w, axis=-1)
    w = w / total[:, None]
    mean = xp.stack([xp.vecdot(w, d1), xp.vecdot(w, d2)], axis=-1)
    c1, c2 = d1 - mean[:, :1], d2 - mean[:, 1:]
    w_c1 = w * c1
    cov_11, cov_12, cov_22 = xp.vecdot(w_c1, c1), xp.vecdot(w_c1, c2), xp.vecdot(w, c2 * c2 + v2)
    cov = xp.stack([xp.stack([cov_11, cov_12], axis=-1), xp.stack([cov_12, cov_22], axis=-1)], axis=-2)
    return xp.log(total) + top[:, 0], mean, cov


def _max_edges():
    """The most panel edges of the rule (per sample)."""
    return PRIOR_EDGES.size + 2 + 2 * ZERO_LEVELS + 1 + 2 * CUTOFF_LEVELS.size + 2 * (2 * ROOT_LEVELS.size + 1)


def _zero_edges(f):
    """0 and +- a ZERO_RATIO^j (NumPy), a = sqrt(noise_var / c), up to the first beyond the prior's panel width."""
    step = (PRIOR_EDGES[1] - PRIOR_EDGES[0]) * math.sqrt(f.V11)
    a = math.sqrt(f.noise_var / f.c)
    levels = min(ZERO_LEVELS, max(0, math.ceil(math.log(step / a, ZERO_RATIO)) + 1))
    a = a * ZERO_RATIO ** np.arange(levels)
    return np.concatenate([-a[::-1], [0.0], a])


def _panels(f):
    """The panels [lo, hi] (n, E - 1) each of the rule of the module doc for the integrand f (`_Integrand`)."""
    xp = namespace(f.y)
    n, sd_1 = f.y.shape[0], math.sqrt(f.V11)
    roots = f.roots(f.y[:, 0])  # (n, 2)
    # the window from the best of omega_1, 0 and the roots, these clipped to the window that omega_1 alone implies
    half = _half_window(f, f.terms(f.omega_1)[0])
    roots = _clip(roots, f.omega_1 - half, f.omega_1 + half)
    candidates = xp.concat([f.omega_1, xp.zeros_like(f.omega_1), roots], axis=-1)
    half = _half_window(f, xp.max(f.terms(candidates)[0], axis=-1, keepdims=True))
    lo, hi = f.omega_1 - half, f.omega_1 + half
    zero = constant(_zero_edges(f), f.y)
    cut = xp.sqrt(xp.clip(f.y * f.y / constant(CUTOFF_LEVELS ** 2, f.y) - f.noise_var, 0.0, None) / f.c)
    edges = xp.concat([f.omega_1 + sd_1 * constant(PRIOR_EDGES, f.y), lo, hi, xp.broadcast_to(zero, (n, zero.shape[0])),
                       cut, -cut, _level_points(f, roots, lo, hi)], axis=-1)
    edges = xp.sort(_clip(edges, lo, hi), axis=-1)
    return edges[:, :-1], edges[:, 1:]


def _level_points(f, roots, lo, hi):
    """On each branch of h, the points where the standardised residual (h(u) - y) / s(u) is k, k in 0, +-ROOT_LEVELS:
    (n, 2 (2 ROOT_LEVELS.size + 1)). From the solutions of h(u) = y + k s(u_r), u_r the branch's root of h = y (exact
    where s is constant), NEWTON Newton steps on h(u) - y - k s(u) = 0, within [lo, hi] (n, 1)."""
    xp = namespace(roots)
    k = constant(np.concatenate([-ROOT_LEVELS[::-1], [0.0], ROOT_LEVELS]), roots)
    s = xp.sqrt(f.c * roots * roots + f.noise_var)
    branches = f.roots(f.y[..., None] + s[..., None] * k)  # (n, branch of u_r, level, branch)
    lo, hi = lo[..., None], hi[..., None]
    u = _clip(xp.stack([branches[:, 0, :, 0], branches[:, 1, :, 1]], axis=1), lo, hi)
    y, omega_1, omega_2 = f.y[..., None], f.omega_1[..., None], f.omega_2[..., None]
    for _ in range(NEWTON):
        s = xp.sqrt(f.c * u * u + f.noise_var)
        mu = omega_2 + f.beta * (u - omega_1)
        slope = mu + f.beta * u - k * f.c * u / s
        step = (u * mu - y - k * s) / xp.where(slope == 0.0, 1.0, slope)
        u = _clip(u - xp.where(slope == 0.0, 0.0, step), lo, hi)
    return xp.reshape(u, (u.shape[0], -1))


def _half_window(f, psi_best):
    """sqrt(V_11) T (n, 1) for the largest psi found, psi_best (n, 1): beyond omega_1 +- that, psi < psi_best - DROP."""
    return math.sqrt(f.V11) * namespace(psi_best).sqrt(2.0 * (DROP - 0.5 * math.log(f.noise_var) - psi_best))


def _clip(x, lo, hi):
    """x clipped to [lo, hi] (broadcasting)."""
    xp = namespace(x, lo, hi)
    return xp.where(x < lo, lo, xp.where(x > hi, hi, x))
