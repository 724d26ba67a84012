"""Output denoisers of attention layers on sequences of L tokens, k index directions (Troiani et al. 2025).

Pre-activations Z (L, k), rows z_l, prior prod_l N(z_l; omega_l, V). The labels are row-stochastic
L x L matrices: softmax_rows of a Gram matrix of the tokens.
"""
import math
from functools import lru_cache, partial

import array_api_compat as aac
import numpy as np

from amp.backend import namespace, softmax
from amp.validation import check_count
from denoisers.base import OutputDenoiser
from denoisers.generic import Quadrature, checked_covariance, chunked
from denoisers.posterior import g_from_moments, node_moments
from denoisers.quadrature import gauss_hermite

#: conditional variances of column 2 given column 1 are clipped to at least this fraction of V22
COND_VAR_FLOOR = 1e-6
#: Gauss-Hermite nodes per dimension of the scan that starts the search for the posterior modes
SCAN_NODES = 16
#: Gauss-Newton steps towards each posterior mode
NEWTON_STEPS = 4
#: the fitted covariance of a rule component is floored at this fraction of its Laplace covariance
WIDTH_FLOOR = 1e-4
#: gauss_hermite is accurate up to about 300 nodes
MAX_NODES = 256


def attention(X, beta=1.0):
    """softmax_rows(beta X X^T) for X (..., L, k): the (..., L, L) attention matrix."""
    return softmax(beta * (X @ namespace(X).matrix_transpose(X)), axis=-1)


def label_logits(y):
    """a = log(y11 / y12), b = log(y22 / y21) for 2 x 2 row-stochastic labels y (..., 2, 2).

    Formed as differences of logs (no ratio that overflows): accurate to rounding while the entries are
    normal floats, |a|, |b| < 708 in float64 (87 in float32), coarser in the subnormal range up to 745
    (103). Beyond, a softmax entry is 0 and its logit lost: `check_labels` rejects such data, and here a
    0 is read as the smallest normal float (|a| = 708), so that saturated labels on far quadrature nodes
    stay finite.
    """
    xp = namespace(y)
    log_y = xp.log(xp.where(y > 0.0, y, xp.finfo(y.dtype).smallest_normal))
    return log_y[..., 0, 0] - log_y[..., 0, 1], log_y[..., 1, 1] - log_y[..., 1, 0]


def preimage(y):
    """h_y (..., 2) with softmax_rows(h h^T) = y exactly for h = +-h_y, and the uniform labels (...,) (a + b <= 0).

    y : (..., 2, 2) row-stochastic labels. h_y1 - h_y2 = sqrt(a + b) >= 0, h_y1 + h_y2 = (a - b) / sqrt(a + b),
    from a + b = (h1 - h2)^2, a - b = (h1 - h2)(h1 + h2) (`label_logits`); for uniform labels h1 = h2 is
    all that is known, and h_y = 0 is returned.
    """
    xp = namespace(y)
    a, b = label_logits(y)
    uniform = a + b <= 0.0
    diff = xp.sqrt(xp.where(uniform, 1.0, a + b))                     # h1 - h2
    total = xp.where(uniform, 0.0, (a - b) / diff)                     # h1 + h2
    diff = xp.where(uniform, 0.0, diff)
    return xp.stack([(total + diff) / 2, (total - diff) / 2], axis=-1), uniform


