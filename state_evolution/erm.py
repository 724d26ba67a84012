"""General state evolution of GAMP, mismatched or ERM, k = L = 1 (DESIGN.md section 4).

The teacher draws w* ~ P_in^teacher (rho = E[w*^2]) and y ~ P_out^teacher(. | z); the student is
any input denoiser (a penalty, or a prior) and any output denoiser (a loss, or a channel). Order
parameters of `amp.gamp` at iteration t: m = What^T W* / d, q = What^T What / d, V = mean Chat.
Output side, with xi, zeta ~ N(0, 1) and the student's g, dg = g_out(y, omega, V):
    omega = sqrt(q) xi,   z = (m / sqrt(q)) xi + sqrt(V0) zeta,   V0 = rho - m^2 / q,   y ~ P_out^teacher(. | z),
    q_hat = alpha E[g^2],   V_hat = -alpha E[dg],
    m_hat = alpha E[g (z - omega0)] / V0 = alpha E[g g*],   omega0 = (m / sqrt(q)) xi = (m / q) omega,
where g* = g_out^teacher(y, omega0, V0) = E[z - omega0 | y, omega0] / V0 (the Stein form integrated
over z given y). Input side, B = m_hat w* + sqrt(q_hat) xi, w* ~ P_in^teacher:
    m = E[f_in(B, V_hat) w*],   q = E[f_in(B, V_hat)^2],   V = E[Chat(B, V_hat)] = E[f_in xi] / sqrt(q_hat)
(the last by Stein's lemma, Chat = d f_in / d B).
(Aubin et al. 2020, Loureiro et al. 2021.) On a fresh input the teacher's z and the student's
pre-activation lambda = x . What / sqrt(d) are jointly Gaussian with covariance [[rho, m], [m, q]]:
lambda has the law of omega above, so the test error integrates over the same points. At a fixed
point with a loss, the training pre-activations are p = prox_{V loss(y, .)}(omega).
Student = teacher gives m = q, V = rho - q, m_hat = q_hat = V_hat: the Nishimori SE of
`state_evolution.gamp`.
"""
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from amp.results import IterationResult
from amp.validation import check_compatible, check_count, check_positive, check_unit_interval
from state_evolution.bayes_optimal import bayes_optimal
from state_evolution.gamp import MIN_VARIANCE_FRACTION
from state_evolution.integrate import Nodes, input_expectation, output_expectation

KEYS = ("m", "q", "V", "m_hat", "q_hat", "V_hat", "mse", "test_error", "train_loss", "norm", "residual")
#: log(lam) tolerance of the refinement of the optimal regularisation in `erm_curve`
LOG_LAM_TOL = 1e-5


class ERMResult(IterationResult):
    """IterationResult of `erm`; `final` maps each history key to its last entry (the fixed point
    when `converged`)."""

    @property
    def final(self):
        return {key: values[-1] for key, values in self.history.items()}


def initial_overlaps(student_prior, teacher_prior, init_overlap):
    """(m^0, q^0, V^0) of `amp.gamp`'s start (`amp.gamp.initial_state`) at eps = init_overlap.

    What^0 = mu + eps (w* - mu) + sqrt(eps (1 - eps)) sigma xi with the student's mu = mean() and
    sigma^2 = second_moment() - mu^2, and the teacher's mu* = E[w*], rho = E[w*^2]:
        m^0 = mu mu* + eps (rho - mu mu*),   V^0 = (1 - eps) sigma^2,
        q^0 = (1 - eps)^2 mu^2 + 2 eps (1 - eps) mu mu* + eps^2 rho + eps (1 - eps) sigma^2.
    """
    eps = init_overlap
    mu = float(student_prior.mean()[0])
    var = float(student_prior.second_moment()[0, 0]) - mu * mu
    mu_t, rho = float(teacher_prior.mean()[0]), float(teacher_prior.second_moment()[0, 0])
    m = mu * mu_t + eps * (rho - mu * mu_t)
    q = (1 - eps) ** 2 * mu * mu + 2 * eps * (1 - eps) * mu * mu_t + eps * eps * rho + eps * (1 - eps) * var
    return m, q, (1 - eps) * var


class _WithKinks:
    """The teacher channel with extra kinks for the panels of `output_expectation` (which grades
    its omega panels towards the channel's kinks): every other attribute is the channel's."""

    def __init__(self, channel, kinks):
        self._channel = channel
        self.kinks = tuple(sorted(set(channel.kinks) | set(kinks)))

    def __getattr__(self, name):
        return getattr(self._channel, name)


