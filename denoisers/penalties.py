"""ERM input denoisers (penalties) on scalar coordinates, k = 1.

GAMP with a penalty r minimises sum_mu loss(y_mu, x_mu . w / sqrt(d)) + sum_i r(w_i). Its input
denoiser is the proximal map of r and its derivative in the field B:
    f_in(B, A) = argmin_w r(w) + A w^2 / 2 - B w = prox_{r/A}(B / A),    Chat = d f_in / d B.
For the elastic net r(w) = l1 |w| + l2 w^2 / 2 (L1 and L2 are its special cases):
    f_in = S(B, l1) / (A + l2),    Chat = 1{|B| > l1} / (A + l2),    S(B, t) = sign(B) max(|B| - t, 0).
"""
import math

import numpy as np

from amp.backend import namespace
from denoisers.base import InputDenoiser


def _strength(name, value):
    """A regularisation strength as a float >= 0, or a ValueError that names it."""
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


class ElasticNet(InputDenoiser):
    """Penalty r(w) = l1 |w| + l2 w^2 / 2, l1, l2 >= 0.

    As an input denoiser of `amp.gamp`, it starts GAMP from What^0 = sqrt(eps) xi, xi ~ N(0, 1)
    (`mean()` = 0, `second_moment()` = 1 set only that random start, eps = init_overlap); it has
    no log_z_in and draws no teacher (`sample`): teachers come from a prior.
    """

    def __init__(self, l1, l2):
        self.l1 = _strength("l1", l1)
        self.l2 = _strength("l2", l2)

    def __repr__(self):
        return f"ElasticNet(l1={self.l1}, l2={self.l2})"

    def penalty(self, w):
        """r(w) elementwise, same shape as w."""
        return self.l1 * namespace(w).abs(w) + 0.5 * self.l2 * w * w

    def f_in(self, B, A):
        """What = S(B, l1) / (A + l2) (d, 1) and Chat = 1{|B| >= l1} / (A + l2) (d, 1, 1);
        B : (d, 1), A : (1, 1), A + l2 > 0."""
        xp = namespace(B)
        precision = A[0, 0] + self.l2
        active = xp.abs(B) >= self.l1
        shrunk = xp.where(active, B - self.l1 * xp.sign(B), xp.zeros_like(B))
        return shrunk / precision, (xp.astype(active, B.dtype) / precision)[:, :, None]

    def second_moment(self):
        """[[1.0]]: the variance of GAMP's random start What^0 = sqrt(eps) xi."""
        return np.ones((1, 1))

    def mean(self):
        """[0.0]: GAMP's random start is centred."""
        return np.zeros(1)


class L1(ElasticNet):
    """Lasso penalty r(w) = lam |w|: What = S(B, lam) / A, Chat = 1{|B| > lam} / A (A > 0)."""

    def __init__(self, lam):
        super().__init__(_strength("lam", lam), 0.0)
        self.lam = self.l1

    def __repr__(self):
        return f"L1(lam={self.lam})"


class L2(ElasticNet):
    """Ridge penalty r(w) = lam w^2 / 2: What = B / (A + lam), Chat = 1 / (A + lam)."""

    def __init__(self, lam):
        super().__init__(0.0, _strength("lam", lam))
        self.lam = self.l2

    def __repr__(self):
        return f"L2(lam={self.lam})"