class TwoLayerAttention(OutputDenoiser):
    """Two-layer tied attention on L = 2 tokens, k = 2 directions, noiseless.

    With the columns z1 = Z[:, 0], z2 = Z[:, 1] of Z (each in R^2, over the tokens):
        A(z1) = softmax_rows(z1 z1^T) + skip I,   h = A(z1) z2,   y = softmax_rows(h h^T)   (2, 2).
    The label gives (a, b) = (h1^2 - h1 h2, h2^2 - h1 h2) (`label_logits`): a + b = (h1 - h2)^2 and
    a - b = (h1 - h2)(h1 + h2), so h = s h_y, s = +-1, h_y1 - h_y2 = sqrt(a + b), h_y1 + h_y2 = (a - b) / sqrt(a + b).
    With |d(a, b) / dh| = 2 (a + b), the density of (a, b) is
        Z_out = 1 / (2 (a + b)) E_{z1} sum_s N(z2 = s A(z1)^{-1} h_y; m(z1), c I) / |det A(z1)|,
    z1 ~ N(omega_col1, V11 I), m = omega_col2 + (V21 / V11)(z1 - omega_col1), c = V22 - V21^2 / V11
    (clipped to COND_VAR_FLOOR V22). log_z_out is its log, the log density of y in the coordinates (a, b).

    A uniform label (a + b <= 0: h1 = h2, h1 + h2 unobserved) has an infinite (a, b) density; there
    log_z_out is the log density of h1 - h2 at 0, and the posterior that of Z given h1 = h2:
        E_{z1} N(m_1 - m_2; 0, 2c) / |lambda_2(z1)|,   z2 = tau (1, 1),  tau | z1 ~ N((m_1 + m_2) / 2, c / 2),
    with lambda_2 = skip + S11 - S21 the eigenvalue of A besides 1 + skip (A (1, 1) = (1 + skip)(1, 1)).
    lambda_2 lies in (skip - 1/2, skip + 1), so A(z1) is invertible for every z1 iff skip > 1/2 or skip < -1.

    E_{z1} is taken in z1 = omega_col1 + sqrt(V11) u: for each branch s, Gauss-Hermite rules (`nodes` per
    dimension) centred on the Laplace approximations of the posterior of u at its mode and at the mode
    of the mirror image z1 -> -z1 (A(-z1) = A(z1)), as an importance mixture, refitted once to the
    posterior moments of each component. Modes are found by Gauss-Newton from the best node of a prior scan.
    Accurate where the posterior of u is near these Gaussians; the error grows when column 2 is nearly
    determined (V22 or c small against V11 |h|^2) and when V11 >> 1 (the softmax switches sharply).
    """

    tokens = 2
    k = 2
    label_shape = (2, 2)

    def __init__(self, skip=1.0, nodes=32):
        skip = float(skip)
        if not (math.isfinite(skip) and (skip > 0.5 or skip < -1.0)):
            raise ValueError(f"skip must be a finite number > 1/2 or < -1 (so that A(z1) is invertible), got {skip}")
        self.skip = skip
        self.nodes = check_count("nodes", nodes, minimum=2)
        if self.nodes > MAX_NODES:
            raise ValueError(f"nodes must be <= {MAX_NODES}, got {self.nodes}")

    def __repr__(self):
        return f"TwoLayerAttention(skip={self.skip}, nodes={self.nodes})"

    def sample(self, Z, rng):
        """y = softmax_rows(h h^T) (n, 2, 2), h = A(z1) z2, for Z (n, 2, 2); noiseless (rng unused)."""
        xp = namespace(Z)
        A = attention(Z[..., :1]) + self.skip * xp.eye(2, dtype=Z.dtype, device=aac.device(Z))
        return attention(A @ Z[..., 1:])

    def label_quadrature(self, Z, n_nodes):
        """Deterministic labels: ys = sample(Z)[None] (1, N, 2, 2), weights 1."""
        y = np.asarray(self.sample(Z, None))
        return y[None], np.ones((1, y.shape[0]))

    def check_labels(self, y):
        """ValueError unless y (n, 2, 2) has positive entries, rows summing to 1 and a + b >= 0 (to rounding)."""
        if y.ndim != 3 or tuple(y.shape[1:]) != (2, 2):
            raise ValueError(f"y must have shape (n, 2, 2), got {tuple(y.shape)}")
        super().check_labels(y)
        xp = namespace(y)
        if not bool(xp.all(y > 0.0)):
            raise ValueError("labels y must have positive entries (a saturated softmax entry 0 carries no logit)")
        tol = math.sqrt(xp.finfo(y.dtype).eps)
        if not bool(xp.all(xp.abs(xp.sum(y, axis=-1) - 1.0) <= tol)):
            raise ValueError("labels y must be row-stochastic (rows summing to 1)")
        a, b = label_logits(y)
        if not bool(xp.all(a + b >= -tol * (1.0 + xp.abs(a) + xp.abs(b)))):
            raise ValueError("labels y must have y11 y22 >= y12 y21 (a + b = (h1 - h2)^2 >= 0)")

    def g_out(self, y, Omega, V):
        """g (n, 2, 2) and dg (n, 2, 2, 2, 2) from the posterior moments of Z (`denoisers.posterior`).

        y : (n, 2, 2) labels; Omega : (n, 2, 2); V : (2, 2).
        """
        return self.posterior(y, Omega, V)[1:]

    def log_z_out(self, y, Omega, V):
        """log Z_out (n,): the log density of (a, b); of h1 - h2 at 0 for uniform labels (class doc)."""
        return self._posterior(y, Omega, V)[0]

    def posterior(self, y, Omega, V):
        """log Z_out, g and dg from one pass of the rule."""
        log_z, mean, cov = self._posterior(y, Omega, V)
        xp, n = namespace(Omega), Omega.shape[0]
        return (log_z, *g_from_moments(xp.reshape(mean, (n, 2, 2)), xp.reshape(cov, (n, 2, 2, 2, 2)), Omega, V))

    def _posterior(self, y, Omega, V):
        """log Z_out (n,), E[Z | y] (n, 4), Cov[Z | y] (n, 4, 4) (Z flattened row-major), in chunks of samples."""
        if Omega.ndim != 3 or tuple(Omega.shape[1:]) != (2, 2):
            raise ValueError(f"Omega must have shape (n, 2, 2), got {tuple(Omega.shape)}")
        if tuple(y.shape) != tuple(Omega.shape):
            raise ValueError(f"y must have shape (n, 2, 2) = {tuple(Omega.shape)}, got {tuple(y.shape)}")
        law = column_law(checked_covariance(V, 2, Omega)[2])
        per_sample = 64 * self.nodes ** 2  # the (2 branches, 2 components, M nodes, 4, 4) covariance terms
        return chunked(partial(self._moments, law), per_sample, y, Omega)

    def _moments(self, law, y, Omega):
        """`_posterior` on one chunk of samples."""
        xp = namespace(Omega)
        branches = _Branches(self.skip, y, Omega, law)
        log_w, Zs = branches.points(*self._rule(branches))
        n = Omega.shape[0]
        log_z, mean, cov = node_moments(xp.reshape(log_w, (n, -1)), xp.reshape(Zs, (n, -1, 4)))
        return log_z + branches.log_jacobian, mean, cov

    def _rule(self, branches):
        """u-rule per sample and branch (n, 2, 2 M, 2) with log weights (n, 2, 2 M): the Laplace mixture
        (mode and mirror mode), refitted to the moments of each component."""
        xp, Omega = branches.xp, branches.Omega
        n = Omega.shape[0]
        scan, log_scan = _hermite_2d(SCAN_NODES, Omega)
        log_w = branches.points(xp.broadcast_to(scan, (n, 2) + scan.shape), log_scan)[0]
        start = xp.reshape(xp.take(scan, xp.reshape(xp.argmax(log_w, axis=-1), (-1,)), axis=0), (n, 2, 2))
        mu, P = branches.laplace(start)
        mu_m, P_m = branches.laplace(-2.0 * Omega[:, None, :, 0] / branches.sd1 - mu)
        mu, P = xp.stack([mu, mu_m], axis=2), xp.stack([P, P_m], axis=2)
        cov_laplace = xp.linalg.inv(P)
        X, log_h = _hermite_2d(self.nodes, Omega)
        U, log_hu = _mixture_rule(X, log_h, mu, xp.linalg.cholesky(cov_laplace))
        log_w = branches.points(U, log_hu)[0]
        _, mu, cov = node_moments(xp.reshape(log_w, (4 * n, -1)), xp.reshape(U, (4 * n, -1, 2)))
        cov = xp.reshape(cov, (n, 2, 2, 2, 2)) + WIDTH_FLOOR * cov_laplace
        return _mixture_rule(X, log_h, xp.reshape(mu, (n, 2, 2, 2)), xp.linalg.cholesky(cov))


