"""Gaussian expectations for the state evolution, computed by calling the denoisers
themselves on batches of quadrature nodes (so a new denoiser gets its SE for free).

Output side (k = L = 1): xi, zeta ~ N(0, 1) independent,
    omega = omega_std xi,   z = z_coef xi + z_std zeta,   y ~ P_out(. | z).
The integrand is smooth except where z or omega crosses one of the channel's kinks, and it
varies on the scale sqrt(V) around them; so zeta is split at the kinks and xi is integrated
on panels graded geometrically towards the kinks of omega, down to that scale.
Input side: B = m_hat w* + sqrt(q_hat) xi is Gaussian given each Gaussian component
(mu_j, s_j) of the prior, B ~ N(m_hat mu_j, m_hat^2 s_j + q_hat); B is integrated adaptively
(panels halved until converged: f_in switches between components on scales that shrink like
1/sqrt(q_hat s_j)) and w* | B by Gauss-Hermite.
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
    """Quadrature sizes: `panel` Gauss-Legendre nodes per panel; `panels` initial panels of a
    standard-Gaussian integral; `labels` Gauss-Hermite nodes for label noise; `posterior`
    Gauss-Hermite nodes for w* given B; `rtol`, `max_rounds`, `max_panels` of the adaptive rule."""

    panel: int = 8
    panels: int = 24
    labels: int = 12
    posterior: int = 4
    rtol: float = 1e-12
    max_rounds: int = 40
    max_panels: int = 4096


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


def output_conditional(channel, fn, omega_std, z_coef, z_std, V, nodes=Nodes()):
    """E[fn(y, Omega) | xi] on the xi rule, for omega = omega_std xi, z = z_coef xi + z_std zeta,
    y ~ P_out(. | z). Returns the conditional means (n_xi, ...) (or a tuple of them) and the xi
    weights (n_xi,), so that their weighted sum is the full expectation.

    V is the student's variance: with the label noise (a channel's `noise_var`, if any) it sets
    the scale on which the integrand varies around the kinks. fn receives labels y (N, ...) and
    Omega (N, 1, 1) and returns an array (N, ...) or a tuple of them.
    """
    kinks = tuple(channel.kinks)
    noise = getattr(channel, "noise_var", 0.0)
    scale = math.sqrt(min(V, noise) if noise > 0 else V)
    xi_width = min(1.0, scale / omega_std) if omega_std > 0 else 1.0
    xi, h_xi = graded_rule([c / omega_std for c in kinks] if omega_std > 0 else [], xi_width, nodes)
    z_std = max(z_std, 1e-300)
    zeta, h_zeta = _zeta_rule(kinks, z_coef, z_std, xi, min(1.0, scale / z_std), nodes.panel)
    z = z_coef * xi[:, None] + z_std * zeta
    ys, wy = channel.label_quadrature(z.reshape(-1, 1, 1), nodes.labels)
    m = ys.shape[0]
    omega = np.broadcast_to((omega_std * xi)[None, :, None], (m,) + z.shape).reshape(-1, 1, 1)
    weight = wy.reshape((m,) + z.shape) * h_zeta[None]
    values = fn(ys.reshape((-1,) + ys.shape[2:]), omega)

    def condition(v):
        if isinstance(v, tuple):
            return tuple(condition(u) for u in v)
        return np.einsum("mxz,mxz...->x...", weight, v.reshape((m,) + z.shape + v.shape[1:]))
    return condition(values), h_xi


def output_expectation(channel, fn, omega_std, z_coef, z_std, V, nodes=Nodes()):
    """E[fn(y, Omega)] for omega = omega_std xi, z = z_coef xi + z_std zeta, y ~ P_out(. | z).

    Arguments as in `output_conditional`; the result has the structure of fn's output, each
    entry reduced over all points.
    """
    values, h_xi = output_conditional(channel, fn, omega_std, z_coef, z_std, V, nodes)
    return _reduce(values, h_xi)


def adaptive_expectation(integrand, nodes=Nodes()):
    """E[integrand(u)] for u ~ N(0, 1) on [-Z_MAX, Z_MAX], by panels halved where needed.

    integrand maps u (N,) to values (N, M). Every panel is compared with its two halves
    (Gauss-Legendre, `nodes.panel` points each) and split until the difference is below
    `nodes.rtol` times the integral of |integrand| (per column), in proportion to its width,
    for at most `nodes.max_rounds` rounds and `nodes.max_panels` panels under refinement.
    Returns the (M,) expectation.
    """
    t, w = gauss_legendre(nodes.panel)

    def panels(lo, hi):
        half = 0.5 * (hi - lo)
        u = (0.5 * (lo + hi))[:, None] + half[:, None] * t
        weight = half[:, None] * w * np.exp(-0.5 * u * u) * _PHI_NORM
        values = integrand(u.reshape(-1)).reshape(u.shape + (-1,))
        return np.einsum("pn,pnm->pm", weight, values), np.einsum("pn,pnm->pm", weight, np.abs(values))

    edges = np.linspace(-Z_MAX, Z_MAX, nodes.panels + 1)
    lo, hi = edges[:-1], edges[1:]
    coarse, magnitude = panels(lo, hi)
    budget = nodes.rtol * magnitude.sum(axis=0) / (2.0 * Z_MAX)
    total = np.zeros(coarse.shape[1])
    for _ in range(nodes.max_rounds):
        mid = 0.5 * (lo + hi)
        left, _ = panels(lo, mid)
        right, _ = panels(mid, hi)
        fine = left + right
        done = np.all(np.abs(fine - coarse) <= budget * (hi - lo)[:, None], axis=1)
        total += fine[done].sum(axis=0)
        keep = ~done
        if not keep.any() or 2 * keep.sum() > nodes.max_panels:
            return total + fine[keep].sum(axis=0)
        lo, hi = np.concatenate([lo[keep], mid[keep]]), np.concatenate([mid[keep], hi[keep]])
        coarse = np.concatenate([left[keep], right[keep]])
    return total + coarse.sum(axis=0)


def input_expectation(prior, fn, m_hat, q_hat, nodes=Nodes()):
    """E[fn(B, w*)] for B = m_hat w* + sqrt(q_hat) xi, w* ~ P_in (the prior's `components`).

    fn receives B (N, 1) and w* (N, 1) and typically evaluates the denoiser, e.g.
    `prior.f_in(B, A)`; it returns an array (N, ...) or a tuple of them, and the result has the
    same structure. Per component (mu, s) of the prior, B = m_hat mu + sqrt(m_hat^2 s + q_hat) u
    and w* | B is Gaussian (Gauss-Hermite); u is integrated adaptively.
    """
    weights, means, covs = prior.components()
    gh_x, gh_h = gauss_hermite(nodes.posterior)
    shapes = []

    def integrand(u):
        fields, stars, heights = [], [], []
        for pi, mu, s in zip(weights, means[:, 0], covs[:, 0, 0]):
            var_B = m_hat * m_hat * s + q_hat
            B = m_hat * mu + math.sqrt(var_B) * u[:, None]
            if s == 0.0:
                fields.append(B), stars.append(np.full_like(B, mu)), heights.append(np.array([pi]))
                continue
            gain, post_var = (s * m_hat / var_B, s * q_hat / var_B) if var_B > 0 else (0.0, s)
            fields.append(np.broadcast_to(B, (u.size, gh_x.size)))
            stars.append(mu + gain * (B - m_hat * mu) + math.sqrt(post_var) * gh_x)
            heights.append(pi * gh_h)
        flat = _flatten(fn(np.concatenate([b.reshape(-1) for b in fields])[:, None],
                           np.concatenate([w.reshape(-1) for w in stars])[:, None]), shapes)
        out, offset = 0.0, 0
        for B, h in zip(fields, heights):  # sum components and posterior nodes onto the u points
            block = flat[offset:offset + B.size].reshape(B.shape + (-1,))
            out = out + np.einsum("p,upm->um", h, block)
            offset += B.size
        return out

    return _unflatten(adaptive_expectation(integrand, nodes), shapes)


def _flatten(values, shapes):
    """Stack an array (N, ...) or a tuple of them into (N, M); record their shapes once."""
    parts = values if isinstance(values, tuple) else (values,)
    if not shapes:
        shapes.append(isinstance(values, tuple))
        shapes.extend(p.shape[1:] for p in parts)
    return np.concatenate([np.asarray(p, dtype=float).reshape(p.shape[0], -1) for p in parts], axis=1)


def _unflatten(flat, shapes):
    is_tuple, out, offset = shapes[0], [], 0
    for shape in shapes[1:]:
        size = int(np.prod(shape))
        out.append(flat[offset:offset + size].reshape(shape))
        offset += size
    return tuple(out) if is_tuple else out[0]


def _reduce(values, weight):
    if isinstance(values, tuple):
        return tuple(_reduce(v, weight) for v in values)
    return np.tensordot(weight, values, axes=(0, 0))
