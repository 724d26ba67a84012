"""A generic output denoiser: Z_out of any label map g by numerical integration.

For labels y = g(Z) (+ Gaussian noise) of pre-activations Z (L, k), with V = C C^T (C = chol V),
    Z(u) = Omega + (I_L ⊗ C) u,  u ~ N(0, I_D),  D = L k,
    Z_out(y, Omega, V) = E_u[P_out(y | Z(u))],
and g_out, dg_out follow from the posterior moments of Z (`denoisers.posterior`). Two rules, both
vectorised over samples and nodes, in chunks of samples that keep the largest array below
ELEMENT_BUDGET elements:

Gauss-Hermite (noisy labels; finite label sets when D > 2): the tensor rule with `nodes` points per
dimension (default min(64, floor(4096^(1/D))): 64, 64, 16, 8, 5, 4 for D = 1..6), log weights
log h_j + log P_out(y | Z(u_j)). It needs the posterior to be resolved by the nodes (spacing ~ pi /
sqrt(2 nodes) near the centre): label noise small against V along g's gradient, kinks of g and
indicators (D > 2) converge slowly; `error_estimate` reports by how much.

Lines (finite label sets, D <= 2): the likelihood 1[g(Z) = y] is discontinuous, so the last coordinate
t of u is integrated exactly along lines. The indicator is scanned on a grid of t (step 2 / nodes on
[-8, 8], then geometric, ratio 1.25, out to +-60), each change is bisected to machine precision, and
each interval where the label holds contributes the exact mass, mean and variance of N(0, 1) on it.
For D = 2 the outer coordinate s is integrated by Gauss-Legendre, `nodes` points per panel (default 12):
the lines are scanned on the same grid of s; the panels cover the window where the posterior density
of s is within e^-40 of its peak (which follows the mass far into the tails), PANELS equal ones split
at the points where the pattern of the line (indicator at its start, number of changes) changes,
bisected to machine precision, and at the ends of the scan cells where the line's moments change
steeply (a boundary crossing the lines at a small angle: strongly correlated V), so that each panel
integrand is smooth.
Limits: an interval of labels narrower than the scan step (or than the geometric cells past |t| = 8)
is missed, as is a pair of pattern changes inside one scan cell of s; a corner of a label region that
leaves the pattern unchanged is integrated across (algebraic convergence); for |corr V| -> 1 the
boundaries crossing the lines at slope ~ r / sqrt(1 - r^2) need more nodes (|r| = 0.99: 16 to 24 for
1e-6). `error_estimate` compares with a finer rule (finer scan and more nodes), so it reports such
misses when the finer scan resolves them. A label that no node or line reaches gets log_z = -inf and
g = dg = 0 (the prior's).
"""
import math
from functools import lru_cache

import array_api_compat as aac
import numpy as np

from amp.backend import log_npdf, logsumexp, namespace, to_numpy
from denoisers.base import OutputDenoiser, check_variance
from denoisers.posterior import g_from_moments, node_moments
from denoisers.quadrature import gauss_hermite, gauss_legendre
from denoisers.truncated import truncated_mixture

#: elements of the largest intermediate array per chunk of samples
ELEMENT_BUDGET = 2 ** 23
#: tensor Gauss-Hermite rules get at most this many points by default, and at most 64 per dimension
DEFAULT_POINTS = 2 ** 12
#: default Gauss-Legendre nodes per panel of the line rule
DEFAULT_LINE_NODES = 12
#: equal panels of the outer coordinate's window (before the splits at pattern changes)
PANELS = 12
#: a scan cell of the outer coordinate where the line mass changes by more than STEEP times its width
#: becomes a panel of its own
STEEP = 0.5
#: the window of the outer coordinate keeps the scanned posterior mass within e^-WINDOW_DROP of its peak
WINDOW_DROP = 40.0
#: the uniform part of the scan grid, [-SCAN_UNIFORM, SCAN_UNIFORM]; geometric (ratio SCAN_RATIO) to SCAN_MAX
SCAN_UNIFORM, SCAN_RATIO, SCAN_MAX = 8.0, 1.25, 60.0
#: the unbounded ends of a line, as finite numbers (the N(0, 1) mass beyond is 0 in double precision)
UNBOUNDED = 1e3
#: bisection steps: a cell of width 8 down to 8 / 2^56 ~ 1e-16; coarser for the line masses that only
#: locate the window of the outer coordinate
BISECTIONS, PROXY_BISECTIONS = 56, 12
#: points of the grid that refines the scan cell of each edge of the window
EDGE_POINTS = 32