def output_side(teacher_channel, loss, alpha, m, q, V, rho, nodes=Nodes()):
    """(m_hat, q_hat, V_hat, test_error, train_loss) at the order parameters (m, q, V).

    test_error : P(sign(lambda) != y) when the teacher's labels are -1, +1, else E[(y - lambda)^2];
    train_loss : E[loss(y, prox_{V loss(y, .)}(omega))], NaN for a student without a `loss`.
    """
    V0 = max(rho - m * m / q, MIN_VARIANCE_FRACTION * rho)
    ratio = m / q
    Vm, V0m = np.array([[V]]), np.array([[V0]])
    classify = tuple(teacher_channel.labels or ()) == (-1.0, 1.0)
    has_loss = callable(getattr(loss, "loss", None))

    def fn(y, Omega):
        g, dg = loss.g_out(y, Omega, Vm)
        g, dg = g[:, 0, 0], dg[:, 0, 0, 0, 0]
        g_star = teacher_channel.g_out(y, ratio * Omega, V0m)[0][:, 0, 0]
        omega = Omega[:, 0, 0]
        error = (y * omega < 0.0).astype(float) if classify else (y - omega) ** 2
        train = loss.loss(y, loss.prox(y, Omega, Vm)) if has_loss else np.full_like(omega, np.nan)
        return g * g, dg, g * g_star, error, train

    # the student's g varies on the scale sqrt(V) in omega, the teacher's g* on sqrt(V0) in
    # omega0 = (m/q) omega, i.e. on sqrt(V0) q/|m| in omega: grade the panels to the finer one;
    # panel edges also at the student's kinks in omega and at omega = 0 (the sign of lambda)
    scale = min(V, V0 * ratio ** -2) if m != 0.0 else V
    kinks = (tuple(loss.omega_kinks(V)) if hasattr(loss, "omega_kinks") else ()) + ((0.0,) if classify else ())
    g2, dg, gg, error, train = output_expectation(_WithKinks(teacher_channel, kinks), fn, math.sqrt(q),
                                                  m / math.sqrt(q), math.sqrt(V0), scale, nodes)
    return alpha * float(gg), alpha * float(g2), -alpha * float(dg), float(error), float(train)


def input_side(teacher_prior, penalty, m_hat, q_hat, V_hat, nodes=Nodes()):
    """(m, q, V) = E[f_in w*], E[f_in^2], E[Chat] at B = m_hat w* + sqrt(q_hat) xi, A = V_hat.

    V by Stein's lemma in xi, E[d f_in / d B] = E[f_in xi] / sqrt(q_hat) = E[f_in (B - m_hat w*)] / q_hat:
    f_in is continuous where Chat may jump (the soft threshold of L1), which the adaptive rule of
    `input_expectation` resolves far more reliably.
    """
    A = np.array([[V_hat]])

    def fn(B, w):
        What = penalty.f_in(B, A)[0][:, 0]
        return What * w[:, 0], What ** 2, What * (B[:, 0] - m_hat * w[:, 0])

    m, q, stein = input_expectation(teacher_prior, fn, m_hat, q_hat, nodes)
    return float(m), float(q), float(stein) / q_hat


def _check_scalar_pair(student_prior, student_channel, teacher_prior, teacher_channel):
    check_compatible(student_prior, student_channel, student_channel.tokens)
    check_compatible(teacher_prior, teacher_channel, teacher_channel.tokens)
    if not (student_prior.k == teacher_prior.k == 1 and student_channel.tokens == teacher_channel.tokens == 1):
        raise ValueError("state_evolution.erm handles k = L = 1 denoisers")


