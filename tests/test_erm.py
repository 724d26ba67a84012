"""Empirical risk minimisation through GAMP and its state evolution, checked against scikit-learn.

Objective convention: GAMP with a loss l and a penalty r minimises
    sum_mu l(y_mu, x_mu . w / sqrt(d)) + sum_i r(w_i),
i.e. scikit-learn's estimators on X / sqrt(d) with (n samples):
    Ridge(alpha=lam)                  for l = square, r = lam w^2 / 2   (objective x 2)
    Lasso(alpha=lam / n)              for l = square, r = lam |w|       (objective / n)
    ElasticNet(alpha=(l1 + l2) / n, l1_ratio=l1 / (l1 + l2))  for r = l1 |w| + l2 w^2 / 2  (objective / n)
    LogisticRegression(C=1 / lam)     for l = logistic, r = lam w^2 / 2 (objective / lam)
    LinearSVC(loss="hinge", C=1 / lam) for l = hinge, r = lam w^2 / 2   (objective / lam)
all with fit_intercept=False.
"""
import math

import numpy as np
import pytest
from scipy import optimize

import amp
import denoisers as dn
import state_evolution as se
from amp.backend import to_numpy
from state_evolution.erm import fixed_point, output_side
from state_evolution.integrate import Nodes

pytest.importorskip("sklearn")
from sklearn.linear_model import ElasticNet, Lasso, LogisticRegression, Ridge  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402

D = 1000


# ---------------------------------------------------------------- denoisers against their definitions

PENALTIES = {"L2": dn.L2(0.7), "L1": dn.L1(0.7), "ElasticNet": dn.ElasticNet(0.4, 0.3)}
LOSSES = {"Square": dn.Square(), "Logistic": dn.Logistic(), "Hinge": dn.Hinge()}


