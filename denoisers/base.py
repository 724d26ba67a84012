"""Protocols of the two plug-in points: input denoisers (priors, penalties) and output
denoisers (channels, losses).

A denoiser is written once and serves the GAMP iteration on data, the state evolution
on quadrature nodes and the free entropy. Its methods are vectorised over the leading
axis and written against the array namespace of their inputs.

Shapes: d coordinates (rows of W), n samples, L tokens, k index directions.
"""
import math

import numpy as np

from amp.backend import RNG, namespace


def check_variance(name, value, allow_zero=False):
    """A variance as a float, or a ValueError that names the argument."""
    value = float(value)
    ok = value >= 0.0 if allow_zero else value > 0.0
    if not (math.isfinite(value) and ok):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite variance {bound}, got {value}")
    return value


class InputDenoiser:
    """Prior (Bayes) or penalty (ERM) on a row w in R^k of W.

    Bayes: the tilted law P(w | B, A) ∝ P_in(w) exp(B.w - w^T A w / 2).
    """

    k = 1

    def f_in(self, B, A):
        """Mean and covariance of the tilted law.

        B : (d, k) field; A : (k, k) precision. Returns What (d, k), Chat (d, k, k).
        """
        raise NotImplementedError

    def log_z_in(self, B, A):
        """log ∫ dP_in(w) exp(B.w - w^T A w / 2), shape (d,)."""
        raise NotImplementedError

    def sample(self, d, rng):
        """d rows drawn from P_in, shape (d, k), in `rng`'s namespace."""
        raise NotImplementedError

    def second_moment(self):
        """rho = E[w w^T], a (k, k) NumPy array."""
        raise NotImplementedError

    def mean(self):
        """E[w], a (k,) NumPy array."""
        raise NotImplementedError

    def components(self):
        """P_in as a mixture of Gaussians: weights (J,), means (J, k), covs (J, k, k) (zero = atom).

        Used by the state evolution. This default is 4096 Monte Carlo atoms drawn by `sample`;
        closed-form priors return their exact components.
        """
        m = 4096
        nodes = np.asarray(self.sample(m, RNG(seed=12345)), dtype=float)
        return np.full(m, 1.0 / m), nodes, np.zeros((m, self.k, self.k))


class OutputDenoiser:
    """Channel P_out(y | Z) (Bayes) or loss (ERM) on pre-activations Z in R^{L x k}.

    Bayes: Z_out(y, Omega, V) = ∫ dZ P_out(y | Z) prod_l N(z_l; omega_l, V).
    """

    tokens = 1
    k = 1
    #: shape of one label (y has shape (n, *label_shape))
    label_shape = ()
    #: the finite label set, or None for continuous labels
    labels = None
    #: pre-activation values where the label is not smooth in z (for SE quadrature)
    kinks = ()

    def g_out(self, y, Omega, V):
        """g = d log Z_out / d Omega and its Jacobian.

        y : (n, ...) labels; Omega : (n, L, k); V : (k, k).
        Returns g (n, L, k) and dg (n, L, k, L, k).
        """
        raise NotImplementedError

    def log_z_out(self, y, Omega, V):
        """log Z_out(y, Omega, V), shape (n,)."""
        raise NotImplementedError

    def posterior(self, y, Omega, V):
        """log Z_out (n,), g (n, L, k) and dg (n, L, k, L, k) at once (the state evolution needs all
        three). This default calls `log_z_out` and `g_out`; a denoiser that computes them in one
        pass over its nodes returns them from that pass instead."""
        g, dg = self.g_out(y, Omega, V)
        return self.log_z_out(y, Omega, V), g, dg

    def scalar_kernel(self):
        """A numba kernel of one sample for the fused GAMP sweep (`amp.fused`), or None (the default).

        Only for L = k = 1: returns (kernel, params), kernel(y, omega, V, params) -> (g, dg) on
        float64 scalars with the math of `g_out`, compiled for `denoisers.kernels.SIGNATURE`;
        params a float64 array of the channel's constants.
        """
        return None

    def sample(self, Z, rng):
        """Labels y ~ P_out(. | Z) for Z of shape (n, L, k), in `rng`'s namespace."""
        raise NotImplementedError

    def check_labels(self, y):
        """Raise ValueError if `y` lies outside the channel's support."""
        xp = namespace(y)
        if not bool(xp.all(xp.isfinite(y))):
            raise ValueError("y contains NaN or Inf")

    def label_quadrature(self, Z, n_nodes):
        """Labels (m, n, ...) and weights (m, n) with sum_j w_j h(y_j) ≈ E[h(y) | Z].

        Z : (n, L, k) NumPy array. Used by the state evolution; this default is
        Monte Carlo from `sample`. Closed-form channels override it with an exact rule.
        """
        m = int(n_nodes)
        rng = RNG(seed=12345)
        ys = np.stack([np.asarray(self.sample(Z, rng)) for _ in range(m)])
        return ys, np.full(ys.shape[:2], 1.0 / m)
