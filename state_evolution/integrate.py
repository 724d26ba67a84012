"""Gaussian expectations for the state evolution, computed by calling the denoisers
themselves on batches of quadrature nodes (so a new denoiser gets its SE for free).

Output side (k = L = 1): xi, zeta ~ N(0, 1) independent,
    omega = omega_std xi,   z = z_coef xi + z_std zeta,   y ~ P_out(. | z).
The integrand is smooth except where z or omega crosses one of the channel's kinks, and it
varies on the scale sqrt(V) around them; so zeta is split at the kinks and xi is integrated
on panels graded geometrically towards the kinks of omega, down to that scale.
Input side: B = m_hat w* + sqrt(q_hat) xi is Gaussian given each Gaussian component
(mu_j, s_j) of the prior, B ~ N(m_hat mu_j, m_hat^2 s_j + q_hat); B is integrated on
uniform composite panels fine enough for the sharpest feature of f_in (scale 1/sqrt(1 + q_hat s_j)
in standard units) and w* | B by Gauss-Hermite.
"""
import math
from dataclasses import dataclass

import numpy as np

from denoisers.quadrature import gauss_hermite, gauss_legendre

#: standard Gaussian variables are integrated on [-Z_MAX, Z_MAX]; the mass beyond is 1.5e-23
Z_MAX = 10.0
_PHI_NORM = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Nodes:
    """Quadrature sizes: `panel` Gauss-Legendre nodes per panel; `panels` panels of a smooth
    standard-Gaussian integral (scaled up where the integrand is sharper); `labels` Gauss-Hermite
    nodes for label noise; `posterior` Gauss-Hermite nodes for w* given B."""

    panel: int = 8
    panels: int = 24
    labels: int = 12
    posterior: int = 4
    max_panels: int = 20000


def panel_rule(edges, n):
    """Gauss-Legendre nodes and N(0,1)-density weights on the panels between sorted `edges`.

    edges : (..., P + 1). Returns nodes and weights of shape (..., P * n).
    """
    t, w = gauss_legendre(n)
    lo, hi = edges[..., :-1, None], edges[..., 1:, None]
    x = 0.5 * (lo + hi) + 0.5 * (hi - lo) * t
    weight = 0.5 * (hi - lo) * w * np.exp(-0.5 * x * x) * _PHI_NORM
    shape = edges.shape[:-1] + (-1,)
    return x.reshape(shape), weight.reshape(shape)


def uniform_rule(n_panels, n):
    """Composite rule for E[h(xi)], xi ~ N(0, 1), on n_panels equal panels of [-Z_MAX, Z_MAX]."""
    return panel_rule(np.linspace(-Z_MAX, Z_MAX, int(n_panels) + 1), n)


def graded_rule(kinks, width, nodes=Nodes()):
    """Rule for E[h(xi)] when h has kinks at `kinks` and varies on scale `width` around them.

    Panels: `nodes.panels` equal ones, plus edges at kink +- width * 2^j (j >= 0) up to O(1).
    """
    edges = [np.linspace(-Z_MAX, Z_MAX, nodes.panels + 1)]
    levels = _levels(width)
    for c in kinks:
        if abs(c) < Z_MAX:
            edges += [[c], c - levels, c + levels]
    edges = np.unique(np.clip(np.concatenate(edges), -Z_MAX, Z_MAX))
    return panel_rule(edges, nodes.panel)


def _levels(width):
    """Offsets width * 2^j, j = 0.., up to the first one >= 1: the edges of graded panels."""
    return width * 2.0 ** np.arange(max(0, math.ceil(-math.log2(max(width, 1e-300)))) + 1)


def _zeta_rule(kinks, z_coef, z_std, xi, width, n):
    """zeta nodes and weights (n_xi, p) for each xi, on panels split at the kinks
    (kink - z_coef xi) / z_std and graded towards them down to `width`."""
    if not kinks:
        x, h = gauss_hermite(4 * n)
        return np.broadcast_to(x, (xi.size, x.size)), np.broadcast_to(h, (xi.size, x.size))
    cuts = (np.asarray(kinks, dtype=float)[None, :] - z_coef * xi[:, None]) / z_std
    levels = _levels(width)
    edges = [np.broadcast_to(np.linspace(-Z_MAX, Z_MAX, 9), (xi.size, 9)), cuts]
    edges += [cuts[:, i:i + 1] + sign * levels for i in range(cuts.shape[1]) for sign in (-1.0, 1.0)]
    edges = np.sort(np.clip(np.concatenate(edges, axis=1), -Z_MAX, Z_MAX), axis=1)
    return panel_rule(edges, n)