@pytest.mark.parametrize("name", PENALTIES)
def test_penalty_f_in_is_the_numerical_prox_and_chat_its_derivative(name):
    penalty = PENALTIES[name]
    rng = np.random.default_rng(0)
    B = 3.0 * rng.standard_normal((40, 1))
    for A_value in (0.05, 1.0, 20.0):
        A = np.array([[A_value]])
        What, Chat = penalty.f_in(B, A)
        assert What.shape == (40, 1) and Chat.shape == (40, 1, 1)
        for b, w in zip(B[:, 0], What[:, 0]):
            def objective(v):
                return penalty.penalty(np.array([v]))[0] + 0.5 * A_value * v * v - b * v

            ref = optimize.minimize_scalar(objective, bracket=(b / A_value - 1.0, b / A_value + 1.0), tol=1e-12).x
            assert objective(w) <= objective(ref) + 1e-12 * (1.0 + abs(objective(ref)))
            assert abs(w - ref) <= 1e-6 * (1.0 + abs(ref))
        # central differences in B, away from the soft threshold |B| = l1 (the derivative jumps there)
        h = 1e-6
        smooth = np.abs(np.abs(B[:, 0]) - penalty.l1) > 10 * h
        fd = (penalty.f_in(B + h, A)[0] - penalty.f_in(B - h, A)[0])[:, 0] / (2 * h)
        np.testing.assert_allclose(Chat[smooth, 0, 0], fd[smooth], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", LOSSES)
def test_loss_prox_is_the_numerical_minimiser_and_dg_the_derivative_of_g(name):
    loss = LOSSES[name]
    rng = np.random.default_rng(1)
    n = 40
    y = rng.choice([-1.0, 1.0], n)
    omega = 3.0 * rng.standard_normal(n)
    for V_value in (1e-3, 0.4, 5.0, 200.0):
        V = np.array([[V_value]])
        p = loss.prox(y, omega[:, None, None], V)
        g, dg = loss.g_out(y, omega[:, None, None], V)
        assert g.shape == (n, 1, 1) and dg.shape == (n, 1, 1, 1, 1)
        np.testing.assert_allclose(g[:, 0, 0], (p - omega) / V_value, rtol=1e-9, atol=1e-12)
        for i in range(n):
            def objective(z):
                return loss.loss(y[i:i + 1], np.array([z]))[0] + (z - omega[i]) ** 2 / (2 * V_value)

            # the prox lies within V sup|l'| of omega (|l'| <= 1 for logistic and hinge) or between omega and y
            lo, hi = min(omega[i], y[i]) - V_value, max(omega[i], y[i]) + V_value
            ref = optimize.minimize_scalar(objective, bounds=(lo, hi), method="bounded",
                                           options={"xatol": 1e-12 * (1 + V_value)}).x
            assert objective(p[i]) <= objective(ref) + 1e-12 * (1.0 + abs(objective(ref)))
            assert abs(p[i] - ref) <= 1e-5 * (1.0 + abs(ref))
        # central differences in omega, away from the hinge's kinks y omega = 1 and 1 - V
        h = 1e-5
        u = y * omega
        smooth = (np.abs(u - 1.0) > 10 * h) & (np.abs(u - 1.0 + V_value) > 10 * h)
        fd = (loss.g_out(y, (omega + h)[:, None, None], V)[0] - loss.g_out(y, (omega - h)[:, None, None], V)[0])
        np.testing.assert_allclose(dg[smooth, 0, 0, 0, 0], fd[smooth, 0, 0] / (2 * h), rtol=1e-6, atol=1e-9)


def test_logistic_prox_is_the_root_of_its_optimality_condition_to_machine_precision():
    """s = y p solves h(s) = s - u - V sigmoid(-s) = 0, u = y omega: the Newton step left, h(s) / h'(s),
    is within the rounding of evaluating h (8 ulps of its terms |s|, |u|, V sigmoid(-s), over h'),
    from tiny to huge V and |omega|."""
    loss = dn.Logistic()
    rng = np.random.default_rng(2)
    for V_value in (1e-6, 1e-2, 1.0, 1e2, 1e6):
        for scale in (1.0, 30.0, 1e3):
            y = rng.choice([-1.0, 1.0], 2000)
            u = y * scale * rng.standard_normal(2000)
            s = y * loss.prox(y, (y * u)[:, None, None], np.array([[V_value]]))
            plus, minus = np.exp(-np.logaddexp(0.0, -s)), np.exp(-np.logaddexp(0.0, s))
            slope = 1.0 + V_value * plus * minus
            step = (s - u - V_value * minus) / slope
            rounding = np.finfo(float).eps * (1.0 + np.abs(s) + np.abs(u) + V_value * minus) / slope
            assert np.all(np.abs(step) <= 8 * rounding)


def test_erm_denoisers_are_backend_generic(xp):
    rng = np.random.default_rng(3)
    B, omega = rng.standard_normal((50, 1)), 2.0 * rng.standard_normal((50, 1, 1))
    y = rng.choice([-1.0, 1.0], 50)
    A, V = np.array([[0.8]]), np.array([[1.3]])
    arr = lambda a: xp.asarray(a)  # noqa: E731
    for penalty in PENALTIES.values():
        for got, want in zip(penalty.f_in(arr(B), arr(A)), penalty.f_in(B, A)):
            np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, atol=1e-15)
    for loss in LOSSES.values():
        for got, want in zip(loss.g_out(arr(y), arr(omega), arr(V)), loss.g_out(y, omega, V)):
            np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, atol=1e-15)


def test_erm_denoisers_check_their_arguments():
    with pytest.raises(ValueError, match="lam"):
        dn.L2(-1.0)
    with pytest.raises(ValueError, match="l1"):
        dn.ElasticNet(float("nan"), 1.0)
    inst = amp.teacher_student(d=50, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=0)
    for loss in (dn.Logistic(), dn.Hinge()):
        with pytest.raises(ValueError, match="-1 or \\+1"):
            amp.gamp(inst.X, (inst.y + 1.0) / 2.0, dn.L2(1.0), loss)
    with pytest.raises(NotImplementedError):
        dn.Square().sample(np.zeros((3, 1, 1)), None)


# ---------------------------------------------------------------- GAMP's fixed point is the ERM minimiser

def _sk_ridge(X, y, lam):
    return Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(X, y).coef_


def _sk_logistic(X, y, lam):
    return LogisticRegression(C=1.0 / lam, fit_intercept=False, tol=1e-10, max_iter=10_000,
                              solver="newton-cg").fit(X, y).coef_[0]


def _sk_lasso(X, y, lam):
    return Lasso(alpha=lam / X.shape[0], fit_intercept=False, tol=1e-12, max_iter=100_000).fit(X, y).coef_


def _sk_elastic_net(X, y, l1, l2):
    return ElasticNet(alpha=(l1 + l2) / X.shape[0], l1_ratio=l1 / (l1 + l2), fit_intercept=False, tol=1e-12,
                      max_iter=100_000).fit(X, y).coef_


