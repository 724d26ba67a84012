"""Bayes output denoisers (channels) for scalar labels, L = k = 1.

Each channel gives log Z_out(y, omega, V) = log ∫ dz N(z; omega, V) P_out(y | z) and
    g = d log Z_out / d omega = (E[z | y] - omega) / V,
    dg = d g / d omega = (Var[z | y] - V) / V^2,
in log domain (log_ndtr, logsumexp), finite for |omega| / sqrt(V) far in the tails.
"""
import math

import array_api_compat as aac
import numpy as np

from amp.backend import LOG_SQRT_2PI, namespace, ndtr
from denoisers.base import OutputDenoiser, check_variance
from denoisers.quadrature import gauss_hermite
from denoisers.truncated import truncated_mixture

INF = math.inf


def _where(cond, a, b, like):
    """xp.where(cond, a, b) for Python scalars a, b, in the dtype and device of `like`
    (np.where and torch.where would give the default float dtype instead)."""
    xp = namespace(like)
    const = lambda v: xp.asarray(v, dtype=like.dtype, device=aac.device(like))  # noqa: E731
    return xp.where(cond, const(a), const(b))


class ScalarChannel(OutputDenoiser):
    """A channel y = f(z) + sqrt(noise_var) eta on one pre-activation, L = k = 1.

    Subclasses give `_posterior(y, omega, V) -> (log_z, g, dg)` on (n,) arrays and the
    deterministic map `_f(z)`; this class adapts the (n, L, k) shapes of the protocol.
    """

    def __init__(self, noise_var=0.0):
        self.noise_var = check_variance("noise_var", noise_var, allow_zero=True)

    def __repr__(self):
        return f"{type(self).__name__}(noise_var={self.noise_var})"

    def _posterior(self, y, omega, V):
        raise NotImplementedError

    def _own_kernel(self, owner, kernel, params):
        """(kernel, params) for `scalar_kernel`, or None when a subclass of `owner` changed its math."""
        return (kernel, params) if type(self)._posterior is owner._posterior else None

    def _f(self, z):
        raise NotImplementedError

    def g_out(self, y, Omega, V):
        """g (n, 1, 1) and dg (n, 1, 1, 1, 1) for y (n,), Omega (n, 1, 1), V (1, 1)."""
        _, g, dg = self._posterior(y, Omega[:, 0, 0], V[0, 0])
        return g[:, None, None], dg[:, None, None, None, None]

    def log_z_out(self, y, Omega, V):
        """log Z_out (n,) for y (n,), Omega (n, 1, 1), V (1, 1)."""
        return self._posterior(y, Omega[:, 0, 0], V[0, 0])[0]

    def posterior(self, y, Omega, V):
        """log Z_out (n,), g (n, 1, 1), dg (n, 1, 1, 1, 1) from one `_posterior`."""
        log_z, g, dg = self._posterior(y, Omega[:, 0, 0], V[0, 0])
        return log_z, g[:, None, None], dg[:, None, None, None, None]

    def sample(self, Z, rng):
        """y = f(z) + sqrt(noise_var) eta, shape (n,), for Z (n, 1, 1)."""
        z = Z[:, 0, 0]
        y = self._f(z)
        if self.noise_var > 0.0:
            y = y + math.sqrt(self.noise_var) * rng.normal(z.shape, dtype=z.dtype)
        return y

    def label_quadrature(self, Z, n_nodes):
        """Exact rule for y | z: f(z) plus Gauss-Hermite nodes of the label noise."""
        fz = self._f(Z[:, 0, 0])
        if self.noise_var == 0.0:
            return fz[None], np.ones((1, fz.shape[0]))
        x, h = gauss_hermite(n_nodes)
        ys = fz[None] + math.sqrt(self.noise_var) * x[:, None]
        return ys, np.broadcast_to(h[:, None], ys.shape)


def _check_sign_labels(y, name):
    xp = namespace(y)
    if not bool(xp.all((y == 1.0) | (y == -1.0))):
        raise ValueError(f"{name} labels y must be -1 or +1")


