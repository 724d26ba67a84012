"""Quadrature rules for Gaussian expectations (shared by denoisers and state evolution)."""
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=None)
def gauss_hermite(n):
    """Nodes x (n,) and weights w (n,) with sum_j w_j h(x_j) ≈ E[h(xi)], xi ~ N(0, 1).

    Probabilists' Gauss-Hermite: exact for polynomials of degree < 2n.
    """
    x, w = np.polynomial.hermite_e.hermegauss(int(n))
    x.setflags(write=False)
    w = w / np.sqrt(2.0 * np.pi)
    w.setflags(write=False)
    return x, w


@lru_cache(maxsize=None)
def gauss_legendre(n):
    """Nodes t (n,) and weights w (n,) on [-1, 1]: sum_j w_j h(t_j) ≈ ∫_{-1}^{1} h(t) dt."""
    t, w = np.polynomial.legendre.leggauss(int(n))
    t.setflags(write=False)
    w.setflags(write=False)
    return t, w
