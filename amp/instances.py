"""Teacher-student instances of the sequence multi-index model, generated on the caller's device."""
import math
from dataclasses import dataclass

import numpy as np

from amp.backend import RNG, backend_namespace
from amp.validation import check_compatible, check_count, check_positive


@dataclass
class Instance:
    """X : (n, d) when tokens = 1, else (n, L, d), iid N(0, 1); W : (d, k) teacher drawn from the prior;
    y : labels drawn from the channel at Z = X W / sqrt(d)."""

    X: object
    y: object
    W: object
    alpha: float
    prior: object
    channel: object
    seed: object = None

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


def teacher_student(d, alpha, prior, channel, seed=None, tokens=1, dtype=np.float64, backend="numpy"):
    """Draw W* (d, k) from `prior`, X with n = round(alpha d) samples, y ~ P_out(. | X W* / sqrt(d)).

    dtype : float64 or float32 (NumPy-style, a string, or the backend's own dtype).
    backend : 'numpy', 'cupy' or 'torch': every array is drawn there, on its default device.
    """
    d = check_count("d", d, minimum=1)
    alpha = check_positive("alpha", alpha)
    tokens = check_count("tokens", tokens, minimum=1)
    check_compatible(prior, channel, tokens)
    xp = backend_namespace(backend)
    dtype = _resolve_dtype(xp, dtype)
    n = max(1, round(alpha * d))
    rng = RNG(seed, xp)
    W = xp.astype(xp.asarray(prior.sample(d, rng)), dtype)
    if tuple(W.shape) != (d, prior.k):
        raise ValueError(f"prior.sample returned shape {tuple(W.shape)}, expected (d, k) = {(d, prior.k)}")
    X = rng.normal((n, d) if tokens == 1 else (n, tokens, d), dtype=dtype)
    Z = X @ W / math.sqrt(d)
    Z = Z[:, None, :] if tokens == 1 else Z
    y = xp.astype(channel.sample(Z, rng), dtype)
    return Instance(X=X, y=y, W=W, alpha=alpha, prior=prior, channel=channel, seed=seed)
