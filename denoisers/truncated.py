"""Moments of a Gaussian restricted to a union of intervals: the posterior of z in
most closed-form channels.

A channel whose posterior on the pre-activation is a mixture of truncated Gaussians,
    Z_out(y, omega, V) = ∫ dz N(z; omega, V) P_out(y | z) = sum_j c_j ∫_{lo_j}^{hi_j} N(z; m_j, v_j) dz,
gets log Z_out and, from E[z | y] and Var[z | y], the output denoiser
    g = (E[z | y] - omega) / V,    dg = (Var[z | y] - V) / V^2.
Each piece's shift E_j - omega and excess variance Var_j - V are formed directly
(no '1 - (1 - small)'), and the between-piece variance pairwise, so that g and dg keep
their relative accuracy far in the tails.
"""
from amp.backend import log_diff_ndtr, log_npdf, logsumexp, namespace, softmax


def truncated_mixture(omega, V, pieces):
    """log Z_out, g and dg from pieces (log_c, m, v, lo, hi), all arrays broadcasting with omega.

    The piece j is c_j N(z; m_j, v_j) on (lo_j, hi_j) (lo_j may be -inf, hi_j +inf); V is the
    prior variance of z around omega. Returns three arrays of omega's shape.
    """
    xp = namespace(omega)
    log_w, shift, excess = [], [], []
    for log_c, m, v, lo, hi in pieces:
        s = xp.sqrt(v)
        a, b = (lo - m) / s, (hi - m) / s
        log_mass = log_diff_ndtr(a, b)
        ra = xp.exp(log_npdf(a) - log_mass)
        rb = xp.exp(log_npdf(b) - log_mass)
        a_ra = xp.where(xp.isfinite(a), a, 0.0) * ra
        b_rb = xp.where(xp.isfinite(b), b, 0.0) * rb
        # Var_j / v_j - 1 = a R_a - b R_b - (R_a - R_b)^2 lies in [-1, 0] (truncating a Gaussian to an
        # interval shrinks its variance); far in a tail (|a| >~ 100) the rounding of R can push it out
        excess.append((v - V) + v * xp.clip(a_ra - b_rb - (ra - rb) ** 2, -1.0, 0.0))
        log_w.append(log_c + log_mass)
        shift.append((m - omega) + s * (ra - rb))
    log_w = xp.stack(log_w, axis=-1)
    log_z = logsumexp(log_w, axis=-1)
    r = softmax(log_w, axis=-1)
    shift = xp.stack(shift, axis=-1)
    excess = xp.stack(excess, axis=-1)
    mean_shift = xp.sum(r * shift, axis=-1)
    var_excess = xp.sum(r * excess, axis=-1)
    for i in range(len(pieces)):
        for j in range(i + 1, len(pieces)):
            var_excess = var_excess + r[..., i] * r[..., j] * (shift[..., i] - shift[..., j]) ** 2
    return log_z, mean_shift / V, var_excess / (V * V)
