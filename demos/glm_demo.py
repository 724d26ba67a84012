"""GAMP next to its state evolution on a teacher-student GLM (the README's main demo).

Default: the sign perceptron with a Gaussian prior at alpha = 2, d = 2000, 3 seeds.
Prints the per-iteration MSE of AMP (mean +- spread over seeds) and of the SE, and saves
a PNG of both curves (demos/output/glm_demo.png unless --out says otherwise).
"""
import argparse
import pathlib

import numpy as np

import amp
import denoisers as dn
import state_evolution as se
from amp.plots import amp_vs_se, save_figure

PRIORS = {"gaussian": dn.Gaussian, "rademacher": dn.Rademacher, "sparse": lambda: dn.BernoulliGauss(0.3)}
CHANNELS = {"sign": dn.Sign, "relu": dn.ReLU, "abs": dn.Abs, "linear": lambda: dn.Linear(1e-3),
            "door": lambda: dn.Door(0.674)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", choices=PRIORS, default="gaussian")
    parser.add_argument("--channel", choices=CHANNELS, default="sign")
    parser.add_argument("--alpha", type=float, default=2.0)
    parser.add_argument("--d", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--init-overlap", type=float, default=0.1)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "output" / "glm_demo.png")
    args = parser.parse_args(argv)
    prior, channel = PRIORS[args.prior](), CHANNELS[args.channel]()

    histories = []
    for seed in range(args.seeds):
        inst = amp.teacher_student(d=args.d, alpha=args.alpha, prior=prior, channel=channel, seed=seed)
        run = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=args.iterations, tol=0.0,
                       init_overlap=args.init_overlap, seed=10_000 + seed)
        histories.append(run.history)
    curve = se.gamp(prior, channel, alpha=args.alpha, max_iter=args.iterations, tol=0.0,
                    init_overlap=args.init_overlap).history

    mse = np.array([h["mse"] for h in histories])
    print(f"{prior!r} prior, {channel!r} channel, alpha = {args.alpha}, d = {args.d}, {args.seeds} seed(s)")
    print(f"{'t':>3} {'AMP mse':>10} {'+-':>8} {'SE mse':>10}")
    for t in range(mse.shape[1]):
        spread = mse[:, t].std(ddof=1) if args.seeds > 1 else 0.0
        print(f"{t:>3} {mse[:, t].mean():>10.5f} {spread:>8.5f} {curve['mse'][t]:>10.5f}")

    fig = amp_vs_se(histories, curve, label=f"{args.prior} prior, {args.channel} channel, alpha = {args.alpha}, d = {args.d}")
    save_figure(fig, args.out)


if __name__ == "__main__":
    main()
