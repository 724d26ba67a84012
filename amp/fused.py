"""Fused GAMP output sweep for NumPy X with L = k = 1 (numba): one trip of each row tile through the cache.

Per row i of X (n, d), with w = What[:, 0] (d,), V = Chat[0, 0] and the channel's scalar kernel:
    omega_i   = x_i . w / sqrt(d) - g_prev_i V
    g_i, dg_i = kernel(y_i, omega_i, V, params)
    XtG      += g_i x_i,    dg_sum += dg_i
Rows go by tiles of TILE_ROWS: the tile's dot products stream it from memory (four rows at a
time, sharing the loads of w), the channel is applied to its rows, and its share of X^T g is added
while the tile is still in L2, column block by column block (COL_BLOCK entries of the accumulator
stay in L1), four rows at a time.
Each of numba's threads (`numba.set_num_threads`) takes a contiguous chunk of rows with its own
d-vector accumulator; the partial sums are added at the end.

Numerics: dot products and X^T g accumulate in X's dtype, as BLAS does; the sums inside a dot
product and the four-row updates are vectorised ('reassoc' and 'contract' fastmath flags only, no
NaN/Inf assumptions); the channel kernels (denoisers/kernels.py) run in float64 without fastmath.
"""
import math

import numba
import numpy as np
from numba import prange, types

from denoisers.kernels import SIGNATURE

#: rows per tile (like COL_BLOCK, frozen into the compiled code): the tile (TILE_ROWS * d entries)
#: stays in L2 between its two uses
TILE_ROWS = 8
#: accumulator entries per column block: the block stays in L1 while a tile's rows are added
COL_BLOCK = 1024
#: fastmath flags of the inner loops: reassociation (vectorised sums) and FMA contraction only
_SUM_FLAGS = {"reassoc", "contract"}


@numba.njit(fastmath=_SUM_FLAGS, cache=True)
def _dot(x, w):
    """x . w."""
    s = w.dtype.type(0)
    for j in range(w.shape[0]):
        s += x[j] * w[j]
    return s


@numba.njit(fastmath=_SUM_FLAGS, cache=True)
def _dot4(x0, x1, x2, x3, w):
    """(x0 . w, x1 . w, x2 . w, x3 . w): one load of w for four rows."""
    s0 = s1 = s2 = s3 = w.dtype.type(0)
    for j in range(w.shape[0]):
        wj = w[j]
        s0 += x0[j] * wj
        s1 += x1[j] * wj
        s2 += x2[j] * wj
        s3 += x3[j] * wj
    return s0, s1, s2, s3


@numba.njit(fastmath=_SUM_FLAGS, cache=True)
def _axpy(a, x, acc):
    """acc += a x."""
    for j in range(acc.shape[0]):
        acc[j] += a * x[j]


@numba.njit(fastmath=_SUM_FLAGS, cache=True)
def _axpy4(a0, a1, a2, a3, x0, x1, x2, x3, acc):
    """acc += a0 x0 + a1 x1 + a2 x2 + a3 x3: one load and store of acc for four rows."""
    for j in range(acc.shape[0]):
        acc[j] += a0 * x0[j] + a1 * x1[j] + a2 * x2[j] + a3 * x3[j]


@numba.njit(cache=True)
def _tile_dots(X, w, t0, t1, dots):
    """dots[i - t0] = x_i . w for the rows i in [t0, t1)."""
    i = t0
    while i + 4 <= t1:
        k = i - t0
        dots[k], dots[k + 1], dots[k + 2], dots[k + 3] = _dot4(X[i], X[i + 1], X[i + 2], X[i + 3], w)
        i += 4
    while i < t1:
        dots[i - t0] = _dot(X[i], w)
        i += 1


@numba.njit(cache=True)
def _add_rows(X, g, t0, t1, acc):
    """acc += sum_{i in [t0, t1)} g_i x_i, column block by column block."""
    d = X.shape[1]
    for j0 in range(0, d, COL_BLOCK):
        j1 = min(d, j0 + COL_BLOCK)
        block = acc[j0:j1]
        i = t0
        while i + 4 <= t1:
            _axpy4(g[i], g[i + 1], g[i + 2], g[i + 3],
                   X[i, j0:j1], X[i + 1, j0:j1], X[i + 2, j0:j1], X[i + 3, j0:j1], block)
            i += 4
        while i < t1:
            _axpy(g[i], X[i, j0:j1], block)
            i += 1


@numba.njit(cache=True)
def _chunk(X, y, w, g_prev, V, kernel, params, g, acc, r0, r1):
    """Rows [r0, r1): g[r0:r1] from the channel, acc += X[r0:r1]^T g[r0:r1]; returns sum dg."""
    inv_sqrt_d = 1.0 / math.sqrt(X.shape[1])
    dg_sum = 0.0
    dots = np.empty(TILE_ROWS)
    for t0 in range(r0, r1, TILE_ROWS):
        t1 = min(r1, t0 + TILE_ROWS)
        _tile_dots(X, w, t0, t1, dots)
        for i in range(t0, t1):
            omega = dots[i - t0] * inv_sqrt_d - g_prev[i] * V
            g_i, dg_i = kernel(y[i], omega, V, params)
            g[i] = g_i
            dg_sum += dg_i
        _add_rows(X, g, t0, t1, acc)
    return dg_sum


def _sweep_signature(dtype):
    """The numba signature of `_sweep` for an X of `dtype` (a numba float type)."""
    vector, matrix = dtype[::1], dtype[:, ::1]
    return types.float64(matrix, vector, vector, vector, types.float64, types.FunctionType(SIGNATURE),
                         types.float64[::1], vector, matrix)


@numba.njit([_sweep_signature(types.float64), _sweep_signature(types.float32)], parallel=True, cache=True)
def _sweep(X, y, w, g_prev, V, kernel, params, g, parts):
    """Fill g (n,) and parts (c, d), parts[j] = X^T g over the j-th of c row chunks; returns sum dg."""
    n = X.shape[0]
    chunks = parts.shape[0]
    dg_parts = np.zeros(chunks)
    for c in prange(chunks):
        dg_parts[c] = _chunk(X, y, w, g_prev, V, kernel, params, g, parts[c], c * n // chunks, (c + 1) * n // chunks)
    return dg_parts.sum()


def output_sweep(X, y, What, g_prev, V, kernel):
    """`amp.gamp.output_sweep` for L = k = 1 in one fused pass: g (n, 1, 1), dg_sum (1, 1), X^T g (d, 1).

    X : (n, 1, d) NumPy array, float32 or float64, with X[:, 0] C-contiguous; y : (n,) labels;
    What : (d, 1); g_prev : (n, 1, 1); V : (1, 1); kernel : (fn, params) from the channel's
    `scalar_kernel()`. Every returned array has X's dtype.
    """
    X2 = X[:, 0]
    n, d = X2.shape
    dtype = X2.dtype
    fn, params = kernel
    g = np.empty(n, dtype=dtype)
    parts = np.zeros((numba.get_num_threads(), d), dtype=dtype)
    dg_sum = _sweep(X2, np.ascontiguousarray(y, dtype=dtype), np.ascontiguousarray(What[:, 0], dtype=dtype),
                    np.ascontiguousarray(g_prev[:, 0, 0], dtype=dtype), float(V[0, 0]), fn,
                    np.ascontiguousarray(params, dtype=np.float64), g, parts)
    return g[:, None, None], np.full((1, 1), dg_sum, dtype=dtype), parts.sum(axis=0)[:, None]
