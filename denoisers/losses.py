"""ERM output denoisers (losses) on one pre-activation, L = k = 1.

GAMP with a loss l minimises sum_mu l(y_mu, x_mu . w / sqrt(d)) + sum_i r(w_i). Its output
denoiser is the Moreau-envelope derivative of V l(y, .): with the proximal map
    p = prox_{V l(y, .)}(omega) = argmin_z l(y, z) + (z - omega)^2 / (2 V),
    g = (p - omega) / V = -l'(y, p),
    dg = d g / d omega = (dp/domega - 1) / V = -l''(y, p) / (1 + V l''(y, p)),
by the implicit-function theorem on p - omega + V l'(y, p) = 0 (piecewise where l has kinks).
Labels come from a teacher channel: a loss draws none (`sample` is not implemented).
"""

from amp.backend import namespace
from denoisers.base import OutputDenoiser
from denoisers.channels import _check_sign_labels

#: cap on the Newton iterations of the logistic proximal map (monotone, then quadratic convergence:
#: machine precision within 15 steps for |omega| <= 1e3 and 1e-6 <= V <= 1e6)
MAX_NEWTON = 100


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow for either sign of x."""
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


class ScalarLoss(OutputDenoiser):
    """A loss l(y, z) on one pre-activation, L = k = 1, as an output denoiser of `amp.gamp`.

    Subclasses give `loss(y, z)` and `_prox(y, omega, V) -> (p, g, dg)` on (n,) arrays, each in a
    form without cancellation (g not as (p - omega) / V, p not as omega + V g).
    """

    def __repr__(self):
        return f"{type(self).__name__}()"

    def loss(self, y, z):
        """l(y, z) elementwise, shape (n,)."""
        raise NotImplementedError

    def _prox(self, y, omega, V):
        raise NotImplementedError

    def omega_kinks(self, V):
        """Values of omega where g_out(y, ., V) is not smooth for some label (for SE panels); none here."""
        return ()

    def g_out(self, y, Omega, V):
        """g (n, 1, 1) and dg (n, 1, 1, 1, 1) for y (n,), Omega (n, 1, 1), V (1, 1)."""
        _, g, dg = self._prox(y, Omega[:, 0, 0], V[0, 0])
        return g[:, None, None], dg[:, None, None, None, None]

    def prox(self, y, Omega, V):
        """p = prox_{V l(y, .)}(omega), shape (n,), for y (n,), Omega (n, 1, 1), V (1, 1)."""
        return self._prox(y, Omega[:, 0, 0], V[0, 0])[0]


class Square(ScalarLoss):
    """l(y, z) = (y - z)^2 / 2: p = (omega + V y) / (1 + V), g = (y - omega) / (1 + V), dg = -1 / (1 + V)."""

    def loss(self, y, z):
        return 0.5 * (y - z) ** 2

    def _prox(self, y, omega, V):
        g = (y - omega) / (1.0 + V)
        return (omega + V * y) / (1.0 + V), g, namespace(omega).broadcast_to(-1.0 / (1.0 + V), g.shape)


class Logistic(ScalarLoss):
    """l(y, z) = log(1 + exp(-y z)), y in {-1, +1}.

    With u = y omega, s = y p is the root of h(s) = s - u - V sigmoid(-s), increasing, in [u, u + V].
    h is convex for s < 0 and concave for s > 0, so Newton started on the side of the root where
    h h'' > 0 (from max(u, 0) when h(0) < 0, else from min(u + V, 0)) approaches it monotonically,
    without overshoot; iterates are clipped to the bracket and stop at machine precision. Then
    g = y sigmoid(-s), dg = -c / (1 + V c), c = l''(y, p) = sigmoid(s) sigmoid(-s).
    """

    labels = (-1.0, 1.0)

    def check_labels(self, y):
        _check_sign_labels(y, "Logistic")

    def loss(self, y, z):
        xp = namespace(z)
        t = -y * z
        return xp.where(t > 0.0, t, xp.zeros_like(t)) + xp.log1p(xp.exp(-xp.abs(t)))

    def _prox(self, y, omega, V):
        xp = namespace(omega)
        u = y * omega
        eps = float(xp.finfo(omega.dtype).eps)
        zero = xp.zeros_like(u)
        lo, hi = u, u + V
        root_positive = u + 0.5 * V > 0.0  # h(0) = -u - V / 2 < 0
        s = xp.where(root_positive, xp.where(u > 0.0, u, zero), xp.where(hi < 0.0, hi, zero))
        for _ in range(MAX_NEWTON):
            plus, minus = _sigmoid(s), _sigmoid(-s)
            step = (s - u - V * minus) / (1.0 + V * plus * minus)
            s = xp.clip(s - step, lo, hi)
            if bool(xp.all(xp.abs(step) <= 4.0 * eps * (1.0 + xp.abs(s)))):
                break
        plus, minus = _sigmoid(s), _sigmoid(-s)
        c = plus * minus
        return y * s, y * minus, -c / (1.0 + V * c)


class Hinge(ScalarLoss):
    """l(y, z) = max(0, 1 - y z), y in {-1, +1}.

    With u = y omega: s = y p is u (u >= 1), 1 (1 - V < u < 1) or u + V (u <= 1 - V), so
    g = y clip((1 - u) / V, 0, 1) and dg = -1/V on 1 - V < u < 1, else 0.
    """

    labels = (-1.0, 1.0)

    def check_labels(self, y):
        _check_sign_labels(y, "Hinge")

    def omega_kinks(self, V):
        """y omega = 1 and y omega = 1 - V, y = -1, +1."""
        return (-1.0, -1.0 + V, 1.0 - V, 1.0)

    def loss(self, y, z):
        xp = namespace(z)
        t = 1.0 - y * z
        return xp.where(t > 0.0, t, xp.zeros_like(t))

    def _prox(self, y, omega, V):
        xp = namespace(omega)
        u = y * omega
        margin = (u > 1.0 - V) & (u < 1.0)
        s = xp.where(u >= 1.0, u, xp.where(margin, xp.ones_like(u), u + V))
        return y * s, y * xp.clip((1.0 - u) / V, 0.0, 1.0), -xp.astype(margin, omega.dtype) / V
