"""Committee machine with k = 2 hidden units: GAMP against the matrix state evolution across alpha,
with the specialisation of the hidden units.

Teacher and student: y = sign(sign(z_1) + sign(z_2)) (labels -1, 0, +1), Gaussian weights. Below
alpha_spec the fixed point is unspecialised: both student units learn the same direction (the sum
of the teacher's), the overlap matrix q has equal diagonal and off-diagonal entries. Past it each
unit aligns with one teacher unit: q_11 - q_12 > 0. The SE starts, like AMP, a little aligned unit
by unit (q^0 = eps I), the slight symmetry breaking that lets the specialisation show.
Prints, per alpha, the SE fixed point (q_11, q_12, MSE) and AMP's after its run (mean over seeds),
and saves the plot (demos/output/committee_demo.png unless --out says otherwise).
"""
import argparse
import pathlib

import matplotlib
import numpy as np

import amp
import denoisers as dn
import state_evolution as se
from amp.plots import save_figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def diagonal_and_off(M):
    """Mean diagonal and mean off-diagonal entry of a (k, k) overlap matrix."""
    k = M.shape[0]
    return np.trace(M) / k, (M.sum() - np.trace(M)) / (k * (k - 1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", type=lambda s: [float(a) for a in s.split(",")],
                        default=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
    parser.add_argument("--d", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).parent / "output" / "committee_demo.png")
    args = parser.parse_args(argv)
    prior, channel = dn.Gaussian(cov=np.eye(2)), dn.Committee(2)

    rows = []
    print(f"committee k = 2, sign activations, Gaussian prior; AMP at d = {args.d}, {args.seeds} seed(s)")
    print(f"{'alpha':>6} {'SE q11':>8} {'SE q12':>8} {'SE mse':>8} {'AMP q11':>8} {'AMP q12':>8} {'AMP mse':>8}")
    for alpha in args.alphas:
        curve = se.gamp(prior, channel, alpha=alpha, max_iter=args.iterations, tol=1e-7).history
        amp_m, amp_mse = [], []
        for seed in range(args.seeds):
            inst = amp.teacher_student(d=args.d, alpha=alpha, prior=prior, channel=channel, seed=seed)
            run = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=args.iterations, tol=1e-6,
                           seed=100 + seed)
            amp_m.append(diagonal_and_off(run.history["m"][-1]))
            amp_mse.append(run.history["mse"][-1])
        row = (alpha, *diagonal_and_off(curve["q"][-1]), curve["mse"][-1], *np.mean(amp_m, axis=0), np.mean(amp_mse))
        rows.append(row)
        print(" ".join(f"{v:>8.4f}" if i else f"{v:>6.2f}" for i, v in enumerate(row)))

    rows = np.array(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rows[:, 0], rows[:, 1], "C0-", label="SE $q_{11}$ (own teacher unit)")
    ax.plot(rows[:, 0], rows[:, 2], "C1-", label="SE $q_{12}$ (other unit)")
    ax.plot(rows[:, 0], rows[:, 3], "C2-", label="SE MSE")
    ax.plot(rows[:, 0], rows[:, 4], "C0o", label=f"AMP, d = {args.d}")
    ax.plot(rows[:, 0], rows[:, 5], "C1o")
    ax.plot(rows[:, 0], rows[:, 6], "C2o")
    ax.set_xlabel(r"$\alpha = n / d$")
    ax.set_title("committee machine k = 2: specialisation of the hidden units")
    ax.legend(fontsize=8)
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
