"""Multi-index and sequence models: GAMP iterations against a per-sample scipy baseline and against
the streaming floor, measured side by side in one run.

1. Two-layer attention (L = 2, k = 2, `denoisers.TwoLayerAttention`), d = 1000, n = 2000: the time of
   one whole amp.gamp iteration, and of the per-sample baseline the way per-paper scripts compute
   g_out: for each sample, scipy.integrate.dblquad of the 15 moments (mass, 4 means, 10 second
   moments) of the reduced posterior over the first column z1 (the label fixes h = A(z1) z2 up to
   its sign), timed on a few samples and scaled to n. Printed: both times, their ratio (goal >= 1000)
   and the largest difference between the baseline's g and the vectorised one on those samples.
2. Committee machine k = 2 (`denoisers.Committee(2)`), d = 10^4, alpha = 1.8: the median time of one
   amp.gamp iteration over the median time of one X @ w (goal <= 2).

    python benchmarks/multi_index.py [--baseline-samples 3] [--d-committee 10000] [--json PATH] [--force]
"""
import argparse
import json
import math
import pathlib
import statistics
import time

import numpy as np
from scipy import integrate

import amp
import denoisers as dn
from denoisers.posterior import g_from_moments

OUT = pathlib.Path(__file__).parent / "output" / "multi_index.json"


def iteration_times(inst, prior, channel, iterations):
    """Seconds of each amp.gamp iteration (gaps between callbacks), after the first."""
    stamps = []
    amp.gamp(inst.X, inst.y, prior, channel, max_iter=iterations, tol=0.0, seed=1,
             callback=lambda t, W, C: stamps.append(time.perf_counter()))
    return np.diff(stamps)


def matvec_time(X, repeats):
    w = np.ones(X.shape[-1], dtype=X.dtype)
    X @ w
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        X @ w
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def baseline_moments(y, Omega, V, skip):
    """Per-sample posterior moments of Z (flattened (z1_1, z2_1, z1_2, z2_2)) by dblquad, 15 integrals.

    P(Z | y) ∝ N(z1; omega_col1, V11 I) sum_s N(z2_s; m(z1), c I) / |det A(z1)|, z2_s = s A(z1)^{-1} h_y.
    """
    a, b = math.log(y[0, 0] / y[0, 1]), math.log(y[1, 1] / y[1, 0])
    gap = math.sqrt(a + b)
    h = np.array([(gap + (a - b) / gap) / 2, ((a - b) / gap - gap) / 2])
    beta, c = V[1, 0] / V[0, 0], V[1, 1] - V[1, 0] ** 2 / V[0, 0]

    def points(x1, x2):
        z1 = np.array([x1, x2])
        logits = np.outer(z1, z1)
        S = np.exp(logits - logits.max(axis=1, keepdims=True))
        A = S / S.sum(axis=1, keepdims=True) + skip * np.eye(2)
        m = Omega[:, 1] + beta * (z1 - Omega[:, 0])
        prior = np.exp(-np.sum((z1 - Omega[:, 0]) ** 2) / (2 * V[0, 0])) / (2 * math.pi * V[0, 0])
        for s in (1.0, -1.0):
            z2 = np.linalg.solve(A, s * h)
            weight = prior * np.exp(-np.sum((z2 - m) ** 2) / (2 * c)) / (2 * math.pi * c) / abs(np.linalg.det(A))
            yield weight, np.array([z1[0], z2[0], z1[1], z2[1]])

    def moment(i, j):
        def f(x2, x1):
            return sum(w * (1.0 if i < 0 else z[i]) * (1.0 if j < 0 else z[j]) for w, z in points(x1, x2))
        r = 12.0 * math.sqrt(V[0, 0])
        lo0, hi0, lo1, hi1 = Omega[0, 0] - r, Omega[0, 0] + r, Omega[1, 0] - r, Omega[1, 0] + r
        return integrate.dblquad(f, lo0, hi0, lo1, hi1, epsabs=1e-13, epsrel=1e-9)[0]

    mass = moment(-1, -1)
    mean = np.array([moment(i, -1) for i in range(4)]) / mass
    second = np.array([[moment(min(i, j), max(i, j)) for j in range(4)] for i in range(4)]) / mass
    return mean, second - np.outer(mean, mean)


def attention_case(args):
    prior, channel = dn.Gaussian(cov=np.eye(2)), dn.TwoLayerAttention()
    inst = amp.teacher_student(d=1000, alpha=2.0, prior=prior, channel=channel, seed=0, tokens=2)
    its = iteration_times(inst, prior, channel, args.iterations)
    run = amp.gamp(inst.X, inst.y, prior, channel, max_iter=3, tol=0.0, seed=1)
    Omega = np.einsum("nld,dk->nlk", inst.X, run.W) / math.sqrt(1000)  # a typical point of a run (no Onsager)
    V = run.C
    t0 = time.perf_counter()
    moments = [baseline_moments(inst.y[i], Omega[i], V, channel.skip) for i in range(args.baseline_samples)]
    per_sample = (time.perf_counter() - t0) / args.baseline_samples
    m = np.stack([mu.reshape(2, 2) for mu, _ in moments])
    cov = np.stack([cv.reshape(2, 2, 2, 2) for _, cv in moments])
    g_base, _ = g_from_moments(m, cov, Omega[:args.baseline_samples], V)
    g_fast, _ = channel.g_out(inst.y[:args.baseline_samples], Omega[:args.baseline_samples], V)
    iteration = float(np.median(its))
    return {"model": "TwoLayerAttention L=2 k=2", "d": 1000, "n": inst.n, "iteration_s": iteration,
            "baseline_s_per_sample": per_sample, "baseline_iteration_s": per_sample * inst.n,
            "speedup": per_sample * inst.n / iteration,
            "max_abs_g_difference": float(np.max(np.abs(g_base - g_fast)))}


def committee_case(args):
    prior, channel = dn.Gaussian(cov=np.eye(2)), dn.Committee(2)
    inst = amp.teacher_student(d=args.d_committee, alpha=1.8, prior=prior, channel=channel, seed=0)
    its = iteration_times(inst, prior, channel, args.iterations)
    floor = matvec_time(inst.X, 2 * args.iterations)
    iteration = float(np.median(its))
    return {"model": "Committee k=2", "d": args.d_committee, "n": inst.n, "iteration_s": iteration,
            "matvec_s": floor, "ratio": iteration / floor}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-samples", type=int, default=3)
    parser.add_argument("--d-committee", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--json", type=pathlib.Path, default=OUT)
    parser.add_argument("--force", action="store_true", help="overwrite an existing JSON file")
    args = parser.parse_args(argv)
    if args.json.exists() and not args.force:
        parser.error(f"{args.json} exists; pass --force to overwrite it")
    attention = attention_case(args)
    print(f"{attention['model']}, d = 1000, n = {attention['n']}: one GAMP iteration {attention['iteration_s']:.3f} s; "
          f"scipy dblquad baseline {attention['baseline_s_per_sample']:.2f} s per sample = "
          f"{attention['baseline_iteration_s']:.0f} s per iteration; speedup {attention['speedup']:.0f}x "
          f"(max |g difference| {attention['max_abs_g_difference']:.1e})")
    committee = committee_case(args)
    print(f"{committee['model']}, d = {committee['d']}, n = {committee['n']}: one GAMP iteration "
          f"{committee['iteration_s'] * 1e3:.1f} ms, one X @ w {committee['matvec_s'] * 1e3:.1f} ms, "
          f"ratio {committee['ratio']:.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"attention": attention, "committee": committee}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