def _check_nonnegative_labels(channel, y, name):
    OutputDenoiser.check_labels(channel, y)
    xp = namespace(y)
    if channel.noise_var == 0.0 and not bool(xp.all(y >= 0.0)):
        raise ValueError(f"{name} labels y must be >= 0 when noise_var = 0")


class Linear(ScalarChannel):
    """Additive white Gaussian noise y = z + sqrt(noise_var) eta.

    Z_out = N(y; omega, V + noise_var): g = (y - omega) / (V + noise_var), dg = -1 / (V + noise_var).
    """

    def __init__(self, noise_var):
        super().__init__(noise_var)

    def _f(self, z):
        return z

    def _posterior(self, y, omega, V):
        xp = namespace(omega)
        s = V + self.noise_var
        log_z = -0.5 * (y - omega) ** 2 / s - 0.5 * xp.log(s) - LOG_SQRT_2PI
        g = (y - omega) / s
        return log_z, g, xp.broadcast_to(-1.0 / s, g.shape)

    def scalar_kernel(self):
        """`denoisers.kernels.linear` with params [noise_var]."""
        from denoisers import kernels
        return self._own_kernel(Linear, kernels.linear, np.array([self.noise_var]))


class Sign(ScalarChannel):
    """y = sign(z + sqrt(noise_var) eta): the perceptron, probit when noise_var > 0.

    Z_out = Phi(y omega / sqrt(V + noise_var)); the posterior of z + noise is N(omega, V + noise_var)
    restricted to the half-line of sign y.
    """

    kinks = (0.0,)
    labels = (-1.0, 1.0)


    def _f(self, z):
        return _where(z >= 0.0, 1.0, -1.0, z)

    def sample(self, Z, rng):
        z = Z[:, 0, 0]
        if self.noise_var > 0.0:
            z = z + math.sqrt(self.noise_var) * rng.normal(z.shape, dtype=z.dtype)
        return self._f(z)

    def label_quadrature(self, Z, n_nodes):
        z = Z[:, 0, 0]
        if self.noise_var == 0.0:
            return self._f(z)[None], np.ones((1, z.shape[0]))
        p_plus = ndtr(z / math.sqrt(self.noise_var))
        ys = np.stack([-np.ones_like(z), np.ones_like(z)])
        return ys, np.stack([1.0 - p_plus, p_plus])

    def check_labels(self, y):
        _check_sign_labels(y, "Sign")

    def _posterior(self, y, omega, V):
        s = V + self.noise_var
        positive = y > 0.0
        lo = _where(positive, 0.0, -INF, omega)
        hi = _where(positive, INF, 0.0, omega)
        return truncated_mixture(omega, s, [(0.0, omega, s, lo, hi)])

    def scalar_kernel(self):
        """`denoisers.kernels.sign` with params [noise_var]."""
        from denoisers import kernels
        return self._own_kernel(Sign, kernels.sign, np.array([self.noise_var]))


class ReLU(ScalarChannel):
    """y = max(z, 0) + sqrt(noise_var) eta.

    noise_var = 0: Z_out = Phi(-omega / sqrt(V)) at y = 0 and N(y; omega, V) at y > 0.
    noise_var > 0: Z_out = N(y; 0, noise_var) Phi(-omega / sqrt(V)) + N(y; omega, V + noise_var) Phi(mu / sigma),
    the posterior of z a mixture of N(omega, V) on z < 0 and N(mu, sigma^2) on z > 0,
    mu = (y V + omega noise_var) / (V + noise_var), sigma^2 = V noise_var / (V + noise_var).
    """

    kinks = (0.0,)


    def _f(self, z):
        xp = namespace(z)
        return xp.where(z > 0.0, z, 0.0)

    def check_labels(self, y):
        _check_nonnegative_labels(self, y, "ReLU")

    def scalar_kernel(self):
        """`denoisers.kernels.relu` when noise_var = 0, else None."""
        from denoisers import kernels
        return self._own_kernel(ReLU, kernels.relu, np.zeros(0)) if self.noise_var == 0.0 else None

    def _posterior(self, y, omega, V):
        xp = namespace(omega)
        D = self.noise_var
        if D == 0.0:
            log_z0, g0, dg0 = truncated_mixture(omega, V, [(0.0, omega, V, -INF, 0.0)])
            on = y > 0.0
            log_z = xp.where(on, -0.5 * (y - omega) ** 2 / V - 0.5 * xp.log(V) - LOG_SQRT_2PI, log_z0)
            return log_z, xp.where(on, (y - omega) / V, g0), xp.where(on, -1.0 / V, dg0)
        s = V + D
        mu = (y * V + omega * D) / s
        sigma2 = V * D / s
        return truncated_mixture(omega, V, [
            (-0.5 * y * y / D - 0.5 * math.log(D) - LOG_SQRT_2PI, omega, V, -INF, 0.0),
            (-0.5 * (y - omega) ** 2 / s - 0.5 * xp.log(s) - LOG_SQRT_2PI, mu, sigma2, 0.0, INF),
        ])


