"""Bayes input denoisers (priors) on scalar coordinates, k = 1.

Every closed-form scalar prior here is a finite Gaussian mixture
P_in(w) = sum_j pi_j N(w; mu_j, s_j) (s_j = 0 is a point mass), whose tilted law
P(w | B, A) ∝ P_in(w) exp(B w - A w^2 / 2) is again a Gaussian mixture with
    c_j = log pi_j + (s_j B^2 + 2 mu_j B - A mu_j^2) / (2 (1 + A s_j)) - log(1 + A s_j) / 2,
    m_j = (mu_j + s_j B) / (1 + A s_j),    v_j = s_j / (1 + A s_j).
log Z_in = logsumexp_j c_j; with responsibilities r_j = softmax_j(c_j) the mean is
sum_j r_j m_j and the variance, in a pairwise form without cancellation in the tails,
sum_j r_j v_j + sum_{i<j} r_i r_j (m_i - m_j)^2.
"""
import math

import array_api_compat as aac
import numpy as np

from amp.backend import logsumexp, namespace, softmax
from denoisers.base import InputDenoiser, check_variance


class GaussMixture(InputDenoiser):
    """P_in(w) = sum_j weights_j N(w; means_j, vars_j); a zero variance is a point mass.

    weights : (J,) positive, summing to 1; means : (J,); vars : (J,) >= 0.
    """

    def __init__(self, weights, means, vars):
        weights, means, vars = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (weights, means, vars))
        if not (weights.ndim == 1 and weights.shape == means.shape == vars.shape):
            raise ValueError(f"weights, means and vars must be 1-d of equal length, got shapes "
                             f"{weights.shape}, {means.shape}, {vars.shape}")
        if not np.all(np.isfinite(means)):
            raise ValueError(f"means must be finite, got {means}")
        if not (np.all(weights > 0) and abs(weights.sum() - 1.0) < 1e-10):
            raise ValueError(f"weights must be positive and sum to 1, got {weights}")
        for j, s in enumerate(vars):
            check_variance(f"vars[{j}]", s, allow_zero=True)
        self.weights, self.means, self.vars = weights, means, vars

    def __repr__(self):
        return f"GaussMixture(weights={self.weights.tolist()}, means={self.means.tolist()}, vars={self.vars.tolist()})"

    def _components(self, B, A):
        """Log weights c, means m and variances v of the tilted components, each (d, J)."""
        xp = namespace(B)
        const = lambda a: xp.asarray(a, dtype=B.dtype, device=aac.device(B))  # noqa: E731
        log_pi, mu, s = const(np.log(self.weights)), const(self.means), const(self.vars)
        b = B[..., None]
        denom = 1.0 + A * s
        c = log_pi + (s * b * b + 2.0 * mu * b - A * mu * mu) / (2.0 * denom) - 0.5 * xp.log(denom)
        m = (mu + s * b) / denom
        v = xp.broadcast_to(s / denom, m.shape)
        return c, m, v

    def _moments(self, B, A):
        """Posterior mean (d,), variance (d,) and log Z_in (d,) for scalar B (d,), A ()."""
        xp = namespace(B)
        c, m, v = self._components(B, A)
        r = softmax(c, axis=-1)
        mean = xp.sum(r * m, axis=-1)
        var = xp.sum(r * v, axis=-1)
        for i in range(len(self.weights)):
            for j in range(i + 1, len(self.weights)):
                var = var + r[..., i] * r[..., j] * (m[..., i] - m[..., j]) ** 2
        return mean, var, logsumexp(c, axis=-1)

    def f_in(self, B, A):
        """What = E[w | B, A] (d, 1), Chat = Var[w | B, A] (d, 1, 1); B : (d, 1), A : (1, 1)."""
        mean, var, _ = self._moments(B[:, 0], A[0, 0])
        return mean[:, None], var[:, None, None]

    def log_z_in(self, B, A):
        """log Z_in(B, A) = log E_{P_in} exp(B w - A w^2 / 2), shape (d,)."""
        return self._moments(B[:, 0], A[0, 0])[2]

    def sample(self, d, rng):
        """d draws, shape (d, 1): the component by inverse CDF of a uniform, then mu_j + sqrt(s_j) xi."""
        xp = rng.xp
        u = rng.uniform((d, 1))
        xi = rng.normal((d, 1))
        w = self.means[0] + math.sqrt(self.vars[0]) * xi
        for cut, mu, s in zip(np.cumsum(self.weights)[:-1], self.means[1:], self.vars[1:]):
            w = xp.where(u >= cut, mu + math.sqrt(s) * xi, w)
        return w

    def second_moment(self):
        return np.array([[np.sum(self.weights * (self.vars + self.means ** 2))]])

    def mean(self):
        return np.array([np.sum(self.weights * self.means)])

    def components(self):
        """The prior itself as Gaussian components: weights (J,), means (J, 1), covs (J, 1, 1)."""
        return self.weights, self.means[:, None], self.vars[:, None, None]


class Gaussian(GaussMixture):
    """P_in = N(mean, var), var > 0."""

    def __init__(self, mean=0.0, var=1.0):
        super().__init__([1.0], [mean], [check_variance("var", var)])

    def __repr__(self):
        return f"Gaussian(mean={self.means[0]}, var={self.vars[0]})"


class Rademacher(GaussMixture):
    """P_in = (delta_{-1} + delta_{+1}) / 2: What = tanh(B), Chat = 1 - tanh(B)^2."""

    def __init__(self):
        super().__init__([0.5, 0.5], [-1.0, 1.0], [0.0, 0.0])

    def __repr__(self):
        return "Rademacher()"


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
        return f"BernoulliGauss(rho={self.rho}, mean={self.means[-1]}, var={self.vars[-1]})"


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
