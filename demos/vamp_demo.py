"""VAMP next to its state evolution on an ill-conditioned rotationally invariant design, and GAMP on it.

Default: the Bernoulli-Gauss prior (rho = 0.3) with the linear channel (noise variance 1e-3) at
alpha = 0.6, d = 2000, X = U diag(s) V^T with Haar U, V and condition number 100, 3 seeds.
Prints the per-iteration MSE of VAMP (mean +- spread over seeds) and of the SE, what became of
GAMP on the same instances, and saves a PNG of the curves (demos/output/vamp_demo.png unless
--out says otherwise).
"""
import argparse
import pathlib
import warnings

import numpy as np

import amp
import denoisers as dn
import state_evolution as se
from amp.plots import amp_vs_se, save_figure

CHANNELS = {"linear": lambda: dn.Linear(1e-3), "sign": dn.Sign, "relu": dn.ReLU}
PRIORS = {"sparse": lambda: dn.BernoulliGauss(0.3), "gaussian": dn.Gaussian}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", choices=PRIORS, default="sparse")
    parser.add_argument("--channel", choices=CHANNELS, default="linear")
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--condition-number", type=float, default=100.0)
    parser.add_argument("--d", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "output" / "vamp_demo.png")
    args = parser.parse_args(argv)
    prior, channel = PRIORS[args.prior](), CHANNELS[args.channel]()

    histories, gamp_end = [], []
    for seed in range(args.seeds):
        inst = amp.teacher_student(args.d, args.alpha, prior, channel, seed=seed,
                                   condition_number=args.condition_number)
        run = amp.vamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=args.iterations, tol=0.0,
                       svd=inst.svd)
        histories.append(run.history)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", amp.DivergenceWarning)
            g = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=50, tol=0.0)
        gamp_end.append("diverged" if g.diverged else f"mse {g.history['mse'][-1]:.4g}")
    curve = se.vamp(prior, channel, args.alpha, inst.spectrum, max_iter=args.iterations, tol=0.0).history

    mse = np.array([h["mse"] for h in histories])
    print(f"{prior!r} prior, {channel!r} channel, alpha = {args.alpha}, d = {args.d}, "
          f"condition number {args.condition_number}, {args.seeds} seed(s)")
    print(f"{'t':>3} {'VAMP mse':>10} {'+-':>8} {'SE mse':>10}")
    for t in range(mse.shape[1]):
        spread = mse[:, t].std(ddof=1) if args.seeds > 1 else 0.0
        print(f"{t:>3} {mse[:, t].mean():>10.5f} {spread:>8.5f} {curve['mse'][t]:>10.5f}")
    print("GAMP on the same instances (50 iterations): " + ", ".join(gamp_end))

    fig = amp_vs_se(histories, curve, label=f"VAMP, {args.prior} prior, {args.channel} channel, "
                                            f"kappa = {args.condition_number:g}")
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
