"""Array backend: the namespace of the caller's arrays, special functions, random numbers.

Iterations, denoisers and state evolution never call NumPy on user data: they ask
`namespace(*arrays)` for the array-API namespace of their inputs and the functions
below for what the array API standard lacks (the Gaussian CDF family).
"""
import math

import array_api_compat as aac
import numpy as np

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def namespace(*arrays):
    """Array-API namespace shared by `arrays` (NumPy, CuPy, PyTorch, ...)."""
    return aac.array_namespace(*arrays)


def backend_namespace(name):
    """Namespace for a backend name: 'numpy', 'cupy' or 'torch'."""
    if name == "numpy":
        return aac.array_namespace(np.empty(0))
    if name == "cupy":
        try:
            import cupy
        except ImportError as err:
            raise ImportError("backend='cupy' needs CuPy: pip install 'amp-toolkit[gpu]'") from err
        return aac.array_namespace(cupy.empty(0))
    if name == "torch":
        import torch
        return aac.array_namespace(torch.empty(0))
    raise ValueError(f"backend must be 'numpy', 'cupy' or 'torch', got {name!r}")


def _special_module(xp):
    if aac.is_numpy_namespace(xp):
        import scipy.special
        return scipy.special
    if aac.is_cupy_namespace(xp):
        import cupyx.scipy.special
        return cupyx.scipy.special
    if aac.is_torch_namespace(xp):
        import torch
        return torch.special
    raise TypeError(f"no Gaussian special functions known for the namespace {xp.__name__}")


def log_ndtr(x):
    """log Phi(x), accurate in both tails."""
    return _special_module(namespace(x)).log_ndtr(x)


def ndtr(x):
    """Phi(x), the standard normal CDF, accurate in relative terms in the lower tail."""
    xp = namespace(x)
    if aac.is_torch_namespace(xp):
        # torch.special.ndtr is (1 + erf(x / sqrt 2)) / 2, which cancels to 0 below x ~ -8;
        # erfc keeps the lower tail's relative accuracy.
        import torch
        return 0.5 * torch.special.erfc(x * (-1.0 / math.sqrt(2.0)))
    return _special_module(xp).ndtr(x)


def log_npdf(x):
    """log N(x; 0, 1)."""
    return -0.5 * x * x - LOG_SQRT_2PI


def log1mexp(x):
    """log(1 - exp(x)) for x <= 0, accurate near 0 and far below it."""
    xp = namespace(x)
    near = x > -math.log(2.0)
    x_near = xp.where(near, x, -1.0)
    x_far = xp.where(near, -1.0, x)
    return xp.where(near, xp.log(-xp.expm1(x_near)), xp.log1p(-xp.exp(x_far)))


def log_diff_ndtr(a, b):
    """log(Phi(b) - Phi(a)) for a < b, without cancellation in either tail."""
    xp = namespace(a, b)
    upper = (a + b) > 0  # mass mostly in the upper tail: use Phi(-a) - Phi(-b)
    hi = xp.where(upper, -a, b)
    lo = xp.where(upper, -b, a)
    log_hi = log_ndtr(hi)
    return log_hi + log1mexp(log_ndtr(lo) - log_hi)


def logsumexp(a, axis):
    """log sum exp(a) along `axis`; rows that are all -inf give -inf."""
    xp = namespace(a)
    a_max = xp.max(a, axis=axis, keepdims=True)
    a_max = xp.where(xp.isfinite(a_max), a_max, 0.0)
    out = xp.log(xp.sum(xp.exp(a - a_max), axis=axis, keepdims=True)) + a_max
    return xp.squeeze(out, axis=axis)


def softmax(a, axis):
    """exp(a) / sum exp(a) along `axis`, formed as e / sum(e) with e = exp(a - max a): it sums to 1
    to rounding even for huge |a| (exp(a - logsumexp(a)) inherits the rounding of the logs,
    a relative error eps |a| in each weight)."""
    xp = namespace(a)
    a_max = xp.max(a, axis=axis, keepdims=True)
    e = xp.exp(a - xp.where(xp.isfinite(a_max), a_max, 0.0))
    return e / xp.sum(e, axis=axis, keepdims=True)


def to_float(x):
    """A 0-d array (any device) as a Python float: one small host transfer."""
    return float(x)


def to_numpy(x):
    """Any array as a NumPy array on the host."""
    if aac.is_cupy_array(x):
        return x.get()
    if aac.is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class RNG:
    """Random numbers in a given namespace, dtype and device.

    Built on NumPy's Generator for NumPy, CuPy's for CuPy, torch.Generator for PyTorch,
    so that draws are made where the arrays live.
    """

    def __init__(self, seed=None, xp=None, device=None):
        self.xp = backend_namespace("numpy") if xp is None else xp
        self.device = device
        if aac.is_cupy_namespace(self.xp):
            import cupy
            self._gen = cupy.random.default_rng(seed)
        elif aac.is_torch_namespace(self.xp):
            import torch
            self._gen = torch.Generator(device=device or "cpu")
            self._gen.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
        else:
            self._gen = np.random.default_rng(seed)

    def normal(self, shape, dtype=None):
        """Standard normal draws of `shape`."""
        dtype = self.xp.float64 if dtype is None else dtype
        if aac.is_torch_namespace(self.xp):
            import torch
            return torch.randn(shape, generator=self._gen, dtype=dtype, device=self.device)
        return self._gen.standard_normal(shape, dtype=dtype)

    def uniform(self, shape, dtype=None):
        """Uniform draws on [0, 1) of `shape`."""
        dtype = self.xp.float64 if dtype is None else dtype
        if aac.is_torch_namespace(self.xp):
            import torch
            return torch.rand(shape, generator=self._gen, dtype=dtype, device=self.device)
        return self._gen.random(shape, dtype=dtype)
