"""Result of an iteration: the estimate and its per-iteration history."""
from dataclasses import dataclass, field


@dataclass
class IterationResult:
    """Estimate and history of an AMP-type iteration or of its state evolution.

    W : (d, k) estimate (None for a state evolution); C : (k, k) mean posterior covariance.
    history : dict of per-iteration lists, entry 0 the initial state; order parameters are
    floats when k = 1 and (k, k) NumPy arrays otherwise.
    converged : the residual fell below tol; diverged : the iteration blew up and was stopped
    (W is then the last finite iterate); message says which and when.
    """

    W: object = None
    C: object = None
    history: dict = field(default_factory=dict)
    n_iter: int = 0
    converged: bool = False
    diverged: bool = False
    message: str = ""

    def reached_tol(self, t, residual, tol):
        """Record iteration t + 1; True, with the message, once residual < tol (converged)."""
        self.n_iter = t + 1
        if residual < tol:
            self.converged = True
            self.message = f"converged at iteration {t + 1} (residual {residual:.3g} < tol {tol:g})"
        return self.converged
