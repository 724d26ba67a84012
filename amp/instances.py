"""Teacher-student instances of the sequence multi-index model, generated on the caller's device.

Designs: X iid N(0, 1), or right-rotationally invariant X = U diag(s) V^T (n, d) with U (n, r),
V (d, r) the first r = min(n, d) columns of Haar orthogonal matrices and a prescribed spectrum s,
normalised to sum_i s_i^2 = n d so that E[x_mu . x_mu] / d = 1 as in the iid case.

An iid X larger than `chunk_bytes` (CHUNK_BYTES by default) is drawn in row chunks of at most that
size, chunk c from its own seed (the c-th child of the instance's seed), so that no temporary
exceeds a chunk and the chunks can be drawn where they are stored: backend='dask' always draws X
so, on the workers, and gives the same numbers as a chunked NumPy X. A smaller X is drawn from the
instance's own stream.
"""
import math
from dataclasses import dataclass

import array_api_compat as aac
import numpy as np

from amp.backend import RNG, backend_namespace
from amp.validation import check_compatible, check_count, check_positive

#: an iid X above this many bytes is drawn in row chunks of at most this size, each from its own seed
CHUNK_BYTES = 256 << 20


@dataclass
class Instance:
    """X : (n, d) when tokens = 1, else (n, L, d); W : (d, k) teacher drawn from the prior;
    y : labels drawn from the channel at Z = X W / sqrt(d).

    For a rotationally invariant design, svd = (U (n, r), s (r,), Vt (r, d)) with X = U diag(s) Vt,
    in X's namespace (to hand to `amp.vamp`), and spectrum = s as a NumPy array (for
    `state_evolution.vamp`); both None for iid X.
    """

    X: object
    y: object
    W: object
    alpha: float
    prior: object
    channel: object
    seed: object = None
    svd: tuple = None
    spectrum: np.ndarray = None

    @property
    def n(self):
        return self.X.shape[0]

    @property
    def d(self):
        return self.X.shape[-1]


def _resolve_dtype(xp, dtype):
    """The backend's float32 or float64 for a NumPy-style dtype, a string or a backend dtype."""
    for name in ("float32", "float64"):
        candidate = getattr(xp, name)
        if dtype is candidate or dtype == name:
            return candidate
        try:
            if np.dtype(dtype) == np.dtype(name):
                return candidate
        except TypeError:
            pass
    raise ValueError(f"dtype must be float32 or float64 (NumPy-style, a string or the backend's own), got {dtype!r}")


def geometric_spectrum(size, condition_number):
    """Singular values s_i = condition_number^(-i / (size - 1)), i = 0..size-1: geometrically spaced
    from 1 down to 1 / condition_number (a (size,) NumPy array)."""
    size = check_count("size", size, minimum=1)
    kappa = check_positive("condition_number", condition_number)
    if kappa < 1.0:
        raise ValueError(f"condition_number must be >= 1, got {kappa}")
    return kappa ** (-np.arange(size) / max(size - 1, 1))


def _normalised_spectrum(n, d, condition_number, spectrum):
    """The design's singular values (min(n, d),) scaled to sum s^2 = n d."""
    r = min(n, d)
    if spectrum is None:
        s = geometric_spectrum(r, condition_number)
    else:
        if condition_number is not None:
            raise ValueError("give condition_number or spectrum, not both")
        s = np.asarray(spectrum, dtype=float)
        if s.shape != (r,):
            raise ValueError(f"spectrum must hold min(n, d) = {r} singular values, got shape {s.shape}")
        if not (np.all(np.isfinite(s)) and np.all(s >= 0) and np.any(s > 0)):
            raise ValueError("spectrum must be finite singular values >= 0, not all zero")
    return s * math.sqrt(n * d / np.sum(s * s))


def haar_columns(rows, cols, rng, dtype):
    """The first `cols` columns (rows, cols) of a Haar-distributed orthogonal matrix: Q of the QR
    decomposition of a Gaussian matrix, with the signs of diag(R) moved into Q (Mezzadri 2007)."""
    xp = rng.xp
    Q, R = xp.linalg.qr(rng.normal((rows, cols), dtype=dtype))
    return Q * xp.sign(xp.linalg.diagonal(R))


def chunk_seeds(seed, count):
    """`count` 64-bit seeds, one per row chunk: the children of `seed` (NumPy SeedSequence.spawn)."""
    return [int(child.generate_state(1, np.uint64)[0]) for child in np.random.SeedSequence(seed).spawn(count)]


