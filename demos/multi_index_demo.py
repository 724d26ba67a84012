"""A multi-index model below and above its weak-recovery threshold: y = z_1 z_2 + noise, k = 2.

E[y z] = 0, so q = 0 is a fixed point of the SE; it is unstable past the weak-recovery threshold
alpha_c = 1 / lambda_max(dq_hat/dq at q = 0, alpha = 1) (Gaussian prior: q = q_hat (I + q_hat)^{-1}
~ q_hat there), the linear stability computed here from the SE's own q_hat map on symmetric 2 x 2
perturbations. Then GAMP and the SE are run from a small overlap at alpha = 0.7 alpha_c (the
overlap decays) and 1.5 alpha_c (it grows to an informative fixed point). Prints alpha_c and both
trajectories; saves the plot (demos/output/multi_index_demo.png unless --out says otherwise).
"""
import argparse
import pathlib

import matplotlib
import numpy as np

import amp
import denoisers as dn
import state_evolution as se
from amp.plots import save_figure
from state_evolution.gamp import q_hat_matrix

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: symmetric 2 x 2 perturbation directions
BASIS = [np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 1.0]]),
         np.array([[0.0, 1.0], [1.0, 0.0]]) / np.sqrt(2.0)]


def weak_recovery_threshold(channel, rho, eps=1e-4):
    """alpha_c from the largest eigenvalue of the linearised map q -> q_hat(alpha = 1) at q = 0."""
    base, _ = q_hat_matrix(channel, 1.0, np.zeros((2, 2)), rho)
    J = np.array([[np.sum((q_hat_matrix(channel, 1.0, eps * Ej, rho)[0] - base) / eps * Ei) for Ej in BASIS]
                  for Ei in BASIS])
    return 1.0 / np.max(np.linalg.eigvals(J).real)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise-var", type=float, default=0.1)
    parser.add_argument("--d", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--init-overlap", type=float, default=0.05)
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).parent / "output" / "multi_index_demo.png")
    args = parser.parse_args(argv)
    prior, channel = dn.Gaussian(cov=np.eye(2)), dn.z1_times_z2(args.noise_var)
    alpha_c = weak_recovery_threshold(channel, prior.second_moment())
    print(f"y = z1 z2 + noise (noise_var = {args.noise_var}), Gaussian prior: weak-recovery threshold "
          f"alpha_c = {alpha_c:.4f}")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, factor in zip(axes, (0.7, 1.5)):
        alpha = factor * alpha_c
        curve = se.gamp(prior, channel, alpha=alpha, max_iter=args.iterations, tol=0.0,
                        init_overlap=args.init_overlap).history
        se_q = np.array([np.trace(q) / 2 for q in curve["q"]])
        runs = []
        for seed in range(args.seeds):
            inst = amp.teacher_student(d=args.d, alpha=alpha, prior=prior, channel=channel, seed=seed)
            run = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=args.iterations, tol=0.0,
                           init_overlap=args.init_overlap, seed=100 + seed)
            runs.append([np.trace(np.abs(m)) / 2 for m in run.history["m"]])
        runs = np.array(runs)
        print(f"alpha = {alpha:.3f} ({factor} alpha_c): SE tr(q)/2 {se_q[0]:.3f} -> {se_q[-1]:.4f}, "
              f"AMP {runs[:, 0].mean():.3f} -> {runs[:, -1].mean():.4f}")
        ax.plot(se_q, "k-", label="SE")
        for r in runs:
            ax.plot(r, "o", ms=3, alpha=0.6)
        ax.set_title(rf"$\alpha = {factor}\,\alpha_c = {alpha:.2f}$")
        ax.set_xlabel("iteration")
    axes[0].set_ylabel(r"overlap tr$(q)/2$")
    axes[0].legend()
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