class Quadrature(OutputDenoiser):
    """Bayes output denoiser of y = g(Z) (+ noise) by quadrature over the Gaussian pre-activations.

    g : maps Z (..., tokens, k) to labels (..., *label_shape), in the namespace of Z.
    labels : the finite label set (likelihood 1[g(Z) = y]); or noise_var > 0: y = g(Z) + sqrt(noise_var) eta,
    eta iid N(0, 1) per label entry. Exactly one of the two.
    nodes : Gauss-Hermite nodes per dimension (noise, or labels with D = tokens k > 2), default
    min(64, floor(4096^(1/D))); Gauss-Legendre nodes per panel of the line rule (labels, D <= 2),
    default 12, scan step 2 / nodes (see the module doc). error_estimate reports the rule's accuracy.
    """

    def __init__(self, g, *, tokens, k, labels=None, noise_var=None, nodes=None):
        self.tokens, self.k = _positive_int("tokens", tokens), _positive_int("k", k)
        if (labels is None) == (noise_var is None):
            raise ValueError("give exactly one of labels (a finite label set) and noise_var (Gaussian label noise)")
        self.g = g
        self.labels = None if labels is None else _label_set(labels)
        # 0 for a finite label set, as for the noiseless scalar channels
        self.noise_var = 0.0 if noise_var is None else check_variance("noise_var", noise_var)
        self.label_shape = _label_shape(g, self.tokens, self.k)
        self.nodes = self._default_nodes() if nodes is None else _positive_int("nodes", nodes)

    def __repr__(self):
        law = f"labels={self.labels}" if self.labels is not None else f"noise_var={self.noise_var}"
        return f"{type(self).__name__}(tokens={self.tokens}, k={self.k}, {law}, nodes={self.nodes})"

    @property
    def dim(self):
        """D = tokens k, the number of Gaussian dimensions."""
        return self.tokens * self.k

    @property
    def label_size(self):
        """The number of entries of one label."""
        return math.prod(self.label_shape)

    def _uses_lines(self):
        return self.labels is not None and self.dim <= 2

    def _default_nodes(self):
        if self._uses_lines():
            return DEFAULT_LINE_NODES
        return min(64, _nodes_per_dimension(DEFAULT_POINTS, self.dim))

    def g_out(self, y, Omega, V):
        """g (n, L, k) and dg (n, L, k, L, k) for y (n, *label_shape), Omega (n, L, k), V (k, k)."""
        _, g, dg = self._posterior(y, Omega, V, self.nodes)
        return g, dg

    def log_z_out(self, y, Omega, V):
        """log Z_out (n,); for a finite label set the probability log P(y | Omega, V)."""
        return self._posterior(y, Omega, V, self.nodes)[0]

    def posterior(self, y, Omega, V):
        """log Z_out, g and dg from one pass of the rule."""
        return self._posterior(y, Omega, V, self.nodes)

    def error_estimate(self, y, Omega, V):
        """Max absolute differences {"log_z", "g", "dg"} between the rule with `nodes` and a finer one
        (about 1.5 nodes; for the line rule also a 1.5 times finer scan)."""
        finer = max(self.nodes + 1, math.ceil(1.5 * self.nodes))
        coarse, fine = self._posterior(y, Omega, V, self.nodes), self._posterior(y, Omega, V, finer)
        xp = namespace(Omega)
        return {name: float(xp.max(xp.where(a == b, 0.0, xp.abs(a - b))))
                for name, a, b in zip(("log_z", "g", "dg"), coarse, fine)}

    def sample(self, Z, rng):
        """y = g(Z) (+ sqrt(noise_var) eta), shape (n, *label_shape), for Z (n, L, k)."""
        y = self.g(Z)
        if self.labels is None:
            y = y + math.sqrt(self.noise_var) * rng.normal(tuple(y.shape), dtype=y.dtype)
        return y

    def label_quadrature(self, Z, n_nodes):
        """The exact rule for y | Z: g(Z) (finite labels, m = 1), or g(Z) plus the tensor Gauss-Hermite
        nodes of the noise, n_nodes per label entry (fewer when that exceeds 4096 labels in all).

        Z : (N, L, k) NumPy array. Returns ys (m, N, *label_shape), weights (m, N).
        """
        gz = np.asarray(self.g(Z))
        if self.labels is not None:
            return gz[None], np.ones((1, gz.shape[0]))
        per_entry = max(2, min(int(n_nodes), _nodes_per_dimension(DEFAULT_POINTS, self.label_size)))
        eta, log_h = _gauss_hermite_tensor(self.label_size, per_entry)
        eta = eta.reshape((-1, 1) + self.label_shape)
        ys = gz[None] + math.sqrt(self.noise_var) * eta
        return ys, np.broadcast_to(np.exp(log_h)[:, None], ys.shape[:2])

    def check_labels(self, y):
        """ValueError for a label of the wrong shape, NaN or Inf, or outside the finite label set."""
        if tuple(y.shape[1:]) != self.label_shape:
            raise ValueError(f"y must have shape (n, *label_shape) = (n, *{self.label_shape}), got {tuple(y.shape)}")
        super().check_labels(y)
        if self.labels is None:
            return
        xp = namespace(y)
        known = xp.zeros(y.shape, dtype=xp.bool, device=aac.device(y))
        for label in self.labels:
            known = known | (y == label)
        if not bool(xp.all(known)):
            bad = np.unique(to_numpy(y)[~to_numpy(known)])
            raise ValueError(f"labels y must lie in {self.labels}; got {bad[:10].tolist()}")

    def _posterior(self, y, Omega, V, nodes):
        """log Z_out (n,), g (n, L, k), dg (n, L, k, L, k) with the rule at `nodes`, chunked over samples."""
        V, C, _ = self._checked(y, Omega, V)
        L, k = self.tokens, self.k
        if self._uses_lines():
            rule = _LineRule(self._indicator, C, L, k, nodes)
        else:
            rule = _HermiteRule(self._log_likelihood, C, L, k, nodes)
        log_z, mean, cov = chunked(rule.moments, rule.elements_per_sample, y, Omega)
        xp, n = namespace(Omega), Omega.shape[0]
        g, dg = g_from_moments(xp.reshape(mean, (n, L, k)), xp.reshape(cov, (n, L, k, L, k)), Omega, V)
        reached = log_z > -math.inf  # else no node has the label: g = dg = 0, the prior's
        return (log_z, xp.where(reached[:, None, None], g, 0.0),
                xp.where(reached[:, None, None, None, None], dg, 0.0))

    def _checked(self, y, Omega, V):
        """`checked_covariance` of V (device V, its Cholesky factor, host V) after the shapes of y, Omega."""
        if Omega.ndim != 3 or tuple(Omega.shape[1:]) != (self.tokens, self.k):
            raise ValueError(f"Omega must have shape (n, L, k) = (n, {self.tokens}, {self.k}), "
                             f"got {tuple(Omega.shape)}")
        if tuple(y.shape) != (Omega.shape[0],) + self.label_shape:
            raise ValueError(f"y must have shape (n, *label_shape) = {(Omega.shape[0],) + self.label_shape}, "
                             f"got {tuple(y.shape)}")
        return checked_covariance(V, self.k, Omega)

    def _indicator(self, Z, y):
        """1[g(Z) = y] for Z (n, ..., L, k), y (n, *label_shape): a bool array (n, ...)."""
        xp = namespace(Z)
        batch = Z.ndim - 2
        equal = self.g(Z) == xp.reshape(y, (y.shape[0],) + (1,) * (batch - 1) + self.label_shape)
        return xp.all(equal, axis=tuple(range(batch, equal.ndim))) if self.label_shape else equal

    def _log_likelihood(self, Z, y):
        """log P_out(y | Z) for Z (n, M, L, k), y (n, *label_shape): (n, M)."""
        xp = namespace(Z)
        if self.labels is not None:
            return xp.where(self._indicator(Z, y), xp.zeros_like(Z[..., 0, 0]), -math.inf)
        batch = Z.ndim - 2
        r = self.g(Z) - xp.reshape(y, (y.shape[0],) + (1,) * (batch - 1) + self.label_shape)
        sq = xp.sum(xp.reshape(r * r, tuple(r.shape[:batch]) + (-1,)), axis=-1)
        return -0.5 * sq / self.noise_var - 0.5 * self.label_size * math.log(2.0 * math.pi * self.noise_var)


