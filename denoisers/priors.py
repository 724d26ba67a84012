"""Bayes input denoisers (priors) on R^k, k >= 1.

Every closed-form prior here is a finite Gaussian mixture P_in(w) = sum_j pi_j N(w; mu_j, S_j) on R^k
with S_j symmetric positive semi-definite (S_j = 0 is a point mass; a rank-deficient S_j is a law on
an affine subspace). Its tilted law P(w | B, A) ∝ P_in(w) exp(B.w - w^T A w / 2) is again a Gaussian
mixture: with N_j = (I + S_j A)^{-1} and C_j = N_j S_j (symmetric, as is A N_j),
    c_j = log pi_j + B^T C_j B / 2 + B^T N_j mu_j - mu_j^T A N_j mu_j / 2 - log det(I + S_j A) / 2,
    m_j = N_j mu_j + C_j B,
(the expansion of B.mu_j - mu_j^T A mu_j / 2 + b_j^T C_j b_j / 2, b_j = B - A mu_j, without its
cancellation between terms of size mu^T A mu when A is large).
log Z_in = logsumexp_j c_j; with responsibilities r_j = softmax_j(c_j) the mean is What = sum_j r_j m_j
and the covariance, centred so that nothing cancels in the tails,
Chat = sum_j r_j C_j + sum_j r_j (m_j - What)(m_j - What)^T.
For k = 1 (s_j = S_j) these are the closed forms of the scalar fast path of `GaussMixture`,
    c_j = log pi_j + (s_j B^2 + 2 mu_j B - A mu_j^2) / (2 (1 + A s_j)) - log(1 + A s_j) / 2,
    m_j = (mu_j + s_j B) / (1 + A s_j),    v_j = s_j / (1 + A s_j),
with the variance in the pairwise form sum_j r_j v_j + sum_{i<j} r_i r_j (m_i - m_j)^2.
"""
import math

import array_api_compat as aac
import numpy as np

from amp.backend import logsumexp, namespace, softmax
from denoisers.base import InputDenoiser, check_variance

#: the most components a product law may have (the cost of f_in is O(d J k^2))
MAX_COMPONENTS = 4096


def _check_psd(name, S, definite=False):
    """Raise a ValueError naming `name` unless the (k, k) matrix S is finite, symmetric and positive
    semi-definite (positive definite with `definite`), each to rounding."""
    if not np.all(np.isfinite(S)):
        raise ValueError(f"{name} must be finite, got {S.tolist()}")
    scale = np.abs(S).max()
    if np.abs(S - S.T).max() > 1e-12 * scale:
        raise ValueError(f"{name} must be symmetric, got {S.tolist()}")
    lam_min = np.linalg.eigvalsh(S)[0]
    if definite and not lam_min > 0.0:
        raise ValueError(f"{name} must be positive definite, its smallest eigenvalue is {lam_min}")
    if lam_min < -1e-12 * scale:
        raise ValueError(f"{name} must be positive semi-definite, its smallest eigenvalue is {lam_min}")


def _check_mixture(weights, means, covs):
    """weights (J,), means (J, k), covs (J, k, k) (symmetrised) as float arrays, or a ValueError naming the argument."""
    weights, means, covs = (np.array(a, dtype=float) for a in (weights, means, covs))
    if weights.ndim != 1 or weights.size == 0:
        raise ValueError(f"weights must be a non-empty 1-d array, got shape {weights.shape}")
    J = weights.size
    if means.ndim != 2 or means.shape[0] != J or means.shape[1] == 0:
        raise ValueError(f"means must have shape (J, k) with J = len(weights) = {J} and k >= 1, got {means.shape}")
    k = means.shape[1]
    if covs.shape != (J, k, k):
        raise ValueError(f"covs must have shape (J, k, k) = {(J, k, k)}, got {covs.shape}")
    if not (np.all(weights > 0) and abs(weights.sum() - 1.0) < 1e-10):
        raise ValueError(f"weights must be positive and sum to 1, got {weights}")
    if not np.all(np.isfinite(means)):
        raise ValueError(f"means must be finite, got {means.tolist()}")
    for j, S in enumerate(covs):
        _check_psd(f"covs[{j}]", S)
    return weights, means, (covs + np.swapaxes(covs, 1, 2)) / 2


def _factor(S):
    """L (k, k) with L L^T = S: Cholesky if S is positive definite, else V diag(sqrt(max(lambda, 0)))."""
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        lam, V = np.linalg.eigh(S)
        return V * np.sqrt(np.clip(lam, 0.0, None))