def erm(teacher_prior, teacher_channel, penalty, loss, alpha, max_iter=500, tol=1e-10, damping=1.0,
        init_overlap=0.01, start=None, nodes=Nodes()):
    """Iterate the general SE of `amp.gamp(X, y, penalty, loss)` on data of the teacher
    (teacher_prior, teacher_channel) at sample ratio alpha.

    penalty, loss : the student's input and output denoisers (ERM penalty and loss, or Bayes prior
    and channel). damping : eta in (0, 1], (m, q, V) <- (1 - eta) (m, q, V) + eta (new); like in
    `state_evolution.gamp`, it keeps the fixed points, not damped GAMP's trajectory.
    init_overlap : GAMP's normalised initial overlap (`initial_overlaps`); start : optional
    (m, q, V) to start from instead (e.g. a nearby fixed point).
    Returns an ERMResult whose history has lists `m`, `q`, `V` and, computed from them,
    `m_hat`, `q_hat`, `V_hat`, `mse` = rho - 2 m + q, `test_error`, `train_loss` (see
    `output_side`), `norm` = q, and `residual` = max |change of m, q, V| / max(|m|, q, V) (inf at
    entry 0). Entry t pairs with entry t of the GAMP run. Stops when the residual is below tol.
    """
    alpha = check_positive("alpha", alpha)
    max_iter = check_count("max_iter", max_iter)
    if not float(tol) >= 0.0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    damping = check_unit_interval("damping", damping, open_left=True)
    init_overlap = check_unit_interval("init_overlap", init_overlap)
    _check_scalar_pair(penalty, loss, teacher_prior, teacher_channel)
    rho = float(teacher_prior.second_moment()[0, 0])
    m, q, V = initial_overlaps(penalty, teacher_prior, init_overlap) if start is None else map(float, start)
    if not (q > 0.0 and V >= 0.0):
        raise ValueError(f"the start needs q > 0 and V >= 0, got q = {q}, V = {V}")
    history = {key: [] for key in KEYS}
    result = ERMResult(history=history)

    def record(m, q, V, residual):
        m_hat, q_hat, V_hat, error, train = output_side(teacher_channel, loss, alpha, m, q, V, rho, nodes)
        values = (m, q, V, m_hat, q_hat, V_hat, rho - 2.0 * m + q, error, train, q, residual)
        for key, value in zip(KEYS, values):
            history[key].append(value)
        return m_hat, q_hat, V_hat

    hats = record(m, q, V, math.inf)
    for t in range(max_iter):
        new = input_side(teacher_prior, penalty, *hats, nodes)
        if not all(map(math.isfinite, new + hats)) or new[1] <= 0.0:
            result.diverged = True
            result.message = f"state evolution left the domain (NaN/Inf or q <= 0) at iteration {t + 1}"
            break
        m_new, q_new, V_new = ((1.0 - damping) * old + damping * x for old, x in zip((m, q, V), new))
        residual = max(abs(m_new - m), abs(q_new - q), abs(V_new - V)) / max(abs(m_new), q_new, V_new)
        m, q, V = m_new, q_new, V_new
        hats = record(m, q, V, residual)
        if result.reached_tol(t, residual, tol):
            break
    else:
        result.message = f"reached max_iter = {max_iter} (residual {history['residual'][-1]:.3g})"
    return result


class _OutsideDomain(Exception):
    """A trial point of the root finder with q <= 0 or V < 0."""


def fixed_point(teacher_prior, teacher_channel, penalty, loss, alpha, start, tol=1e-12, nodes=Nodes()):
    """The SE fixed point x = F(x), x = (m, q, V), near `start`, by Powell's hybrid method
    (`scipy.optimize.root`, relative xtol = tol) on F(x) - x, F one iteration of `erm`.

    It takes 10 to 20 evaluations of F where iterating F contracts slowly (hundreds of iterations,
    e.g. the hinge loss at small lam). Returns the ERMResult of `erm` at the root (one history
    entry), `converged` when the root was found inside q > 0, V >= 0.
    """
    alpha = check_positive("alpha", alpha)
    _check_scalar_pair(penalty, loss, teacher_prior, teacher_channel)
    rho = float(teacher_prior.second_moment()[0, 0])

    def residual(x):
        m, q, V = x
        if not (q > 0.0 and V >= 0.0):
            raise _OutsideDomain
        m_hat, q_hat, V_hat, _, _ = output_side(teacher_channel, loss, alpha, m, q, V, rho, nodes)
        return np.array(input_side(teacher_prior, penalty, m_hat, q_hat, V_hat, nodes)) - x

    try:
        root = optimize.root(residual, np.asarray(start, dtype=float), method="hybr",
                             options={"xtol": tol, "factor": 0.1})
        found = root.success and root.x[1] > 0.0 and root.x[2] >= 0.0
    except _OutsideDomain:
        found = False
    result = erm(teacher_prior, teacher_channel, penalty, loss, alpha, max_iter=0, start=root.x if found else start,
                 nodes=nodes)
    result.converged = found
    result.message = (f"root found in {root.nfev} evaluations" if found else
                      "no root found from the start; the history holds the start")
    return result


