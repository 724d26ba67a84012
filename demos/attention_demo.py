"""Two-layer attention (Troiani et al. 2025; L = 2 tokens, k = 2): GAMP next to the matrix SE.

y = softmax_rows(h h^T), h = (softmax_rows(z1 z1^T) + skip I) z2, with z1, z2 the two columns of
the (2, 2) pre-activation Z = x W* / sqrt(d), Gaussian weights, noiseless. Prints per iteration the
overlap of each student direction with its own teacher direction (AMP mean over seeds, and SE): the
value direction z2 is learned first, the direction inside the softmax z1 a few iterations later.
Saves the plot (demos/output/attention_demo.png unless --out says otherwise).
"""
import argparse
import pathlib

import matplotlib
import numpy as np

import amp
import denoisers as dn
import state_evolution as se
from amp.plots import save_figure
from state_evolution.gaussian import GaussianRule

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alpha", type=float, default=3.0)
    parser.add_argument("--d", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--init-overlap", type=float, default=0.1)
    parser.add_argument("--nodes", type=int, default=16, help="Gauss-Hermite nodes per token of the channel")
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).parent / "output" / "attention_demo.png")
    args = parser.parse_args(argv)
    prior, channel = dn.Gaussian(cov=np.eye(2)), dn.TwoLayerAttention(nodes=args.nodes)
    curve = se.gamp(prior, channel, alpha=args.alpha, max_iter=args.iterations, tol=0.0,
                    init_overlap=args.init_overlap, rule=GaussianRule(qmc_log2=10)).history
    se_q = np.array([np.diag(q) for q in curve["q"]])
    runs = []
    for seed in range(args.seeds):
        inst = amp.teacher_student(d=args.d, alpha=args.alpha, prior=prior, channel=channel, tokens=2, seed=seed)
        run = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=args.iterations, tol=0.0,
                       init_overlap=args.init_overlap, seed=100 + seed)
        runs.append([np.diag(m) for m in run.history["m"]])
    amp_q = np.array(runs).mean(axis=0)
    print(f"two-layer attention, alpha = {args.alpha}, d = {args.d}, {args.seeds} seed(s)")
    print(f"{'t':>3} {'AMP m11':>8} {'SE q11':>8} {'AMP m22':>8} {'SE q22':>8}")
    for t in range(se_q.shape[0]):
        print(f"{t:>3} {amp_q[t, 0]:>8.4f} {se_q[t, 0]:>8.4f} {amp_q[t, 1]:>8.4f} {se_q[t, 1]:>8.4f}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for a, name in enumerate(("z1 (inside the softmax)", "z2 (value)")):
        ax.plot(se_q[:, a], f"C{a}-", label=f"SE, {name}")
        ax.plot(amp_q[:, a], f"C{a}o", label=f"AMP, d = {args.d}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("overlap with the teacher direction")
    ax.legend(fontsize=8)
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