class _Branches:
    """The two branches s = +-1 of the posterior of u for a chunk of labels (see TwoLayerAttention):
    z2 = s A(z1)^{-1} h_y; for uniform labels z2 = tau (1, 1), tau = mean + s sd (the two-point
    Gauss-Hermite rule of tau | z1, exact for the moments)."""

    def __init__(self, skip, y, Omega, law):
        xp = namespace(y, Omega)
        self.xp, self.skip, self.Omega = xp, skip, Omega
        self.sd1, self.beta, self.c = law
        h_y, self.uniform = preimage(y)
        self.sign = xp.asarray([1.0, -1.0], dtype=Omega.dtype, device=aac.device(Omega))[None, :]
        self.h = self.sign[..., None] * h_y[:, None, :]                # (n, 2 branches, 2)
        gap = (h_y[:, 0] - h_y[:, 1]) ** 2                             # a + b
        self.log_jacobian = xp.where(self.uniform, 0.0, -xp.log(2 * xp.where(self.uniform, 1.0, gap)))

    def columns(self, U):
        """On the rule U (n, 2, M, 2): z1, m = E[z2 | z1], the first column S_l1 of softmax_rows(z1 z1^T)
        (the second is 1 - S_l1), det A and z2."""
        xp, Omega, skip = self.xp, self.Omega, self.skip
        z1 = Omega[:, None, None, :, 0] + self.sd1 * U
        m = Omega[:, None, None, :, 1] + self.beta * U
        S = _sigmoid(z1 * (z1[..., :1] - z1[..., 1:]))                 # S_l1 = sigmoid(z1_l (z1_1 - z1_2))
        A11, A12, A21, A22 = S[..., 0] + skip, 1.0 - S[..., 0], S[..., 1], 1.0 - S[..., 1] + skip
        det = A11 * A22 - A12 * A21
        h1, h2 = self.h[:, :, None, 0], self.h[:, :, None, 1]
        z2 = xp.stack([A22 * h1 - A12 * h2, A11 * h2 - A21 * h1], axis=-1) / det[..., None]
        tau = (m[..., 0] + m[..., 1]) / 2 + self.sign[..., None] * math.sqrt(self.c / 2)
        z2 = xp.where(self.uniform[:, None, None, None], tau[..., None], z2)
        return z1, m, S, det, z2

    def points(self, U, log_h):
        """Log weights (n, 2, M) and points Z (n, 2, M, 4) on the rule U (n, 2, M, 2), log_h (n, 2, M)."""
        z1, m, S, det, z2 = columns = self.columns(U)
        return log_h + self.log_likelihood(columns), self.xp.stack([z1[..., 0], z2[..., 0], z1[..., 1], z2[..., 1]],
                                                                   axis=-1)

    def log_likelihood(self, columns):
        """log N(z2; m, c I) / |det A| (log N(m_1 - m_2; 0, 2c) / (2 |lambda_2|) for uniform labels) on `columns`."""
        xp, c = self.xp, self.c
        z1, m, S, det, z2 = columns
        r = z2 - m
        log_n = -(r[..., 0] ** 2 + r[..., 1] ** 2) / (2 * c) - math.log(2 * math.pi * c) - xp.log(xp.abs(det))
        lam2 = self.skip + S[..., 0] - S[..., 1]
        log_uniform = (-(m[..., 0] - m[..., 1]) ** 2 / (4 * c) - 0.5 * math.log(4 * math.pi * c) - math.log(2.0)
                       - xp.log(xp.abs(lam2)))
        return xp.where(self.uniform[:, None, None], log_uniform, log_n)

    def laplace(self, u):
        """Gauss-Newton from u (n, 2, 2) on -log(N(u; 0, I) N(z2(u); m(u), c I)) per branch: the best point
        met (by the exact log integrand) and the Gauss-Newton precision there, P = I + K^T K / c (n, 2, 2, 2),
        K = dz2/du - (V21 / sqrt(V11)) I."""
        xp = self.xp
        eye = xp.eye(2, dtype=u.dtype, device=aac.device(u))
        best = xp.full(u.shape[:2], -math.inf, dtype=u.dtype, device=aac.device(u))
        best_u, best_P = u, xp.broadcast_to(eye, u.shape[:2] + (2, 2))
        for _ in range(NEWTON_STEPS + 1):
            columns = self.columns(u[:, :, None, :])
            value = self.log_likelihood(columns)[..., 0] - (u[..., 0] ** 2 + u[..., 1] ** 2) / 2
            z1, m, S, det, z2 = (t[:, :, 0] for t in columns)
            K = self.jacobian(z1, S, det, z2) - self.beta * eye
            P = eye + xp.matrix_transpose(K) @ K / self.c
            better = value > best
            best = xp.where(better, value, best)
            best_u = xp.where(better[..., None], u, best_u)
            best_P = xp.where(better[..., None, None], P, best_P)
            r = z2 - m - (K @ u[..., None])[..., 0]                     # z2 - m linearised: r + K u
            u = -xp.linalg.solve(P, xp.matrix_transpose(K) @ r[..., None] / self.c)[..., 0]
        return best_u, best_P

    def jacobian(self, z1, S, det, z2):
        """dz2/du (n, 2, 2, 2) at one point per branch. Regular branches: (A z2)_l = S_l1 (z2_1 - z2_2)
        + z2_2 + skip z2_l with S_l1 = sigmoid(z1_l (z1_1 - z1_2)), so dz2/du = -sqrt(V11) A^{-1}
        (z2_1 - z2_2) dS_l1/dz1_j; uniform labels: (beta / 2) 1 1^T (z2 = tau (1, 1), tau = (m_1 + m_2) / 2)."""
        xp, skip = self.xp, self.skip
        delta = z1[..., 0] - z1[..., 1]
        e = xp.asarray([1.0, -1.0], dtype=z1.dtype, device=aac.device(z1))
        eye = xp.eye(2, dtype=z1.dtype, device=aac.device(z1))
        dS = (S * (1.0 - S))[..., None] * (eye * delta[..., None, None] + z1[..., :, None] * e)
        A_inv = xp.stack([xp.stack([1.0 - S[..., 1] + skip, S[..., 0] - 1.0], axis=-1),
                          xp.stack([-S[..., 1], S[..., 0] + skip], axis=-1)], axis=-2) / det[..., None, None]
        J = -self.sd1 * (z2[..., 0] - z2[..., 1])[..., None, None] * (A_inv @ dS)
        J_uniform = xp.full(J.shape, self.beta / 2, dtype=J.dtype, device=aac.device(J))
        return xp.where(self.uniform[:, None, None, None], J_uniform, J)


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow."""
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0.0, 1.0, e) / (1.0 + e)


def column_law(V):
    """The columns' law for V (2, 2) per token: z1 ~ N(omega_col1, V11 I), z2 | z1 ~ N(m, c I),
    m = omega_col2 + (V21 / V11)(z1 - omega_col1), c = V22 - V21^2 / V11.

    Returns (sqrt(V11), V21 / sqrt(V11), c), c clipped to at least COND_VAR_FLOOR V22 (for V near
    singular: the result is then the denoiser of a prior with that much more variance in column 2).
    """
    V11, V21, V22 = float(V[0, 0]), float(V[1, 0]), float(V[1, 1])
    c = V22 - V21 * V21 / V11
    return math.sqrt(V11), V21 / math.sqrt(V11), max(c, COND_VAR_FLOOR * V22)


def _hermite_2d(nodes, like):
    """Tensor Gauss-Hermite rule for u ~ N(0, I_2) in the namespace of `like`: nodes (M, 2), log weights (M,)."""
    xp = namespace(like)
    X, log_h = _hermite_2d_numpy(nodes)
    const = lambda a: xp.asarray(a, dtype=like.dtype, device=aac.device(like))  # noqa: E731
    return const(X), const(log_h)


@lru_cache(maxsize=None)
def _hermite_2d_numpy(nodes):
    x, h = gauss_hermite(nodes)
    X = np.stack(np.meshgrid(x, x, indexing="ij"), axis=-1).reshape(-1, 2)
    return X, (np.log(h)[:, None] + np.log(h)[None, :]).reshape(-1)


def _mixture_rule(X, log_h, mu, L):
    """The rule X (M, 2), log_h (M,) of N(0, I) moved to both components of q = (N(mu_1, L_1 L_1^T) +
    N(mu_2, L_2 L_2^T)) / 2, mu (n, B, 2, 2), L (n, B, 2, 2, 2) lower triangular, reweighted to integrate
    against N(0, I):  u_ij = mu_i + L_i x_j,  log weight = log h_j - log 2 + log N(u_ij; 0, I) - log q(u_ij).
    Returns U (n, B, 2 M, 2) and log weights (n, B, 2 M)."""
    xp = namespace(mu)
    n, B = mu.shape[:2]
    U = mu[..., None, :] + X @ xp.matrix_transpose(L)                  # (n, B, 2, M, 2)

    def log_density(i):  # log N(U; mu_i, L_i L_i^T) + log 2 pi
        d = U - mu[:, :, None, i:i + 1]
        Li = L[:, :, None, i:i + 1]
        w1 = d[..., 0] / Li[..., 0, 0]
        w2 = (d[..., 1] - Li[..., 1, 0] * w1) / Li[..., 1, 1]
        return -(w1 * w1 + w2 * w2) / 2 - xp.log(xp.abs(Li[..., 0, 0] * Li[..., 1, 1]))

    # log 2 and log 2 pi cancel between N(u; 0, I) and q
    log_w = log_h - (U[..., 0] ** 2 + U[..., 1] ** 2) / 2 - xp.logaddexp(log_density(0), log_density(1))
    return xp.reshape(U, (n, B, -1, 2)), xp.reshape(log_w, (n, B, -1))


class TiedAttention(Quadrature):
    """Single-layer tied attention y = softmax_rows(beta Z Z^T) + sqrt(noise_var) eta, label_shape (L, L).

    Z (L, k) = (tokens, k); beta defaults to 1 / sqrt(k); eta iid N(0, 1) per entry, noise_var > 0.
    The generic `denoisers.generic.Quadrature` of this map (tensor Gauss-Hermite over the L k
    Gaussian dimensions, `nodes` per dimension).
    """

    def __init__(self, tokens=2, k=2, *, noise_var, beta=None, nodes=None):
        self.beta = 1.0 / math.sqrt(check_count("k", k, minimum=1)) if beta is None else float(beta)
        if not math.isfinite(self.beta):
            raise ValueError(f"beta must be a finite number, got {beta}")
        super().__init__(partial(attention, beta=self.beta), tokens=tokens, k=k, noise_var=noise_var, nodes=nodes)

    def __repr__(self):
        return (f"TiedAttention(tokens={self.tokens}, k={self.k}, noise_var={self.noise_var}, beta={self.beta}, "
                f"nodes={self.nodes})")
