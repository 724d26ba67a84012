"""Gaussian expectations for the state evolution, computed by calling the denoisers
themselves on batches of quadrature nodes (so a new denoiser gets its SE for free).

Output side (k = L = 1): xi, zeta ~ N(0, 1) independent,
    omega = omega_std xi,   z = z_coef xi + z_std zeta,   y ~ P_out(. | z),
the zeta integral split at the channel's kinks (piecewise Gauss-Legendre on [-ZETA_MAX, ZETA_MAX]),
the xi integral by Gauss-Hermite, the label law by the channel's own `label_quadrature`.
Input side: w* from the prior's `quadrature`, xi by Gauss-Hermite, B = m_hat w* + sqrt(q_hat) xi.
"""
from dataclasses import dataclass

import numpy as np

from denoisers.quadrature import gauss_hermite, gauss_legendre

#: the zeta integral is cut at |zeta| = ZETA_MAX; the Gaussian mass beyond is 1.5e-23
ZETA_MAX = 10.0


@dataclass(frozen=True)
class Nodes:
    """Numbers of quadrature nodes: xi (Gauss-Hermite), zeta per smooth piece (Gauss-Legendre,
    or Gauss-Hermite when the channel has no kink), label noise, prior components."""

    xi: int = 80
    zeta: int = 40
    labels: int = 32
    prior: int = 80


def _zeta_rule(kinks, z_coef, z_std, xi, n):
    """zeta nodes and weights (n_xi, p) for each xi: Gauss-Hermite if no kink, else piecewise
    Gauss-Legendre between -ZETA_MAX, the kinks (kink - z_coef xi) / z_std and ZETA_MAX."""
    if not kinks:
        x, h = gauss_hermite(n)
        return np.broadcast_to(x, (xi.size, n)), np.broadcast_to(h, (xi.size, n))
    cuts = (np.asarray(kinks, dtype=float)[None, :] - z_coef * xi[:, None]) / z_std
    edges = np.sort(np.clip(cuts, -ZETA_MAX, ZETA_MAX), axis=1)
    edges = np.concatenate([np.full((xi.size, 1), -ZETA_MAX), edges, np.full((xi.size, 1), ZETA_MAX)], axis=1)
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    t, w = gauss_legendre(n)
    zeta = 0.5 * (lo + hi) + 0.5 * (hi - lo) * t
    weight = 0.5 * (hi - lo) * w * np.exp(-0.5 * zeta ** 2) / np.sqrt(2.0 * np.pi)
    return zeta.reshape(xi.size, -1), weight.reshape(xi.size, -1)


def output_expectation(channel, fn, omega_std, z_coef, z_std, nodes=Nodes()):
    """E[fn(y, Omega)] for omega = omega_std xi, z = z_coef xi + z_std zeta, y ~ P_out(. | z).

    fn receives labels y (N,) and Omega (N, 1, 1) and returns an array (N, ...) or a tuple of them;
    the result has the same structure, each entry reduced over the N points.
    """
    xi, h_xi = gauss_hermite(nodes.xi)
    zeta, h_zeta = _zeta_rule(tuple(channel.kinks), z_coef, max(z_std, 1e-300), xi, nodes.zeta)
    z = z_coef * xi[:, None] + z_std * zeta
    weight = (h_xi[:, None] * h_zeta).reshape(-1)
    ys, wy = channel.label_quadrature(z.reshape(-1, 1, 1), nodes.labels)
    omega = np.broadcast_to((omega_std * xi)[:, None], z.shape).reshape(-1)
    omega = np.broadcast_to(omega, ys.shape[:2]).reshape(-1, 1, 1)
    total = (wy * weight).reshape(-1)
    values = fn(ys.reshape((-1,) + ys.shape[2:]), omega)
    return _reduce(values, total)


def input_expectation(prior, fn, m_hat, q_hat, A, nodes=Nodes()):
    """E[fn(What, Chat, w*)] with (What, Chat) = f_in(B, A), B = m_hat w* + sqrt(q_hat) xi, w* ~ P_in.

    fn receives What (N, 1), Chat (N, 1, 1) and w* (N, 1); the result is reduced as in
    `output_expectation`.
    """
    w_star, h_w = prior.quadrature(nodes.prior)
    xi, h_xi = gauss_hermite(nodes.xi)
    B = m_hat * w_star[:, None, :] + np.sqrt(q_hat) * xi[None, :, None]
    B = B.reshape(-1, w_star.shape[1])
    What, Chat = prior.f_in(B, np.atleast_2d(A))
    w_rep = np.repeat(w_star, xi.size, axis=0)
    return _reduce(fn(What, Chat, w_rep), (h_w[:, None] * h_xi[None, :]).reshape(-1))


def _reduce(values, weight):
    if isinstance(values, tuple):
        return tuple(_reduce(v, weight) for v in values)
    return np.tensordot(weight, values, axes=(0, 0))