def draw_rows(seed, shape, dtype, backend="numpy"):
    """A row chunk of X: iid N(0, 1) entries of `shape` from their own seed, on `backend`."""
    xp = backend_namespace(backend)
    return RNG(seed, xp).normal(shape, dtype=dtype)


def _gaussian_design(shape, dtype, itemsize, rng, seed, backend, chunk_bytes):
    """iid N(0, 1) X (shape): from `rng` when it fits in one chunk (and is not a Dask X), else chunk
    by chunk from `chunk_seeds(seed)` (module docstring)."""
    n = shape[0]
    rows = max(1, chunk_bytes // (math.prod(shape[1:]) * itemsize))
    if backend == "dask":
        from amp.distributed import gaussian_rows
        return gaussian_rows(shape, dtype, rows, seed)
    if rows >= n:
        return rng.normal(shape, dtype=dtype)
    X = rng.xp.empty(shape, dtype=dtype)
    for r0, chunk_seed in zip(range(0, n, rows), chunk_seeds(seed, len(range(0, n, rows)))):
        X[r0:r0 + rows] = draw_rows(chunk_seed, (min(rows, n - r0),) + tuple(shape[1:]), dtype, backend)
    return X


def teacher_student(d, alpha, prior, channel, seed=None, tokens=1, dtype=np.float64, backend="numpy",
                    condition_number=None, spectrum=None, chunk_bytes=None):
    """Draw W* (d, k) from `prior`, X with n = round(alpha d) samples, y ~ P_out(. | X W* / sqrt(d)).

    dtype : float64 or float32 (NumPy-style, a string, or the backend's own dtype).
    backend : 'numpy', 'cupy' or 'torch': every array is drawn there, on its default device; or
    'dask': X is a dask.array of row chunks, drawn and persisted on the workers of dask's current
    scheduler (`amp.distributed`), W and y are NumPy arrays.
    condition_number, spectrum : either one gives the rotationally invariant design X = U diag(s) V^T
    (tokens = 1) with s geometrically spaced from s_max to s_max / condition_number, or s = spectrum
    ((min(n, d),) singular values, up to scale); s is normalised to sum s^2 = n d.
    chunk_bytes : an iid X above this size is drawn in row chunks of at most this size (see the
    module docstring); CHUNK_BYTES by default.
    """
    d = check_count("d", d, minimum=1)
    alpha = check_positive("alpha", alpha)
    tokens = check_count("tokens", tokens, minimum=1)
    chunk_bytes = CHUNK_BYTES if chunk_bytes is None else check_count("chunk_bytes", chunk_bytes, minimum=1)
    check_compatible(prior, channel, tokens)
    xp = backend_namespace("numpy" if backend == "dask" else backend)
    dtype = _resolve_dtype(xp, dtype)
    n = max(1, round(alpha * d))
    rng = RNG(seed, xp)
    W = xp.astype(xp.asarray(prior.sample(d, rng)), dtype)
    if tuple(W.shape) != (d, prior.k):
        raise ValueError(f"prior.sample returned shape {tuple(W.shape)}, expected (d, k) = {(d, prior.k)}")
    svd = s = None
    if condition_number is None and spectrum is None:
        X = _gaussian_design((n, d) if tokens == 1 else (n, tokens, d), dtype, 4 if dtype == xp.float32 else 8, rng,
                             seed, backend, chunk_bytes)
    else:
        if tokens != 1:
            raise ValueError(f"a rotationally invariant design needs tokens = 1, got tokens = {tokens}")
        if backend == "dask":
            raise ValueError("backend='dask' draws iid designs only, not condition_number or spectrum")
        s = _normalised_spectrum(n, d, condition_number, spectrum)
        U, V = haar_columns(n, s.size, rng, dtype), haar_columns(d, s.size, rng, dtype)
        s_x = xp.asarray(s, dtype=dtype, device=aac.device(U))
        X = (U * s_x) @ V.T
        svd = (U, s_x, V.T)
    Z = X @ W / math.sqrt(d)
    Z = Z.compute() if backend == "dask" else Z  # (n, L, k): small, on the client
    Z = Z[:, None, :] if tokens == 1 else Z
    y = xp.astype(channel.sample(Z, rng), dtype)
    return Instance(X=X, y=y, W=W, alpha=alpha, prior=prior, channel=channel, seed=seed, svd=svd, spectrum=s)
