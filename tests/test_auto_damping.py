"""amp.gamp(auto_damping=True): an oscillating divergence is damped away, step by halved step,
each halving recorded; healthy runs are left exactly as they were; an unusable step still stops
the run once the damping is at its floor."""
import math
import warnings

import numpy as np
import pytest

import amp
import denoisers as dn
from amp.gamp import MIN_DAMPING


def oscillating_instance(d=200, shift=0.1, seed=0):
    """(X, y, W*) of a linear model whose X has mean `shift`: undamped GAMP oscillates with a
    growing amplitude (steps reverse, |D^{t+1}| ~ 2.5 |D^t|) and blows up within ~25 iterations."""
    inst = amp.teacher_student(d=d, alpha=2.0, prior=dn.Gaussian(), channel=dn.Linear(0.01), seed=seed)
    X = inst.X + shift
    y = X @ inst.W[:, 0] / np.sqrt(d) + 0.1 * np.random.default_rng(seed + 1).standard_normal(X.shape[0])
    return X, y, inst.W


def _run(X, y, W, prior=dn.Gaussian(), channel=dn.Linear(0.01), **kwargs):
    iterates = [amp.gamp(X, y, prior, channel, truth=W, max_iter=0, seed=1).W]
    kwargs = {"max_iter": 300, "seed": 1, **kwargs}
    run = amp.gamp(X, y, prior, channel, truth=W, callback=lambda t, W_t, C_t: iterates.append(W_t.copy()) and False,
                   **kwargs)
    return run, np.array(iterates)[:, :, 0]


def test_auto_damping_turns_an_oscillating_divergence_into_convergence():
    X, y, W = oscillating_instance()
    with pytest.warns(amp.DivergenceWarning), np.errstate(all="ignore"):
        plain, _ = _run(X, y, W)
    assert plain.diverged
    with warnings.catch_warnings():
        warnings.simplefilter("error", amp.DivergenceWarning)
        run, iterates = _run(X, y, W, auto_damping=True)
    assert run.converged and not run.diverged, run.message
    # the fixed point does not depend on eta: a run damped by hand from the start reaches it too
    fixed, _ = _run(X, y, W, damping=0.5)
    assert fixed.converged
    assert abs(run.history["mse"][-1] - fixed.history["mse"][-1]) < 1e-6 * fixed.history["mse"][-1]

    damping, events = run.history["damping"], run.history["events"]
    assert len(damping) == len(run.history["residual"]) == run.n_iter + 1
    assert damping[0] == 1.0 and events
    assert all(MIN_DAMPING <= b <= a for a, b in zip(damping, damping[1:]))
    # each step's eta is the one of the last halving at or before it; each event halves it once
    for t in range(1, len(damping)):
        before = [e["damping"] for e in events if e["iteration"] <= t]
        assert damping[t] == (before[-1] if before else 1.0)
    assert [e["damping"] for e in events] == [0.5 ** (i + 1) for i in range(len(events))]
    assert all("overshoot" in e["reason"] for e in events)
    # every step taken above the floor satisfies the rule: <D^{t+1}, D^t> >= -||D^t||^2
    steps = np.diff(iterates, axis=0)
    for t in range(1, len(steps)):
        if damping[t + 1] > MIN_DAMPING:
            assert steps[t] @ steps[t - 1] >= -(steps[t - 1] @ steps[t - 1]) * (1 + 1e-12)


@pytest.mark.parametrize("prior, channel, alpha", [
    (dn.Rademacher(), dn.Sign(), 2.0),    # exact recovery in a few steps
    (dn.Gaussian(), dn.Abs(), 2.0),       # escape from the uninformative point: the residual grows 1.5x
    (dn.Gaussian(), dn.Door(0.674), 2.0),  # a decaying oscillation
], ids=["rademacher-sign", "gauss-abs", "gauss-door"])
def test_auto_damping_leaves_healthy_runs_exactly_as_they_were(prior, channel, alpha):
    inst = amp.teacher_student(d=500, alpha=alpha, prior=prior, channel=channel, seed=0)
    plain = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=60, seed=1)
    auto = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=60, seed=1, auto_damping=True)
    assert auto.history["events"] == [] and set(auto.history["damping"]) == {1.0}
    for key in ("mse", "m", "q", "residual"):
        assert auto.history[key] == plain.history[key], key
    np.testing.assert_array_equal(auto.W, plain.W)


class _NaNAfter(dn.Linear):
    """Linear channel whose dg turns positive after `after` calls: A < 0, so f_in gives NaN."""

    def __init__(self, noise_var, after):
        super().__init__(noise_var)
        self.after, self.calls = after, 0

    def g_out(self, y, Omega, V):
        g, dg = super().g_out(y, Omega, V)
        self.calls += 1
        return g, (np.abs(dg) * 0.0 + 10.0) if self.calls > self.after else dg


def test_an_unusable_step_is_halved_to_the_floor_then_stops_the_run():
    inst = amp.teacher_student(d=100, alpha=2.0, prior=dn.Gaussian(), channel=dn.Linear(0.1), seed=0)
    channel = _NaNAfter(0.1, after=3)
    with pytest.warns(amp.DivergenceWarning, match="iteration 4 at damping 0.015625"), np.errstate(all="ignore"):
        run = amp.gamp(inst.X, inst.y, dn.Gaussian(), channel, truth=inst.W, max_iter=20, seed=1, auto_damping=True,
                       fused=False)  # the generic pass calls g_out
    assert run.diverged and run.n_iter == 3 and np.all(np.isfinite(run.W))
    events = run.history["events"]
    assert [e["iteration"] for e in events] == [4] * round(math.log2(1 / MIN_DAMPING))
    assert events[-1]["damping"] == MIN_DAMPING and "NaN" in events[0]["reason"]
    assert run.history["damping"] == [1.0] * 4  # entry 0 and the three good steps


def test_auto_damping_starts_from_the_given_damping():
    X, y, W = oscillating_instance()
    run, _ = _run(X, y, W, auto_damping=True, damping=0.8, max_iter=30)
    assert run.history["damping"][0] == 0.8
    assert [e["damping"] for e in run.history["events"]][:1] == [0.4]
