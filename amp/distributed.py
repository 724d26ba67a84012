"""Dask: GAMP's output sweep over a dask.array X held by the workers in row chunks, instances
drawn chunk by chunk on the workers, and points of a sweep computed on a dask.distributed cluster.

A Dask X (n, d) or (n, L, d) is chunked by rows only; chunk c, X_c (n_c, L, d), stays on the
worker that holds it. Per GAMP iteration each worker makes `amp.gamp`'s NumPy pass over its chunk
(the fused numba kernel where it applies) and returns
    g_c = g_out(y_c, Omega_c, V) (n_c, L, k),  Omega_c = X_c What / sqrt(d) - g_prev_c V,
    sum over rows and tokens of dg_c[:, l, :, l, :] (k, k),   X_c^T g_c (d, k),
and the (k, k) and (d, k) parts are added on the cluster, in chunk order. So X is read once per
iteration, where it lies, and never reaches the client: What, V, the denoisers and each chunk's
share of y and g_prev travel out, g and the two sums travel back, O(n + d) numbers in all. y,
g_prev, What and the statistics stay NumPy arrays on the client.

Scheduler: dask's default, i.e. the dask.distributed Client made current last (`Client(...)`,
`with client.as_current():`), else dask's local threads. For several machines, run
`dask scheduler` on one host and `dask worker tcp://HOST:8786 --nthreads 1` on each machine (with
amp-toolkit[distributed] installed and NUMBA_NUM_THREADS set to the cores each worker may use),
then `Client("tcp://HOST:8786")` in the session: `amp.gamp`, `amp.teacher_student(...,
backend="dask")` and `amp.sweep.run_sweep(..., client=client)` then run there.
"""
import uuid

import dask
import dask.array as da
import numpy as np

from amp.gamp import _fused_kernel, local_sweep
from amp.instances import chunk_seeds, draw_rows
from amp.validation import check_finite_array


def prepare(X, **small):
    """X (n, ...) persisted on the workers (free when it already is), checked to be chunked by rows
    only and, chunk by chunk on the workers, to be a finite real floating array (in blocks of
    `amp.validation`, O(1) extra memory); `small` (y, truth, ...) must be NumPy arrays or None.
    Raises ValueError naming the argument.

    A Dask X made by da.from_array from an in-memory NumPy array is a second copy of it (dask
    copies the chunks); draw or load the chunks on the workers instead (teacher_student(...,
    backend='dask'), da.from_zarr, ...).
    """
    for name, a in small.items():
        if a is not None and not isinstance(a, np.ndarray):
            raise ValueError(f"{name} must be a NumPy array when X is a Dask array, got {type(a).__name__}")
    if any(len(c) != 1 for c in X.chunks[1:]):
        raise ValueError(f"X must be chunked by rows only (one chunk along every other axis), got chunk sizes "
                         f"{X.chunks[1:]} there; rechunk with X.rechunk({dict.fromkeys(range(1, X.ndim), -1)})")
    X = X.persist()
    dask.compute(*[dask.delayed(check_finite_array)("X", Xc) for Xc in X.to_delayed().ravel()])
    return X


def _chunk_sweep(Xc, yc, g_prev_c, shared, block_rows, fused):
    """`amp.gamp`'s pass over one row chunk Xc (n_c, L, d): (g_c, dg_c, X_c^T g_c)."""
    What, V, prior, channel = shared
    return local_sweep(Xc, yc, What, g_prev_c, V, channel, block_rows, _fused_kernel(Xc, prior, channel, fused))


def _ordered_sum(parts):
    """parts[0] + parts[1] + ...: chunk order, so the rounding does not depend on the scheduler."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def output_sweep(X, y, What, g_prev, V, prior, channel, block_rows, fused):
    """`amp.gamp.output_sweep` over a Dask X (n, L, d) chunked by rows, as a map over its chunks on
    the workers and a sum: g (n, L, k), dg_sum (k, k) and X^T g (d, k) as NumPy arrays.

    y (n, ...), What (d, k), g_prev (n, L, k), V (k, k) : NumPy. block_rows : rows per block of the
    NumPy pass on a worker; fused : as in `amp.gamp`, decided chunk by chunk on the worker.
    """
    bounds = np.cumsum((0,) + X.chunks[0])
    shared = dask.delayed((What, V, prior, channel))  # one copy in the graph, not one per chunk
    sweep = dask.delayed(_chunk_sweep, nout=3)
    parts = [sweep(Xc, y[r0:r1], g_prev[r0:r1], shared, block_rows, fused)
             for Xc, r0, r1 in zip(X.to_delayed().ravel(), bounds[:-1], bounds[1:])]
    total = dask.delayed(_ordered_sum)
    g, dg_sum, XtG = dask.compute([p[0] for p in parts], total([p[1] for p in parts]), total([p[2] for p in parts]))
    return np.concatenate(g), dg_sum, XtG


def gaussian_rows(shape, dtype, rows, seed):
    """A dask.array of iid N(0, 1) entries (shape), persisted: row chunk c (`rows` rows, the last
    one fewer) drawn on a worker by `amp.instances.draw_rows` from the c-th of `chunk_seeds(seed)`,
    so the same numbers as `teacher_student`'s chunked NumPy X."""
    n = shape[0]
    starts = range(0, n, rows)
    draw = dask.delayed(draw_rows, pure=True)
    blocks = [da.from_delayed(draw(chunk_seed, (min(rows, n - r0),) + tuple(shape[1:]), dtype),
                              (min(rows, n - r0),) + tuple(shape[1:]), dtype=dtype)
              for r0, chunk_seed in zip(starts, chunk_seeds(seed, len(starts)))]
    return da.concatenate(blocks).persist()


class ClusterExecutor:
    """Calls of `amp.sweep` run on a dask.distributed client, at most `capacity` at a time (twice the
    cluster's threads, so that no worker waits while the client saves a result)."""

    def __init__(self, client):
        self.client = client
        self.capacity = max(1, 2 * sum(client.nthreads().values()))

    def submit(self, name, fn, *args):
        """A future of fn(*args), keyed by `name` (as the dashboard shows it)."""
        return self.client.submit(fn, *args, key=f"{name}-{uuid.uuid4().hex}")

    def first_done(self, futures):
        """The earliest submitted of `futures` (a dict, in submission order) that has finished."""
        from distributed import wait
        done = wait(list(futures), return_when="FIRST_COMPLETED").done
        return next(f for f in futures if f in done)

    def cancel(self, futures):
        if futures:
            self.client.cancel(list(futures))