def checked_covariance(V, k, like):
    """V (k, k) as a symmetric array of `like`'s dtype and device, its Cholesky factor C (V = C C^T)
    there, and V as a float64 NumPy array (for the denoisers' scalar constants).

    ValueError unless V is finite, symmetric (to 1e-10 relative) and positive definite. V crosses to
    the host once: the checks and the factor are made there (k x k numbers), not by several device
    reductions and syncs per call.
    """
    xp = namespace(like)
    if tuple(V.shape) != (k, k):
        raise ValueError(f"V must have shape (k, k) = ({k}, {k}), got {tuple(V.shape)}")
    host = np.asarray(to_numpy(V), dtype=np.float64)
    if not np.all(np.isfinite(host)):
        raise ValueError("V must be finite")
    if np.max(np.abs(host - host.T)) > 1e-10 * np.max(np.abs(host)):
        raise ValueError("V must be symmetric")
    host = 0.5 * (host + host.T)
    if not np.linalg.eigvalsh(host)[0] > 0.0:
        raise ValueError("V must be positive definite")
    const = lambda a: xp.asarray(a, dtype=like.dtype, device=aac.device(like))  # noqa: E731
    return const(host), const(np.linalg.cholesky(host)), host


def chunked(fn, per_sample, *arrays):
    """fn on chunks of the leading axis of `arrays`, about ELEMENT_BUDGET / per_sample samples each;
    fn returns a tuple of arrays, concatenated along their leading axes."""
    xp = namespace(*arrays)
    n = arrays[0].shape[0]
    size = max(1, ELEMENT_BUDGET // max(1, int(per_sample)))
    parts = [fn(*(a[i:i + size] for a in arrays)) for i in range(0, n, size)]
    return tuple(xp.concat(p, axis=0) for p in zip(*parts))


def bisect(keep_lo, lo, hi, steps):
    """Bisection of the brackets [lo, hi] (arrays) towards the point where keep_lo(x) turns False:
    `steps` halvings, each keeping the half whose lower end satisfies keep_lo. Returns the midpoints."""
    xp = namespace(lo, hi)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        keep = keep_lo(mid)
        lo, hi = xp.where(keep, mid, lo), xp.where(keep, hi, mid)
    return 0.5 * (lo + hi)


def constant(values, like):
    """A NumPy constant in the namespace, dtype and device of `like`."""
    return namespace(like).asarray(np.array(values, dtype=float), dtype=like.dtype, device=aac.device(like))


def gauss_legendre_panels(lo, hi, nodes):
    """Gauss-Legendre nodes x (..., P nodes) and log weights on the panels [lo, hi] (..., P);
    zero-width panels get weight 0 (log -inf)."""
    xp = namespace(lo, hi)
    t, w = gauss_legendre(nodes)
    half = 0.5 * (hi - lo)
    x = (0.5 * (lo + hi))[..., None] + half[..., None] * constant(t, lo)
    log_half = xp.where(half > 0, xp.log(xp.where(half > 0, half, 1.0)), -math.inf)
    log_w = log_half[..., None] + constant(np.log(w), lo)
    shape = tuple(lo.shape[:-1]) + (-1,)
    return xp.reshape(x, shape), xp.reshape(log_w, shape)


class _HermiteRule:
    """Tensor Gauss-Hermite rule over u in R^D: log weights log h_j + log P_out(y | Z(u_j))."""

    def __init__(self, log_likelihood, C, L, k, nodes):
        self.log_likelihood, self.C = log_likelihood, C
        self.u, self.log_h = _gauss_hermite_tensor(L * k, nodes)
        self.elements_per_sample = 4 * self.u.size

    def moments(self, y, Omega):
        xp = namespace(Omega)
        n, L, k = Omega.shape
        u = xp.reshape(constant(self.u, Omega), (-1, L, k))
        Z = Omega[:, None] + u @ self.C.T
        log_w = constant(self.log_h, Omega) + self.log_likelihood(Z, y)
        return _moments(log_w, xp.reshape(Z, (n, -1, L * k)))


def _nodes_per_dimension(points, dim):
    """The largest p with p^dim <= points."""
    p = int(round(points ** (1.0 / dim)))
    return p if p ** dim <= points else p - 1


@lru_cache(maxsize=None)
def _gauss_hermite_tensor(dim, nodes):
    """Nodes (nodes^dim, dim) and log weights of the tensor Gauss-Hermite rule for N(0, I_dim)."""
    x, h = gauss_hermite(nodes)
    grids = np.meshgrid(*([x] * dim), indexing="ij")
    log_grids = np.meshgrid(*([np.log(h)] * dim), indexing="ij")
    u = np.stack([a.ravel() for a in grids], axis=-1)
    log_h = sum(a.ravel() for a in log_grids)
    return u, log_h


class _LineRule:
    """Finite labels, D <= 2: exact integration along lines in the last whitened coordinate t,
    Gauss-Legendre panels split at the pattern changes in the outer coordinate s (see the module doc).

    Along the line Z = base + t A_t (A_t the last column of I_L ⊗ C, as an (L, k) array); s moves Z
    along A_s, the first column.
    """

    def __init__(self, indicator, C, L, k, nodes):
        self.indicator, self.nodes, self.outer = indicator, nodes, L * k == 2
        eye = np.eye(L * k)
        self.A_s, self.A_t = (constant(eye[j].reshape(L, k), C) @ C.T for j in (0, L * k - 1))
        self.grid = _scan_grid(nodes)
        lines = max((PANELS + 4) * nodes, self.grid.size) if self.outer else 1
        self.elements_per_sample = 2 * lines * self.grid.size * L * k

    def moments(self, y, Omega):
        xp = namespace(Omega)
        n = Omega.shape[0]
        if self.outer:
            s, log_ws = self._outer_nodes(y, Omega)
        else:
            s, log_ws = xp.zeros((n, 1), dtype=Omega.dtype, device=aac.device(Omega)), None
        base = self._base(Omega, s)
        log_wt, t, _ = self._line_nodes(y, base)
        log_w = log_wt if log_ws is None else log_ws[..., None] + log_wt
        Z = base[:, :, None] + t[..., None, None] * self.A_t
        return _moments(xp.reshape(log_w, (n, -1)), xp.reshape(Z, (n, -1, Omega.shape[1] * Omega.shape[2])))

    def _scan(self, y, base):
        """Indicator on the scan grid of each line: base (n, J, L, k) -> (n, J, nt) bool."""
        T = constant(self.grid, base)
        return self.indicator(base[:, :, None] + T[:, None, None] * self.A_t, y)

    def _line_nodes(self, y, base, steps=BISECTIONS):
        """Two-point nodes of the exact integral along each line (t ~ N(0, 1)): on each interval where
        the label holds, the points mean +- sd of N(0, 1) restricted to it, weights mass / 2 (the same
        mass, mean and variance), its ends bisected `steps` times in their scan cells.
        Returns log weights and t, each (n, J, 2 (M + 1)) (M the most changes), and the lines' patterns."""
        xp = namespace(base)
        ind = self._scan(y, base)
        cells, count = _flagged_cells(ind[..., 1:] != ind[..., :-1])
        M = cells.shape[-1]
        q = xp.arange(M + 1, device=aac.device(base))
        start = ind[..., :1]
        T = constant(self.grid, base)
        lo = xp.reshape(xp.take(T, xp.reshape(cells, (-1,))), cells.shape)
        hi = xp.reshape(xp.take(T, xp.reshape(cells + 1, (-1,))), cells.shape)
        before = start != (q[:M] % 2 == 1)  # the indicator changes from `before` in cell q
        b = bisect(lambda t: self.indicator(base[:, :, None] + t[..., None, None] * self.A_t, y) == before,
                         lo, hi, steps)
        end = xp.full(tuple(count.shape) + (1,), UNBOUNDED, dtype=base.dtype, device=aac.device(base))
        edges = xp.concat([-end, xp.where(q[:M] < count[..., None], b, UNBOUNDED), end], axis=-1)
        # the label holds on interval q (a single scan point that bisects to width 0 does not count)
        holds = (start != (q % 2 == 1)) & (q <= count[..., None]) & (edges[..., 1:] > edges[..., :-1])
        log_mass, mean, sd = _truncated_normal(xp.where(holds, edges[..., :-1], 0.0),
                                               xp.where(holds, edges[..., 1:], 1.0))
        holds = holds & (log_mass > -math.inf)  # an interval whose mass underflows has no moments either
        log_w = xp.where(holds, log_mass, -math.inf) - math.log(2.0)
        mean, sd = xp.where(holds, mean, 0.0), xp.where(holds, sd, 0.0)
        pattern = 2 * count + xp.astype(start[..., 0], xp.int64)
        return xp.concat([log_w, log_w], axis=-1), xp.concat([mean - sd, mean + sd], axis=-1), pattern

    def _outer_nodes(self, y, Omega):
        """Gauss-Legendre nodes s (n, J) and log weights (with log phi(s)) for the outer coordinate."""
        xp = namespace(Omega)
        G = xp.broadcast_to(constant(self.grid, Omega), (Omega.shape[0], self.grid.size))
        log_w, t, pattern = self._line_nodes(y, self._base(Omega, G), PROXY_BISECTIONS)
        lo, hi = self._window(y, Omega, G, log_npdf(G) + _log_total(log_w))
        frac = constant(np.linspace(0.0, 1.0, PANELS + 1), Omega)
        edges = [lo[:, None] + (hi - lo)[:, None] * frac, self._pattern_changes(y, Omega, G, pattern),
                 _steep_cells(G, log_w, t)]
        edges = xp.sort(_clip(xp.concat(edges, axis=-1), lo, hi), axis=-1)
        s, log_w = gauss_legendre_panels(edges[:, :-1], edges[:, 1:], self.nodes)
        return s, log_w + log_npdf(s)

    def _base(self, Omega, s):
        """Starting points Omega + s A_s (n, J, L, k) of the lines at s (n, J)."""
        return Omega[:, None] + s[..., None, None] * self.A_s

    def _log_density(self, y, Omega, s):
        """log phi(s) + log of the line mass at s (n, J), its ends bisected coarsely: the posterior
        density of s up to a constant (to the resolution of those ends)."""
        log_w, _, _ = self._line_nodes(y, self._base(Omega, s), PROXY_BISECTIONS)
        return log_npdf(s) + _log_total(log_w)

    def _window(self, y, Omega, G, psi):
        """[lo, hi] (n,) where the density psi of s (on the grid G (n, ns)) is within e^-WINDOW_DROP of
        its peak: the first and last grid cells that cross that level, refined on a grid of
        EDGE_POINTS points each and rounded outwards (an edge of the label region stays inside, to be
        split at by `_pattern_changes`)."""
        xp = namespace(Omega)
        level = (xp.max(psi, axis=-1) - WINDOW_DROP)[:, None]
        above = psi >= level
        last = G.shape[1] - 1
        at = lambda j: xp.take(G[0], xp.where(j < 0, 0, xp.where(j > last, last, j)))[:, None]  # noqa: E731
        first, final = _first(above), _last(above)
        frac = constant(np.linspace(0.0, 1.0, EDGE_POINTS + 1), Omega)
        rising = at(first - 1) + (at(first) - at(first - 1)) * frac  # (n, EDGE_POINTS + 1)
        falling = at(final) + (at(final + 1) - at(final)) * frac
        above = self._log_density(y, Omega, xp.concat([rising, falling], axis=-1)) >= level
        j_lo, j_hi = _first(above[:, :EDGE_POINTS + 1]) - 1, _last(above[:, EDGE_POINTS + 1:]) + 1
        lo = xp.take_along_axis(rising, xp.where(j_lo > 0, j_lo, 0)[:, None], axis=-1)
        hi = xp.take_along_axis(falling, xp.where(j_hi < EDGE_POINTS, j_hi, EDGE_POINTS)[:, None], axis=-1)
        return lo[:, 0], hi[:, 0]

    def _pattern_changes(self, y, Omega, G, pattern):
        """Points (n, Mb) of s where the pattern of the line changes, bisected in the scan cells where it
        differs at the ends; -inf in the slots beyond a sample's count (clipped to its window later)."""
        xp = namespace(Omega)
        cells, count = _flagged_cells(pattern[:, 1:] != pattern[:, :-1])
        lo, hi = xp.take_along_axis(G, cells, axis=-1), xp.take_along_axis(G, cells + 1, axis=-1)
        start = xp.take_along_axis(pattern, cells, axis=-1)
        cuts = bisect(lambda s: _pattern(self._scan(y, self._base(Omega, s))) == start, lo, hi, BISECTIONS)
        return xp.where(xp.arange(cells.shape[-1], device=aac.device(Omega)) < count[:, None], cuts, -math.inf)


@lru_cache(maxsize=None)
def _scan_grid(nodes):
    """Scan points (NumPy): step 2 / nodes on [-8, 8], then geometric with ratio 1.25 out to +-60."""
    centre = np.linspace(-SCAN_UNIFORM, SCAN_UNIFORM, int(math.ceil(SCAN_UNIFORM * nodes)) + 1)
    steps = int(math.ceil(math.log(SCAN_MAX / SCAN_UNIFORM) / math.log(SCAN_RATIO)))
    tail = SCAN_UNIFORM * SCAN_RATIO ** np.arange(1, steps + 1)
    return np.concatenate([-tail[::-1], centre, tail])


def _pattern(ind):
    """The combinatorial pattern of each scanned line: 2 (number of changes) + indicator at its start."""
    xp = namespace(ind)
    changes = xp.sum(xp.astype(ind[..., 1:] != ind[..., :-1], xp.int64), axis=-1)
    return 2 * changes + xp.astype(ind[..., 0], xp.int64)


def _steep_cells(G, log_w, t):
    """Both ends (n, 2 Mc) of the scan cells of s where a moment of the line (its mass, E[t 1], E[t^2 1],
    relative to the sample's largest line mass) changes faster than STEEP per unit of s (a boundary crossing
    the lines at a small angle), so that each becomes a panel of its own; -inf in the slots beyond a
    sample's count.

    G : (n, ns) scan points; log_w, t : (n, ns, Q) the lines' two-point nodes (`_LineRule._line_nodes`).
    """
    xp = namespace(G, log_w, t)
    top = xp.max(_log_total(log_w), axis=-1)
    w = xp.exp(log_w - xp.where(top > -math.inf, top, 0.0)[:, None, None])
    moments = xp.stack([xp.sum(w, axis=-1), xp.sum(w * t, axis=-1), xp.sum(w * t * t, axis=-1)], axis=-1)
    rate = xp.max(xp.abs(moments[:, 1:] - moments[:, :-1]), axis=-1) / (G[:, 1:] - G[:, :-1])
    cells, count = _flagged_cells(rate > STEEP)
    used = xp.arange(cells.shape[-1], device=aac.device(G)) < count[:, None]
    ends = [xp.where(used, xp.take_along_axis(G, cells + j, axis=-1), -math.inf) for j in (0, 1)]
    return xp.concat(ends, axis=-1)


def _first(mask):
    """Index (n,) of the first True of each row of `mask` (n, m) (0 if none)."""
    xp = namespace(mask)
    return xp.argmax(xp.astype(mask, xp.int32), axis=-1)


def _last(mask):
    """Index (n,) of the last True of each row of `mask` (n, m) (m - 1 if none)."""
    xp = namespace(mask)
    return mask.shape[-1] - 1 - _first(xp.flip(mask, axis=-1))


def _clip(x, lo, hi):
    """x (n, m) clipped to [lo, hi] (n,) row by row."""
    xp = namespace(x, lo, hi)
    return xp.where(x < lo[:, None], lo[:, None], xp.where(x > hi[:, None], hi[:, None], x))


def _flagged_cells(flags):
    """Indices (..., M) of the True entries of `flags` (..., m) in order, M the most in a row (beyond a
    row's count, m - 1 as a placeholder), and the counts (...,)."""
    xp = namespace(flags)
    rank = xp.cumulative_sum(xp.astype(flags, xp.int64), axis=-1)  # flags up to and including each entry
    count = rank[..., -1]
    M = int(xp.max(count)) if count.size else 0
    q = xp.arange(M, device=aac.device(flags))
    cells = xp.sum(xp.astype(rank[..., None, :] <= q[:, None], xp.int64), axis=-1)  # entries before the (q+1)-th flag
    return xp.where(cells < flags.shape[-1], cells, flags.shape[-1] - 1), count


def _moments(log_w, Zs):
    """`node_moments`, with log_z = -inf for rows whose weights are all 0 (their moments are meaningless)."""
    xp = namespace(log_w)
    empty = xp.all(log_w == -math.inf, axis=-1)
    log_z, mean, cov = node_moments(xp.where(empty[:, None], 0.0, log_w), Zs)
    return xp.where(empty, -math.inf, log_z), mean, cov


def _log_total(log_w):
    """logsumexp over the last axis; -inf (without log 0) where every entry is -inf."""
    xp = namespace(log_w)
    empty = xp.all(log_w == -math.inf, axis=-1)
    return xp.where(empty, -math.inf, logsumexp(xp.where(empty[..., None], 0.0, log_w), axis=-1))


def _truncated_normal(lo, hi):
    """log mass, mean and standard deviation of N(0, 1) restricted to (lo, hi) (arrays, lo < hi)."""
    xp = namespace(lo, hi)
    zero, one = xp.zeros_like(lo), xp.ones_like(lo)
    log_mass, mean, var_excess = truncated_mixture(zero, 1.0, [(0.0, zero, one, lo, hi)])
    return log_mass, mean, xp.sqrt(1.0 + var_excess)


def _positive_int(name, value):
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _label_set(labels):
    values = tuple(float(v) for v in labels)
    if not values or not all(math.isfinite(v) for v in values) or len(set(values)) != len(values):
        raise ValueError(f"labels must be a non-empty set of distinct finite values, got {labels!r}")
    return values


def _label_shape(g, tokens, k):
    """label_shape from one call of g on a dummy Z of shape (2, tokens, k)."""
    out = np.asarray(g(np.zeros((2, tokens, k))))
    if out.ndim < 1 or out.shape[0] != 2:
        raise ValueError(f"g must map Z (..., {tokens}, {k}) to labels (..., *label_shape), got shape {out.shape} "
                         f"for Z of shape (2, {tokens}, {k})")
    return tuple(out.shape[1:])
