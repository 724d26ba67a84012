"""Low-rank AMP next to its state evolution on the spiked Wigner model Y = X X^T / sqrt(n) + sqrt(Delta) W.

Default: the sparse Rademacher prior (rho = 0.05, first-order transition) at Delta = 0.8, n = 4000,
3 seeds, from a small informative start. Prints the Bayes-optimal thresholds of the prior, the
per-iteration MSE of AMP (mean +- spread over seeds) and of the SE, and saves a PNG of both
curves (demos/output/lowrank_demo.png unless --out says otherwise).
"""
import argparse
import pathlib

import numpy as np

import amp
import denoisers as dn
import state_evolution as se
from amp.plots import amp_vs_se, save_figure

PRIORS = {"sparse": lambda: dn.SparseRademacher(0.05), "rademacher": dn.Rademacher, "gaussian": dn.Gaussian}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", choices=PRIORS, default="sparse")
    parser.add_argument("--delta", type=float, default=0.8, help="noise variance Delta")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--init-overlap", type=float, default=0.1)
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).parent / "output" / "lowrank_demo.png")
    args = parser.parse_args(argv)
    prior = PRIORS[args.prior]()

    bo = se.lowrank_bayes_optimal(prior, np.linspace(0.5, 2.0, 31))
    print(f"{prior!r}: {bo.transition or 'no'} transition; Delta_spectral = {bo.delta_spectral:.4f}, "
          f"Delta_alg = {bo.delta_alg}, Delta_IT = {bo.delta_it}, Delta_dyn = {bo.delta_dyn}")
    histories = []
    for seed in range(args.seeds):
        inst = amp.spiked_wigner(args.n, prior, args.delta, seed=seed)
        run = amp.lowrank(inst.Y, prior, args.delta, truth=inst.X, max_iter=args.iterations, tol=0.0,
                          init_overlap=args.init_overlap, seed=10_000 + seed)
        histories.append(run.history)
    curve = se.lowrank(prior, args.delta, max_iter=args.iterations, tol=0.0, init_overlap=args.init_overlap).history

    mse = np.array([h["mse"] for h in histories])
    print(f"spiked Wigner, Delta = {args.delta}, n = {args.n}, {args.seeds} seed(s)")
    print(f"{'t':>3} {'AMP mse':>10} {'+-':>8} {'SE mse':>10}")
    for t in range(mse.shape[1]):
        spread = mse[:, t].std(ddof=1) if args.seeds > 1 else 0.0
        print(f"{t:>3} {mse[:, t].mean():>10.5f} {spread:>8.5f} {curve['mse'][t]:>10.5f}")

    fig = amp_vs_se(histories, curve, label=f"{args.prior} prior, Delta = {args.delta}, n = {args.n}")
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
