"""Scalar numba kernels of closed-form channels, for the fused GAMP sweep (`amp.fused`).

A kernel evaluates one sample of a channel with L = k = 1:
    kernel(y, omega, V, params) -> (g, dg),
    g = d log Z_out / d omega,   dg = d g / d omega,   Z_out = ∫ dz N(z; omega, V) P_out(y | z),
the same math as the channel's vectorised `_posterior`, in float64 scalars. `params` is a
float64 array of the channel's constants (e.g. [noise_var]). Every kernel is compiled for
`SIGNATURE` (eagerly, cached), so that the fused sweep can take it as a first-class function
and still be cached itself; a user's channel can supply its own kernel compiled with
`numba.njit(SIGNATURE)`.
"""
import math

import numba
from numba import types

#: (y, omega, V, params) -> (g, dg), all float64, params a contiguous float64 array
SIGNATURE = types.UniTuple(types.float64, 2)(types.float64, types.float64, types.float64, types.float64[::1])

INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
#: below this u, N(u)/Phi(u) comes from the continued fraction (erfc loses digits in u + R(u))
TAIL_U = -3.0
#: terms of the continued fraction: exact to double precision for u <= TAIL_U
TAIL_TERMS = 60


@numba.njit(types.UniTuple(types.float64, 2)(types.float64), cache=True)
def inverse_mills(u):
    """R(u) = N(u) / Phi(u) and h(u) = u + R(u), both to a few 1e-14 relative (u in [-40, 30]).

    For u >= TAIL_U, Phi(u) = erfc(-u / sqrt 2) / 2 and h = u + R (a cancellation of at most
    a factor R / h < 12). For u < TAIL_U, with t = -u, Laplace's continued fraction
    Phi(-t) / N(t) = 1 / (t + 1 / (t + 2 / (t + 3 / (t + ...)))) gives h = R - t directly,
    h = 1 / (t + 2 / (t + 3 / (t + ...))), and R = t + h, so the far tail keeps its digits.
    """
    if u >= TAIL_U:
        r = INV_SQRT_2PI * math.exp(-0.5 * u * u) / (0.5 * math.erfc(-u * INV_SQRT_2))
        return r, u + r
    t = -u
    f = t
    for k in range(TAIL_TERMS, 1, -1):
        f = t + k / f
    h = 1.0 / f
    return t + h, h


@numba.njit(SIGNATURE, cache=True)
def linear(y, omega, V, params):
    """y = z + sqrt(noise_var) eta, params = [noise_var]: g = (y - omega) / s, dg = -1 / s, s = V + noise_var."""
    s = V + params[0]
    return (y - omega) / s, -1.0 / s


@numba.njit(SIGNATURE, cache=True)
def sign(y, omega, V, params):
    """y = sign(z + sqrt(noise_var) eta), params = [noise_var] (probit when > 0).

    Z_out = Phi(u), u = sigma omega / sqrt(s), s = V + noise_var, sigma = +1 if y > 0 else -1:
    g = sigma R(u) / sqrt(s), dg = -R(u) (u + R(u)) / s, R = N / Phi (`inverse_mills`).
    """
    s = V + params[0]
    root = math.sqrt(s)
    sigma = 1.0 if y > 0.0 else -1.0
    r, h = inverse_mills(sigma * omega / root)
    return sigma * r / root, -r * h / s


@numba.njit(SIGNATURE, cache=True)
def relu(y, omega, V, params):
    """Noiseless y = max(z, 0), params unused: Gaussian at y > 0, Z_out = Phi(-omega / sqrt V) at y = 0.

    y > 0: g = (y - omega) / V, dg = -1 / V; y = 0: the `sign` kernel at label -1 with s = V.
    """
    if y > 0.0:
        return (y - omega) / V, -1.0 / V
    root = math.sqrt(V)
    r, h = inverse_mills(-omega / root)
    return -r / root, -r * h / V


@numba.njit(SIGNATURE, cache=True)
def abs_value(y, omega, V, params):
    """Noiseless y = |z|, params unused: with x = y omega / V,
    g = (y tanh(x) - omega) / V, dg = (y^2 sech^2(x) - V) / V^2, sech^2 x = 4 e / (1 + e)^2, e = exp(-2|x|).
    """
    x = y * omega / V
    e = math.exp(-2.0 * abs(x))
    sech2 = 4.0 * e / ((1.0 + e) * (1.0 + e))
    return (y * math.tanh(x) - omega) / V, (y * y * sech2 - V) / (V * V)
