"""Classic Bayes-optimal figures, reproduced by computation (Barbier et al., PNAS 2019):

- generalisation error of the sign perceptron with a Gaussian and with a Rademacher prior,
- MSE of noiseless real phase retrieval (Gaussian prior), with AMP runs as points,
- the phase diagram alpha_alg(rho), alpha_IT(rho) of noiseless compressed sensing with a
  Bernoulli-Gauss prior.
PNGs go to demos/output/ (or --out DIR); thresholds are printed.
"""
import argparse
import pathlib

import numpy as np

import amp
import denoisers as dn
from amp.plots import bayes_optimal_curve
from state_evolution.bayes_optimal import bayes_optimal


def amp_mse(prior, channel, alphas, d, seeds):
    values = []
    for alpha in alphas:
        row = []
        for seed in range(seeds):
            inst = amp.teacher_student(d=d, alpha=alpha, prior=prior, channel=channel, seed=seed)
            run = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=300, tol=1e-7,
                           init_overlap=0.01, seed=100 + seed)
            row.append(run.history["mse"][-1])
        values.append(row)
    return np.array(values)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "output")
    parser.add_argument("--d", type=int, default=1000, help="dimension of the AMP runs")
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    for name, prior in (("gaussian", dn.Gaussian()), ("rademacher", dn.Rademacher())):
        bo = bayes_optimal(prior, dn.Sign(), np.linspace(0.1, 3.0, 59))
        print(f"sign perceptron, {name} prior: alpha_IT = {bo.alpha_it}, alpha_alg = {bo.alpha_alg}")
        fig = bayes_optimal_curve(bo, key="gen_error", title=f"sign perceptron, {name} prior")
        fig.savefig(args.out / f"perceptron_{name}.png", dpi=120)

    bo = bayes_optimal(dn.Gaussian(), dn.Abs(), np.linspace(0.2, 2.0, 46))
    print(f"phase retrieval: alpha_weak = {bo.alpha_weak:.4f}, alpha_IT = {bo.alpha_it:.4f}, "
          f"alpha_alg = {bo.alpha_alg:.4f}")
    points = np.array([0.4, 0.8, 1.0, 1.2, 1.6])
    fig = bayes_optimal_curve(bo, amp_points=(points, amp_mse(dn.Gaussian(), dn.Abs(), points, args.d, args.seeds)),
                              title="noiseless real phase retrieval, Gaussian prior")
    fig.savefig(args.out / "phase_retrieval.png", dpi=120)

    rhos = np.linspace(0.05, 0.9, 12)
    it, alg = [], []
    for rho in rhos:
        bo = bayes_optimal(dn.BernoulliGauss(rho), dn.Linear(0.0), np.linspace(rho * 0.8, 1.0, 8))
        it.append(bo.alpha_it)
        alg.append(bo.alpha_alg)
        print(f"compressed sensing rho = {rho:.3f}: alpha_IT = {bo.alpha_it}, alpha_alg = {bo.alpha_alg}")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(rhos, [np.nan if a is None else a for a in alg], "o-", label="alpha_alg (AMP)")
    ax.plot(rhos, [np.nan if a is None else a for a in it], "s-", label="alpha_IT")
    ax.set_xlabel("rho (fraction of non-zeros)")
    ax.set_ylabel("alpha")
    ax.set_title("noiseless compressed sensing, Bernoulli-Gauss prior")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "compressed_sensing_phase_diagram.png", dpi=120)
    print(f"wrote PNGs to {args.out}")


if __name__ == "__main__":
    main()