def _outer_product(factors):
    """Components of the product law of mixtures [(weights (J_i,), means (J_i, k_i), covs (J_i, k_i, k_i))].

    J = prod_i J_i components, the last factor's index running fastest: weights multiplied, means
    concatenated, covs block-diagonal. Raises ValueError if J > MAX_COMPONENTS.
    """
    count = math.prod(len(w) for w, _, _ in factors)
    if count > MAX_COMPONENTS:
        raise ValueError(f"the product law has {count} components, more than the {MAX_COMPONENTS} allowed")
    weights, means, covs = np.ones(1), np.zeros((1, 0)), np.zeros((1, 0, 0))
    for w, mu, S in factors:
        (n, k0), (J, k) = means.shape, np.shape(mu)
        weights = np.outer(weights, w).reshape(-1)
        means = np.concatenate([np.repeat(means, J, axis=0), np.tile(mu, (n, 1))], axis=1)
        block = np.zeros((n * J, k0 + k, k0 + k))
        block[:, :k0, :k0] = np.repeat(covs, J, axis=0)
        block[:, k0:, k0:] = np.tile(S, (n, 1, 1))
        covs = block
    return weights, means, covs


class MultiGaussMixture(InputDenoiser):
    """P_in(w) = sum_j weights_j N(w; means_j, covs_j) on R^k; a singular cov is allowed (zero: a point mass).

    weights : (J,) positive, summing to 1; means : (J, k); covs : (J, k, k) symmetric positive semi-definite.
    """

    #: set per instance, from the shape of `means`
    k = None

    def __init__(self, weights, means, covs):
        self.weights, self.means, self.covs = _check_mixture(weights, means, covs)
        self.k = self.means.shape[1]
        self._factors = np.stack([_factor(S) for S in self.covs])  # L_j L_j^T = covs_j, for `sample`

    def __repr__(self):
        return (f"MultiGaussMixture(weights={self.weights.tolist()}, means={self.means.tolist()}, "
                f"covs={self.covs.tolist()})")

    def _tilted(self, B, A):
        """Log weights c (J, d), means m (J, d, k) and covariances C (J, k, k) of the tilted components."""
        k = self.k
        if B.ndim != 2 or B.shape[1] != k:
            raise ValueError(f"B must have shape (d, k) = (d, {k}), got {tuple(B.shape)}")
        if tuple(A.shape) != (k, k):
            raise ValueError(f"A must have shape (k, k) = {(k, k)}, got {tuple(A.shape)}")
        xp, device = namespace(B, A), aac.device(B)
        const = lambda a: xp.asarray(a, dtype=B.dtype, device=device)  # noqa: E731
        log_pi, mu, S = const(np.log(self.weights)), const(self.means), const(self.covs)
        lhs = xp.eye(k, dtype=B.dtype, device=device) + S @ A  # I + S A, with det(I + S A) = det(I + A S)
        N = xp.linalg.inv(lhs)  # N_j = (I + S_j A)^{-1}, (J, k, k)
        C = N @ S
        C = (C + xp.permute_dims(C, (0, 2, 1))) / 2
        Nmu = (N @ mu[..., None])[..., 0]  # (J, k)
        CB = B[None, :, :] @ C  # (J, d, k): rows (C_j B)^T, C_j symmetric
        c = (log_pi[:, None] + 0.5 * xp.vecdot(B[None, :, :], CB) + Nmu @ xp.permute_dims(B, (1, 0))
             - 0.5 * xp.vecdot(mu @ A, Nmu)[:, None] - 0.5 * xp.linalg.slogdet(lhs).logabsdet[:, None])
        m = Nmu[:, None, :] + CB
        return c, m, C

    def _moments(self, B, A):
        """What (d, k), Chat (d, k, k) and log Z_in (d,) of the tilted mixture (module docstring)."""
        xp = namespace(B, A)
        c, m, C = self._tilted(B, A)
        J, d, k = m.shape
        r = softmax(c, axis=0)
        What = xp.sum(r[..., None] * m, axis=0)
        dev = m - What[None, ...]
        spread = xp.permute_dims(r[..., None] * dev, (1, 2, 0)) @ xp.permute_dims(dev, (1, 0, 2))
        within = xp.reshape(xp.permute_dims(r, (1, 0)) @ xp.reshape(C, (J, k * k)), (d, k, k))
        Chat = within + spread
        return What, (Chat + xp.permute_dims(Chat, (0, 2, 1))) / 2, logsumexp(c, axis=0)

    def f_in(self, B, A):
        """What = E[w | B, A] (d, k), Chat = Cov[w | B, A] (d, k, k); B : (d, k), A : (k, k) symmetric."""
        What, Chat, _ = self._moments(B, A)
        return What, Chat

    def log_z_in(self, B, A):
        """log Z_in(B, A) = log E_{P_in} exp(B.w - w^T A w / 2), shape (d,)."""
        return self._moments(B, A)[2]

    def sample(self, d, rng):
        """d draws, shape (d, k): the component j by inverse CDF of a uniform, then mu_j + L_j xi, L_j L_j^T = S_j."""
        xp = rng.xp
        const = lambda a: xp.asarray(a, dtype=xp.float64, device=rng.device)  # noqa: E731
        u = rng.uniform((d, 1))
        xi = rng.normal((d, self.k))
        j = xp.searchsorted(const(np.cumsum(self.weights)[:-1]), u[:, 0], side="right")
        L = xp.take(const(self._factors), j, axis=0)
        return xp.take(const(self.means), j, axis=0) + (L @ xi[..., None])[..., 0]

    def second_moment(self):
        """rho = E[w w^T] = sum_j pi_j (S_j + mu_j mu_j^T), (k, k)."""
        outer = self.means[:, :, None] * self.means[:, None, :]
        return np.einsum("j,jab->ab", self.weights, self.covs + outer)

    def mean(self):
        """E[w] = sum_j pi_j mu_j, (k,)."""
        return self.weights @ self.means

    def components(self):
        """The prior itself: weights (J,), means (J, k), covs (J, k, k)."""
        return self.weights, self.means, self.covs