class Abs(ScalarChannel):
    """Real phase retrieval y = |z| + sqrt(noise_var) eta.

    noise_var = 0: Z_out = N(y; omega, V) + N(-y; omega, V), the posterior of z on {y, -y}:
    g = (y tanh(y omega / V) - omega) / V, dg = (y^2 sech^2(y omega / V) - V) / V^2.
    noise_var > 0: the posterior is a mixture of N(mu_+, sigma^2) on z > 0 and N(mu_-, sigma^2) on
    z < 0, mu_+- = (+-y V + omega noise_var) / (V + noise_var), sigma^2 = V noise_var / (V + noise_var).
    """

    kinks = (0.0,)


    def _f(self, z):
        return namespace(z).abs(z)

    def check_labels(self, y):
        _check_nonnegative_labels(self, y, "Abs")

    def scalar_kernel(self):
        """`denoisers.kernels.abs_value` when noise_var = 0, else None."""
        from denoisers import kernels
        return self._own_kernel(Abs, kernels.abs_value, np.zeros(0)) if self.noise_var == 0.0 else None

    def _posterior(self, y, omega, V):
        xp = namespace(omega)
        D = self.noise_var
        if D == 0.0:
            x = y * omega / V
            ax = xp.abs(x)
            e = xp.exp(-2.0 * ax)
            log_z = -0.5 * (y * y + omega * omega) / V - 0.5 * xp.log(V) - LOG_SQRT_2PI + ax + xp.log1p(e)
            sech2 = 4.0 * e / (1.0 + e) ** 2
            return log_z, (y * xp.tanh(x) - omega) / V, (y * y * sech2 - V) / (V * V)
        s = V + D
        sigma2 = V * D / s
        log_c = lambda label: -0.5 * (label - omega) ** 2 / s - 0.5 * xp.log(s) - LOG_SQRT_2PI  # noqa: E731
        return truncated_mixture(omega, V, [
            (log_c(y), (y * V + omega * D) / s, sigma2, 0.0, INF),
            (log_c(-y), (-y * V + omega * D) / s, sigma2, -INF, 0.0),
        ])


class Door(ScalarChannel):
    """Symmetric door y = sign(|z| - width), noiseless.

    Z_out(+1) = Phi((omega - K) / sqrt(V)) + Phi((-omega - K) / sqrt(V)),
    Z_out(-1) = Phi((K - omega) / sqrt(V)) - Phi((-K - omega) / sqrt(V)), K = width;
    the posterior of z is N(omega, V) restricted to the region of label y.
    """

    labels = (-1.0, 1.0)

    def __init__(self, width):
        width = float(width)
        if not (math.isfinite(width) and width > 0.0):
            raise ValueError(f"width must be a finite number > 0, got {width}")
        super().__init__(0.0)
        self.width = width
        self.kinks = (-width, width)

    def __repr__(self):
        return f"Door(width={self.width})"

    def _f(self, z):
        return _where(namespace(z).abs(z) > self.width, 1.0, -1.0, z)

    def check_labels(self, y):
        _check_sign_labels(y, "Door")

    def _posterior(self, y, omega, V):
        K = self.width
        outside = y > 0.0
        return truncated_mixture(omega, V, [
            (0.0, omega, V, _where(outside, K, -K, omega), _where(outside, INF, K, omega)),
            (_where(outside, 0.0, -INF, omega), omega, V, -INF, -K),
        ])
