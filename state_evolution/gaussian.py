"""Expectations over a standard Gaussian vector u ~ N(0, I_D), with an error estimate, for the
matrix-valued state evolution (k > 1 or L > 1).

Small D: the tensor Gauss-Hermite rule with n = min(max_gh, floor(max_points^(1/D))) nodes per
dimension, its error estimated by the difference with a rule of about 0.7 n nodes. Beyond (n would
fall under min_gh): randomised quasi-Monte Carlo, `repeats` independently scrambled Sobol' sets of
2^qmc_log2 points mapped through the Gaussian quantile, the error being the standard error of the
mean over the sets.
"""
import math
from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc

from denoisers.quadrature import gauss_hermite


@dataclass(frozen=True)
class GaussianRule:
    """Sizes of the rule for E[h(u)], u ~ N(0, I_D) (see the module doc); `labels` Gauss-Hermite
    nodes integrate label noise (a channel's `label_quadrature`)."""

    max_points: int = 1 << 14
    max_gh: int = 48
    min_gh: int = 8
    qmc_log2: int = 12
    repeats: int = 4
    seed: int = 0
    labels: int = 6

    def gh_nodes(self, dim):
        """Gauss-Hermite nodes per dimension for a D = dim tensor rule, or 0 when QMC is used."""
        n = min(self.max_gh, int(math.floor(self.max_points ** (1.0 / dim) + 1e-9)))
        return n if n >= self.min_gh else 0


def tensor_hermite(dim, n):
    """Tensor Gauss-Hermite rule: points (n^dim, dim) and weights (n^dim,) for N(0, I_dim)."""
    x, h = gauss_hermite(n)
    points = np.array(list(product(x, repeat=dim)))
    weights = np.prod(np.array(list(product(h, repeat=dim))), axis=1)
    return points, weights


def sobol_normal(dim, log2_points, seed):
    """2^log2_points scrambled Sobol' points mapped to N(0, I_dim): (N, dim), equal weights (N,)."""
    u = qmc.Sobol(dim, scramble=True, seed=seed).random_base2(log2_points)
    points = ndtri(np.clip(u, 1e-300, 1.0 - 2.0 ** -53))
    return points, np.full(points.shape[0], 1.0 / points.shape[0])


def gaussian_expectation(fn, dim, rule=GaussianRule()):
    """E[fn(u)] for u ~ N(0, I_dim) and an estimate of its absolute error (same shape).

    fn maps points (N, dim) to values (N, ...). Returns (value, error) as NumPy arrays.
    """
    n = rule.gh_nodes(dim)
    if n:
        value = _weighted(fn, *tensor_hermite(dim, n))
        coarse = _weighted(fn, *tensor_hermite(dim, max(2, round(0.7 * n))))
        return value, np.abs(value - coarse)
    sets = np.stack([_weighted(fn, *sobol_normal(dim, rule.qmc_log2, rule.seed + r)) for r in range(rule.repeats)])
    return sets.mean(axis=0), sets.std(axis=0, ddof=1) / math.sqrt(rule.repeats)


def _weighted(fn, points, weights):
    return np.tensordot(weights, np.asarray(fn(points), dtype=float), axes=(0, 0))