def _sk_hinge(X, y, lam):
    return LinearSVC(loss="hinge", C=1.0 / lam, fit_intercept=False, dual=True, tol=1e-10,
                     max_iter=1_000_000).fit(X, y).coef_[0]


SPARSE = (dn.BernoulliGauss(0.2), dn.Linear(0.01))
SIGN = (dn.Gaussian(), dn.Sign())
ERM_CASES = {
    "ridge": (SIGN, dn.L2(0.5), dn.Square(), lambda X, y: _sk_ridge(X, y, 0.5)),
    "logistic": (SIGN, dn.L2(0.1), dn.Logistic(), lambda X, y: _sk_logistic(X, y, 0.1)),
    "lasso": (SPARSE, dn.L1(0.3), dn.Square(), lambda X, y: _sk_lasso(X, y, 0.3)),
    "elastic_net": (SPARSE, dn.ElasticNet(0.3, 0.2), dn.Square(), lambda X, y: _sk_elastic_net(X, y, 0.3, 0.2)),
    "hinge": (SIGN, dn.L2(0.5), dn.Hinge(), lambda X, y: _sk_hinge(X, y, 0.5)),
}


@pytest.mark.parametrize("case", ERM_CASES)
def test_gamp_fixed_point_is_the_sklearn_minimiser(case):
    """Undamped GAMP converges here; its fixed point solves the KKT conditions of the objective
    exactly, so it agrees with scikit-learn's solver to the solvers' tolerances (measured ~1e-9)."""
    (prior, channel), penalty, loss, fit = ERM_CASES[case]
    inst = amp.teacher_student(d=D, alpha=2.0, prior=prior, channel=channel, seed=0)
    run = amp.gamp(inst.X, inst.y, penalty, loss, truth=inst.W, max_iter=2000, tol=1e-11, seed=1)
    assert run.converged, run.message
    w_sk = fit(inst.X / math.sqrt(D), inst.y)
    assert np.linalg.norm(run.W[:, 0] - w_sk) <= 1e-4 * np.linalg.norm(w_sk)


# ---------------------------------------------------------------- the general SE

@pytest.mark.parametrize("prior, channel, alpha", [(dn.Gaussian(), dn.Sign(), 2.0),
                                                   (dn.BernoulliGauss(0.3), dn.Linear(1e-3), 0.6)])
