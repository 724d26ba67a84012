"""Instances of the spiked (low-rank) matrix models, generated on the caller's device.

Symmetric (spiked Wigner):     Y = X* X*^T / sqrt(n) + sqrt(Delta) W,  X* (n, k),  W symmetric,
                               W_ij ~ N(0, 1) for i < j and W_ii ~ N(0, 2) (the GOE).
Rectangular (spiked Wishart):  Y = U* V*^T / sqrt(n) + sqrt(Delta) W,  U* (n, k), V* (m, k),  W_ij ~ N(0, 1).
Rows of X*, U*, V* are drawn iid from their priors.
"""
import math
from dataclasses import dataclass

import numpy as np

from amp.backend import RNG, backend_namespace
from amp.instances import _resolve_dtype
from amp.validation import check_count, check_positive


@dataclass
class SpikedWigner:
    """Y : (n, n) symmetric observation; X : (n, k) spike drawn from `prior`; noise_var = Delta."""

    Y: object
    X: object
    prior: object
    noise_var: float
    seed: object = None

    @property
    def n(self):
        return self.Y.shape[0]


@dataclass
class SpikedWishart:
    """Y : (n, m) observation; U : (n, k) from `prior_u`, V : (m, k) from `prior_v`; noise_var = Delta.

    alpha = m / n is the aspect ratio of the state evolution (`state_evolution.lowrank`)."""

    Y: object
    U: object
    V: object
    prior_u: object
    prior_v: object
    noise_var: float
    seed: object = None

    @property
    def alpha(self):
        return self.Y.shape[1] / self.Y.shape[0]


def _draw_rows(prior, count, rng, dtype, name):
    rows = rng.xp.astype(rng.xp.asarray(prior.sample(count, rng)), dtype)
    if tuple(rows.shape) != (count, prior.k):
        raise ValueError(f"{name}.sample returned shape {tuple(rows.shape)}, expected {(count, prior.k)}")
    return rows


def spiked_wigner(n, prior, noise_var, seed=None, dtype=np.float64, backend="numpy"):
    """Draw X* (n, k) from `prior` and Y = X* X*^T / sqrt(n) + sqrt(noise_var) W with W from the GOE.

    dtype : float64 or float32; backend : 'numpy', 'cupy' or 'torch' (every array is drawn there).
    """
    n = check_count("n", n, minimum=2)
    noise_var = check_positive("noise_var", noise_var)
    xp = backend_namespace(backend)
    dtype = _resolve_dtype(xp, dtype)
    rng = RNG(seed, xp)
    X = _draw_rows(prior, n, rng, dtype, "prior")
    G = rng.normal((n, n), dtype=dtype)
    W = (G + G.T) / math.sqrt(2.0)
    Y = X @ X.T / math.sqrt(n) + math.sqrt(noise_var) * W
    return SpikedWigner(Y=Y, X=X, prior=prior, noise_var=noise_var, seed=seed)


def spiked_wishart(n, m, prior_u, prior_v, noise_var, seed=None, dtype=np.float64, backend="numpy"):
    """Draw U* (n, k), V* (m, k) from their priors and Y = U* V*^T / sqrt(n) + sqrt(noise_var) W, W iid N(0, 1).

    dtype : float64 or float32; backend : 'numpy', 'cupy' or 'torch' (every array is drawn there).
    """
    n = check_count("n", n, minimum=1)
    m = check_count("m", m, minimum=1)
    noise_var = check_positive("noise_var", noise_var)
    if prior_u.k != prior_v.k:
        raise ValueError(f"prior_u has k = {prior_u.k} but prior_v has k = {prior_v.k}")
    xp = backend_namespace(backend)
    dtype = _resolve_dtype(xp, dtype)
    rng = RNG(seed, xp)
    U = _draw_rows(prior_u, n, rng, dtype, "prior_u")
    V = _draw_rows(prior_v, m, rng, dtype, "prior_v")
    Y = U @ V.T / math.sqrt(n) + math.sqrt(noise_var) * rng.normal((n, m), dtype=dtype)
    return SpikedWishart(Y=Y, U=U, V=V, prior_u=prior_u, prior_v=prior_v, noise_var=noise_var, seed=seed)