def output_expectation(channel, fn, omega_std, z_coef, z_std, V, nodes=Nodes()):
    """E[fn(y, Omega)] for omega = omega_std xi, z = z_coef xi + z_std zeta, y ~ P_out(. | z).

    V is the student's variance: with the label noise (a channel's `noise_var`, if any) it sets
    the scale on which the integrand varies around the kinks.
    fn receives labels y (N, ...) and Omega (N, 1, 1) and returns an array (N, ...) or a tuple of
    them; the result has the same structure, each entry reduced over the N points.
    """
    kinks = tuple(channel.kinks)
    noise = getattr(channel, "noise_var", 0.0)
    scale = math.sqrt(min(V, noise) if noise > 0 else V)
    xi_width = min(1.0, scale / omega_std) if omega_std > 0 else 1.0
    xi, h_xi = graded_rule([c / omega_std for c in kinks] if omega_std > 0 else [], xi_width, nodes)
    z_std = max(z_std, 1e-300)
    zeta, h_zeta = _zeta_rule(kinks, z_coef, z_std, xi, min(1.0, scale / z_std), nodes.panel)
    z = z_coef * xi[:, None] + z_std * zeta
    weight = (h_xi[:, None] * h_zeta).reshape(-1)
    ys, wy = channel.label_quadrature(z.reshape(-1, 1, 1), nodes.labels)
    omega = np.broadcast_to((omega_std * xi)[:, None], z.shape).reshape(-1)
    omega = np.broadcast_to(omega, ys.shape[:2]).reshape(-1, 1, 1)
    values = fn(ys.reshape((-1,) + ys.shape[2:]), omega)
    return _reduce(values, (wy * weight).reshape(-1))


def input_expectation(prior, fn, m_hat, q_hat, nodes=Nodes()):
    """E[fn(B, w*)] for B = m_hat w* + sqrt(q_hat) xi, w* ~ P_in (the prior's `components`).

    fn receives B (N, 1) and w* (N, 1) and typically evaluates the denoiser, e.g.
    `prior.f_in(B, A)`; the result is reduced as in `output_expectation`.
    """
    weights, means, covs = prior.components()
    gh_x, gh_h = gauss_hermite(nodes.posterior)
    B_all, w_all, h_all = [], [], []
    for pi, mu, s in zip(weights, means[:, 0], covs[:, 0, 0]):
        var_B = m_hat * m_hat * s + q_hat
        sharpness = m_hat * m_hat * s / q_hat if q_hat > 0 else (0.0 if m_hat == 0 else math.inf)
        n_panels = min(nodes.max_panels, math.ceil(nodes.panels * math.sqrt(1.0 + sharpness)))
        u, h_u = uniform_rule(n_panels, nodes.panel)
        B = m_hat * mu + math.sqrt(var_B) * u
        if s == 0.0:
            B_all.append(B)
            w_all.append(np.full_like(B, mu))
            h_all.append(pi * h_u)
            continue
        gain, post_var = (s * m_hat / var_B, s * q_hat / var_B) if var_B > 0 else (0.0, s)
        post_mean = mu + gain * (B - m_hat * mu)
        post_std = math.sqrt(post_var)
        B_all.append(np.repeat(B, gh_x.size))
        w_all.append((post_mean[:, None] + post_std * gh_x[None, :]).reshape(-1))
        h_all.append(pi * (h_u[:, None] * gh_h[None, :]).reshape(-1))
    return _reduce(fn(np.concatenate(B_all)[:, None], np.concatenate(w_all)[:, None]), np.concatenate(h_all))


def _reduce(values, weight):
    if isinstance(values, tuple):
        return tuple(_reduce(v, weight) for v in values)
    return np.tensordot(weight, values, axes=(0, 0))