class GaussMixture(MultiGaussMixture):
    """P_in(w) = sum_j weights_j N(w; means_j, vars_j) on R (k = 1); a zero variance is a point mass.

    weights : (J,) positive, summing to 1; means : (J,); vars : (J,) >= 0. Stored as a `MultiGaussMixture`
    (means (J, 1), covs (J, 1, 1)); f_in and log_z_in take the scalar closed form.
    """

    k = 1

    def __init__(self, weights, means, vars):
        weights, means, vars = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (weights, means, vars))
        if not (weights.ndim == 1 and weights.shape == means.shape == vars.shape):
            raise ValueError(f"weights, means and vars must be 1-d of equal length, got shapes "
                             f"{weights.shape}, {means.shape}, {vars.shape}")
        for j, s in enumerate(vars):
            check_variance(f"vars[{j}]", s, allow_zero=True)
        super().__init__(weights, means[:, None], vars[:, None, None])

    @property
    def vars(self):
        """Variances of the components, (J,)."""
        return self.covs[:, 0, 0]

    def __repr__(self):
        return (f"GaussMixture(weights={self.weights.tolist()}, means={self.means[:, 0].tolist()}, "
                f"vars={self.vars.tolist()})")

    def _scalar_components(self, B, A):
        """Log weights c, means m and variances v of the tilted components, each (d, J), for B (d,), A ()."""
        xp = namespace(B)
        const = lambda a: xp.asarray(a, dtype=B.dtype, device=aac.device(B))  # noqa: E731
        log_pi, mu, s = const(np.log(self.weights)), const(self.means[:, 0]), const(self.vars)
        b = B[..., None]
        denom = 1.0 + A * s
        c = log_pi + (s * b * b + 2.0 * mu * b - A * mu * mu) / (2.0 * denom) - 0.5 * xp.log(denom)
        m = (mu + s * b) / denom
        v = xp.broadcast_to(s / denom, m.shape)
        return c, m, v

    def _moments(self, B, A):
        """The scalar closed form (module docstring) when k = 1; the general one for the k > 1 laws
        that `Gaussian(cov=...)` and `Rademacher(k)` build."""
        if self.k > 1:
            return super()._moments(B, A)
        xp = namespace(B)
        c, m, v = self._scalar_components(B[:, 0], A[0, 0])
        r = softmax(c, axis=-1)
        mean = xp.sum(r * m, axis=-1)
        var = xp.sum(r * v, axis=-1)
        for i in range(len(self.weights)):
            for j in range(i + 1, len(self.weights)):
                var = var + r[..., i] * r[..., j] * (m[..., i] - m[..., j]) ** 2
        return mean[:, None], var[:, None, None], logsumexp(c, axis=-1)