def test_general_se_with_student_equal_teacher_is_the_bayes_optimal_se(prior, channel, alpha):
    """With the Bayes denoisers of the teacher as student, the general SE keeps m = q, V = rho - q and
    m_hat = q_hat = V_hat (Nishimori), and its MSE is that of state_evolution.gamp at every iteration."""
    T = 25
    general = se.erm(prior, channel, prior, channel, alpha, max_iter=T, tol=0.0).history
    bayes = se.gamp(prior, channel, alpha, max_iter=T, tol=0.0).history
    rho = float(prior.second_moment()[0, 0])
    np.testing.assert_allclose(general["mse"], bayes["mse"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(general["q_hat"], bayes["q_hat"], rtol=1e-8)
    np.testing.assert_allclose(general["m"], general["q"], rtol=1e-8)
    np.testing.assert_allclose(general["V"], rho - np.array(general["q"]), rtol=1e-8)
    np.testing.assert_allclose(general["m_hat"], general["q_hat"], rtol=1e-8)
    np.testing.assert_allclose(general["V_hat"], general["q_hat"], rtol=1e-8)
    assert bayes["mse"][0] - bayes["mse"][-1] > 0.1 * rho  # the trajectory moves


def test_se_output_side_of_ridge_on_the_sign_teacher_has_its_closed_form():
    """Square loss, y = sign(z), rho = 1: g = (y - omega) / (1 + V), so with E[y z] = sqrt(2/pi) and
    E[y omega] = m sqrt(2/pi): m_hat = alpha sqrt(2/pi) / (1 + V), q_hat = alpha (1 - 2 m sqrt(2/pi) + q) / (1 + V)^2,
    V_hat = alpha / (1 + V); the test error is arccos(m / sqrt(q)) / pi."""
    alpha, m, q, V = 1.7, 0.55, 0.8, 0.6
    m_hat, q_hat, V_hat, error, train = output_side(dn.Sign(), dn.Square(), alpha, m, q, V, 1.0)
    c = math.sqrt(2.0 / math.pi)
    assert m_hat == pytest.approx(alpha * c / (1 + V), rel=1e-10)
    assert q_hat == pytest.approx(alpha * (1 - 2 * m * c + q) / (1 + V) ** 2, rel=1e-10)
    assert V_hat == pytest.approx(alpha / (1 + V), rel=1e-12)
    assert error == pytest.approx(math.acos(m / math.sqrt(q)) / math.pi, rel=1e-10)
    # training pre-activation p = (omega + V y) / (1 + V): loss (y - p)^2 / 2 = (y - omega)^2 / (2 (1 + V)^2)
    assert train == pytest.approx(0.5 * (1 - 2 * m * c + q) / (1 + V) ** 2, rel=1e-10)


SEEDS = 3
N_TEST = 20_000
ALPHAS = (0.5, 1.0, 2.0, 4.0)
SE_CASES = {"ridge": (dn.L2(0.5), dn.Square(), lambda X, y: _sk_ridge(X, y, 0.5)),
            "logistic": (dn.L2(0.1), dn.Logistic(), lambda X, y: _sk_logistic(X, y, 0.1))}


def test_se_test_error_and_train_loss_predict_sklearn_on_fresh_samples():
    """Sign teacher, Gaussian prior, d = 1000, 3 seeds per alpha; the test error of scikit-learn's
    minimiser is measured on 20000 fresh samples.

    Tolerance: 4 s / sqrt(S) + 0.1 / sqrt(d), s the spread over the S seeds. One run's test error
    fluctuates by c / sqrt(d) (finite-size fluctuations of m and q, plus the fresh-sample noise
    sqrt(p (1 - p) / 20000) ~ 0.003), measured c ~ 0.15-0.25; the seed mean fluctuates by s / sqrt(S),
    four standard errors keep false alarms below 1e-4 per check. The 0.1 / sqrt(d) term, about half
    of one run's fluctuation, guards against a spread underestimated from only three seeds and
    covers the O(1/d) finite-size bias. Ridge and logistic differ by more than that at alpha = 4.
    """
    results = {name: {alpha: [] for alpha in ALPHAS} for name in SE_CASES}
    for alpha in ALPHAS:
        for seed in range(SEEDS):
            inst = amp.teacher_student(d=D, alpha=alpha, prior=dn.Gaussian(), channel=dn.Sign(), seed=seed)
            X, y, w_star = inst.X / math.sqrt(D), inst.y, inst.W[:, 0]
            X_test = np.random.default_rng(10_000 + seed).standard_normal((N_TEST, D))
            y_test = np.sign(X_test @ w_star)
            for name, (penalty, loss, fit) in SE_CASES.items():
                w = fit(X, y)
                results[name][alpha].append((np.mean(np.sign(X_test @ w) != y_test), np.mean(loss.loss(y, X @ w))))
    errors, tols = {}, {}
    for name, (penalty, loss, _) in SE_CASES.items():
        for alpha in ALPHAS:
            run = se.erm(dn.Gaussian(), dn.Sign(), penalty, loss, alpha)
            assert run.converged, run.message
            fixed, measured = run.final, np.array(results[name][alpha])
            for column, key in enumerate(("test_error", "train_loss")):
                values = measured[:, column]
                tol = 4.0 * values.std(ddof=1) / math.sqrt(SEEDS) + 0.1 / math.sqrt(D)
                assert abs(values.mean() - fixed[key]) <= tol, (f"{name}, alpha = {alpha}, {key}: sklearn "
                                                                f"{values.mean():.4f} vs SE {fixed[key]:.4f} (tol {tol:.4f})")
                if key == "test_error":
                    errors[name, alpha], tols[name, alpha] = fixed[key], tol
    # not vacuous: at alpha = 4 the SE tells ridge from logistic by more than either tolerance
    assert errors["ridge", 4.0] - errors["logistic", 4.0] > max(tols["ridge", 4.0], tols["logistic", 4.0])


def test_optimally_regularised_ridge_reaches_the_bayes_optimal_mse():
    """Gaussian prior, y = z + sqrt(Delta) eta: the posterior mean is ridge at lam = Delta, so the SE of
    ridge at its optimal lam (found by erm_curve) has the Bayes-optimal MSE of bayes_optimal."""
    noise_var = 0.1
    curve = se.erm_curve(dn.Gaussian(), dn.Linear(noise_var), dn.L2, dn.Square(), alphas=[0.5, 2.0],
                         lams=np.geomspace(0.01, 1.0, 5))
    assert not curve.notes, curve.notes
    np.testing.assert_allclose(curve.best_lam, noise_var, rtol=1e-3)
    np.testing.assert_allclose(curve.best_mse, curve.bayes.mse, rtol=1e-6)
    # test error on labels = mse + noise_var for a linear teacher, also Bayes-optimal
    np.testing.assert_allclose(curve.best_test_error, curve.bayes.gen_error, rtol=1e-6)
    # any other regularisation on the grid is worse
    assert np.all(curve.mse >= curve.bayes.mse[:, None] - 1e-12)


def test_se_output_side_quadrature_resolves_the_hinge_kinks():
    """g_out of the hinge jumps in dg at y omega = 1 and 1 - V: the SE puts panel edges there, so the
    default rule agrees with a much finer one (without those edges, errors of ~1e-2 made the SE cycle)."""
    for m, q, V in ((0.93, 1.28, 0.7), (2.5, 7.6, 2.2), (0.3, 0.2, 0.05)):
        coarse = output_side(dn.Sign(), dn.Hinge(), 2.0, m, q, V, 1.0)
        fine = output_side(dn.Sign(), dn.Hinge(), 2.0, m, q, V, 1.0, Nodes(panel=16, panels=200))
        np.testing.assert_allclose(coarse, fine, rtol=1e-9, atol=1e-13)


def test_fixed_point_finds_the_fixed_point_of_the_se_iteration():
    """Hinge at small lam, where the iteration contracts slowly (~100 iterations): the root finder,
    from a perturbed start, lands on the iteration's fixed point."""
    iterated = se.erm(dn.Gaussian(), dn.Sign(), dn.L2(0.05), dn.Hinge(), 3.0, max_iter=2000, tol=1e-12)
    assert iterated.converged, iterated.message
    x = np.array([iterated.final[key] for key in ("m", "q", "V")])
    root = fixed_point(dn.Gaussian(), dn.Sign(), dn.L2(0.05), dn.Hinge(), 3.0, x * (1.1, 0.9, 1.2))
    assert root.converged, root.message
    np.testing.assert_allclose([root.final[key] for key in ("m", "q", "V")], x, rtol=1e-9)
    assert root.final["test_error"] == pytest.approx(iterated.final["test_error"], rel=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["lasso", "elastic_net", "hinge"])
def test_se_predicts_gamp_fixed_point_overlaps(case):
    """The SE fixed point (m, q, V) against GAMP's at d = 2000 over 4 seeds, alpha = 0.7 and 3:
    tolerance 4 s / sqrt(S) + 1 / d (the seed mean fluctuates by s / sqrt(S), 1/d bounds the
    finite-size bias), as in test_se_vs_amp.py."""
    (prior, channel), penalty, loss, _ = ERM_CASES[case]
    for alpha in (0.7, 3.0):
        runs = []
        for seed in range(4):
            inst = amp.teacher_student(d=2000, alpha=alpha, prior=prior, channel=channel, seed=seed)
            run = amp.gamp(inst.X, inst.y, penalty, loss, truth=inst.W, max_iter=3000, tol=1e-7, seed=seed)
            assert run.converged, run.message
            runs.append((run.history["m"][-1], run.history["q"][-1], float(run.C[0, 0])))
        runs = np.array(runs)
        fixed = se.erm(prior, channel, penalty, loss, alpha, max_iter=3000)
        assert fixed.converged, fixed.message
        predicted = np.array([fixed.final[key] for key in ("m", "q", "V")])
        tol = 4.0 * runs.std(axis=0, ddof=1) / 2.0 + 1.0 / 2000
        assert np.all(np.abs(runs.mean(axis=0) - predicted) <= tol), (alpha, runs.mean(axis=0), predicted, tol)


@pytest.mark.slow
def test_erm_demo_prints_table_and_writes_png(tmp_path, capsys, load_demo):
    demo = load_demo("erm_demo")
    out = tmp_path / "erm.png"
    demo.main(["--alphas", "2", "--lams", "3", "--d", "200", "--out", str(out)])
    text = capsys.readouterr().out
    assert "logistic" in text and len([line for line in text.splitlines() if line.strip()[:1].isdigit()]) == 2
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
