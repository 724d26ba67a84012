"""Test error of ERM against alpha, next to the Bayes-optimal one (Aubin et al., NeurIPS 2020).

Teacher: the sign perceptron y = sign(x . w* / sqrt(d)) with a Gaussian prior. Students: ridge
(square loss), logistic and hinge losses with an L2 penalty lam w^2 / 2, each at the lam that
minimises its SE test error (found by `state_evolution.erm_curve`). Points: GAMP with the same
denoisers at that lam on one instance of dimension d, its test error arccos(m / sqrt(rho q)) / pi
from its overlaps (exact for fresh Gaussian inputs). Prints a table and saves
demos/output/erm_demo.png (or --out).
"""
import argparse
import math
import pathlib

import numpy as np

import amp
import denoisers as dn
import state_evolution as se
from amp.plots import save_figure

LOSSES = {"ridge": dn.Square(), "logistic": dn.Logistic(), "hinge": dn.Hinge()}


def gamp_test_error(loss, lam, alpha, d, seed):
    """Test error of GAMP's fixed point (the ERM minimiser) on one teacher-student instance."""
    inst = amp.teacher_student(d=d, alpha=alpha, prior=dn.Gaussian(), channel=dn.Sign(), seed=seed)
    run = amp.gamp(inst.X, inst.y, dn.L2(lam), loss, truth=inst.W, max_iter=2000, tol=1e-7, seed=seed)
    m, q, rho = run.history["m"][-1], run.history["q"][-1], float(inst.W[:, 0] @ inst.W[:, 0]) / d
    return math.acos(min(1.0, m / math.sqrt(rho * q))) / math.pi


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", type=int, default=8, help="number of sample ratios in [0.25, 4]")
    parser.add_argument("--lams", type=int, default=7, help="grid of lam in [1e-3, 10] before refinement")
    parser.add_argument("--d", type=int, default=500, help="dimension of the GAMP points (0: none)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "output" / "erm_demo.png")
    args = parser.parse_args(argv)
    alphas = np.linspace(0.25, 4.0, args.alphas)
    lams = np.geomspace(1e-3, 10.0, args.lams)

    curves = {name: se.erm_curve(dn.Gaussian(), dn.Sign(), dn.L2, loss, alphas, lams, tol=1e-9, lam_tol=1e-3)
              for name, loss in LOSSES.items()}
    bayes = next(iter(curves.values())).bayes.gen_error
    print("test error of the sign perceptron (Gaussian prior); ERM at its optimal lam")
    print(f"{'alpha':>6} {'Bayes':>8}" + "".join(f" {name:>9} {'lam*':>8}" for name in curves))
    for i, alpha in enumerate(alphas):
        row = "".join(f" {c.best_test_error[i]:>9.4f} {c.best_lam[i]:>8.3g}" for c in curves.values())
        print(f"{alpha:>6.3f} {bayes[i]:>8.4f}{row}")
    for name, c in curves.items():
        for note in c.notes:
            print(f"{name}: {note}")

    import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(alphas, bayes, "-", color="k", lw=1.5, label="Bayes-optimal")
    for (name, c), color in zip(curves.items(), ("tab:blue", "tab:orange", "tab:green")):
        ax.plot(alphas, c.best_test_error, "--", color=color, label=f"{name}, optimal lam (SE)")
        if args.d > 0:
            points = [gamp_test_error(LOSSES[name], lam, alpha, args.d, seed=i)
                      for i, (alpha, lam) in enumerate(zip(alphas, c.best_lam))]
            ax.plot(alphas, points, "o", ms=4, color=color, label=f"{name}, GAMP d = {args.d}")
    ax.set_xlabel("alpha = n / d")
    ax.set_ylabel("test error")
    ax.set_title("sign perceptron, Gaussian prior: ERM vs Bayes")
    ax.legend(fontsize=8)
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