class Gaussian(GaussMixture):
    """P_in = N(mean, var) on R, var > 0; with `cov` (k, k) symmetric positive definite, N(mean, cov) on R^k
    (mean a scalar or a (k,) vector), for which What = (cov^{-1} + A)^{-1} (B + cov^{-1} mean) and
    Chat = (cov^{-1} + A)^{-1}."""

    def __init__(self, mean=0.0, var=1.0, *, cov=None):
        if cov is None:
            super().__init__([1.0], [mean], [check_variance("var", var)])
            return
        if var != 1.0:
            raise ValueError(f"give var (k = 1) or cov, not both; got var={var} and a cov")
        cov = np.asarray(cov, dtype=float)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.size == 0:
            raise ValueError(f"cov must be a (k, k) matrix, got shape {cov.shape}")
        _check_psd("cov", cov, definite=True)
        k = cov.shape[0]
        mean = np.asarray(mean, dtype=float)
        if mean.shape not in ((), (k,)):
            raise ValueError(f"mean must be a scalar or a (k,) = ({k},) vector, got shape {mean.shape}")
        MultiGaussMixture.__init__(self, [1.0], np.broadcast_to(mean, (1, k)), cov[None])

    def __repr__(self):
        if self.k == 1:
            return f"Gaussian(mean={self.means[0, 0]}, var={self.vars[0]})"
        return f"Gaussian(mean={self.means[0].tolist()}, cov={self.covs[0].tolist()})"


class Rademacher(GaussMixture):
    """P_in = (delta_{-1} + delta_{+1}) / 2: What = tanh(B), Chat = 1 - tanh(B)^2; with k > 1 the product
    law on {-1, +1}^k (2^k atoms, k <= 12)."""

    def __init__(self, k=1):
        if not (float(k).is_integer() and k >= 1):
            raise ValueError(f"k must be a positive integer, got {k}")
        if k == 1:
            super().__init__([0.5, 0.5], [-1.0, 1.0], [0.0, 0.0])
        else:
            MultiGaussMixture.__init__(self, *_outer_product([Rademacher().components()] * int(k)))

    def __repr__(self):
        return "Rademacher()" if self.k == 1 else f"Rademacher(k={self.k})"


class BernoulliGauss(GaussMixture):
    """Sparse prior P_in = (1 - rho) delta_0 + rho N(mean, var), 0 < rho <= 1."""

    def __init__(self, rho, mean=0.0, var=1.0):
        rho = float(rho)
        if not 0.0 < rho <= 1.0:
            raise ValueError(f"rho must lie in (0, 1], got {rho}")
        var = check_variance("var", var)
        if rho == 1.0:
            super().__init__([1.0], [mean], [var])
        else:
            super().__init__([1.0 - rho, rho], [0.0, mean], [0.0, var])
        self.rho = rho

    def __repr__(self):
        return f"BernoulliGauss(rho={self.rho}, mean={self.means[-1, 0]}, var={self.vars[-1]})"


class SparseRademacher(GaussMixture):
    """Sparse Rademacher prior P_in = (1 - rho) delta_0 + (rho / 2) (delta_{-1/sqrt(rho)} + delta_{+1/sqrt(rho)}),
    0 < rho <= 1, normalised to E[w^2] = 1 (rho = 1 is Rademacher)."""

    def __init__(self, rho):
        rho = float(rho)
        if not 0.0 < rho <= 1.0:
            raise ValueError(f"rho must lie in (0, 1], got {rho}")
        a = 1.0 / math.sqrt(rho)
        if rho == 1.0:
            super().__init__([0.5, 0.5], [-a, a], [0.0, 0.0])
        else:
            super().__init__([1.0 - rho, 0.5 * rho, 0.5 * rho], [0.0, -a, a], [0.0, 0.0, 0.0])
        self.rho = rho

    def __repr__(self):
        return f"SparseRademacher(rho={self.rho})"


class Product(MultiGaussMixture):
    """The product law of `priors` on R^k, k = sum_i k_i: its components are the outer product of the
    factors' components (weights multiplied, means concatenated, covs block-diagonal), at most 4096.

    priors : non-empty list of priors, each exposing `components()`.
    """

    def __init__(self, priors):
        if not isinstance(priors, (list, tuple)) or not priors:
            raise ValueError(f"priors must be a non-empty list of priors, got {priors!r}")
        for i, prior in enumerate(priors):
            if not callable(getattr(prior, "components", None)):
                raise ValueError(f"priors[{i}] must be a prior with components(), got {prior!r}")
        super().__init__(*_outer_product([prior.components() for prior in priors]))
        self.priors = tuple(priors)

    def __repr__(self):
        return f"Product([{', '.join(map(repr, self.priors))}])"