@dataclass
class ERMCurve:
    """SE of ERM over sample ratios and regularisations, next to the Bayes-optimal errors.

    test_error, mse, train_loss : (n_alphas, n_lams) at the SE fixed points on the grid `lams`;
    best_lam, best_test_error, best_mse : (n_alphas,) at the regularisation minimising the test
    error (grid minimum refined by bounded Brent in log lam, to lam_tol);
    bayes : `state_evolution.bayes_optimal` of the teacher (bayes.gen_error, bayes.mse);
    notes : optima on the edge of the grid, fixed points not reached.
    """

    alphas: np.ndarray
    lams: np.ndarray
    test_error: np.ndarray
    mse: np.ndarray
    train_loss: np.ndarray
    best_lam: np.ndarray
    best_test_error: np.ndarray
    best_mse: np.ndarray
    bayes: object
    notes: list = field(default_factory=list)


def erm_curve(teacher_prior, teacher_channel, penalty_family, loss, alphas, lams, max_iter=2000, tol=1e-11,
              damping=1.0, lam_tol=LOG_LAM_TOL, nodes=Nodes()):
    """ERM test error against alpha at each lam of `lams` and at the lam minimising it, with the
    Bayes-optimal curve of the teacher.

    penalty_family : callable lam -> input denoiser (e.g. `denoisers.L2`); loss : output denoiser;
    alphas : increasing (n_alphas >= 2,) sample ratios; lams : increasing (n_lams >= 2,) positive
    regularisations; lam_tol : tolerance of the refinement in log lam. Each fixed point is found by
    `fixed_point` from the last one at the same alpha (warm start); the first one at each alpha, and
    any that `fixed_point` misses, by iterating `erm` (max_iter, tol, damping) from there.
    Returns an ERMCurve.
    """
    alphas, lams = (np.asarray(a, dtype=float) for a in (alphas, lams))
    if lams.ndim != 1 or lams.size < 2 or not (np.all(np.diff(lams) > 0) and lams[0] > 0):
        raise ValueError("lams must be an increasing 1-d array of at least two positive regularisations")
    bayes = bayes_optimal(teacher_prior, teacher_channel, alphas, nodes)
    shape = (alphas.size, lams.size)
    test_error, mse, train_loss = np.empty(shape), np.empty(shape), np.empty(shape)
    best = np.empty((3, alphas.size))
    notes = []

    def solve(alpha, lam, start):
        penalty = penalty_family(lam)
        run = None if start is None else fixed_point(teacher_prior, teacher_channel, penalty, loss, alpha, start,
                                                     nodes=nodes)
        if run is None or not run.converged:
            run = erm(teacher_prior, teacher_channel, penalty, loss, alpha, max_iter=max_iter, tol=tol,
                      damping=damping, start=start, nodes=nodes)
        if not run.converged:
            notes.append(f"alpha = {alpha:g}, lam = {lam:g}: {run.message}")
        fixed = run.final
        return fixed, (fixed["m"], fixed["q"], fixed["V"])

    def refine(alpha, bounds, start):
        """The lam in exp(bounds) minimising the test error (bounded Brent in log lam) and its fixed point."""
        latest = [start]

        def objective(log_lam):
            fixed, latest[0] = solve(alpha, math.exp(log_lam), latest[0])
            return fixed["test_error"]

        lam = math.exp(optimize.minimize_scalar(objective, bounds=bounds, method="bounded",
                                                options={"xatol": lam_tol}).x)
        return lam, solve(alpha, lam, latest[0])[0]

    for i, alpha in enumerate(alphas):
        starts, start = [], None
        for j, lam in enumerate(lams):
            fixed, start = solve(alpha, lam, start)
            starts.append(start)
            test_error[i, j], mse[i, j], train_loss[i, j] = fixed["test_error"], fixed["mse"], fixed["train_loss"]
        j = int(np.argmin(test_error[i]))
        if j in (0, lams.size - 1):
            notes.append(f"alpha = {alpha:g}: the best lam is at the edge of the grid, lam = {lams[j]:g}")
        bounds = (math.log(lams[max(j - 1, 0)]), math.log(lams[min(j + 1, lams.size - 1)]))
        lam, fixed = refine(alpha, bounds, starts[j])
        best[:, i] = lam, fixed["test_error"], fixed["mse"]
    return ERMCurve(alphas=alphas, lams=lams, test_error=test_error, mse=mse, train_loss=train_loss,
                    best_lam=best[0], best_test_error=best[1], best_mse=best[2], bayes=bayes, notes=notes)
