"""The amp-toolkit command line: GAMP against its state evolution, saved, resumable, plotted.

    amp-toolkit run --prior rademacher --channel sign --alpha 1.2 2.0 --d 4000 --seeds 5 --out results/
    amp-toolkit se --prior rademacher --channel sign --alpha 1.2 2.0 --out se/
    amp-toolkit bayes-optimal --prior rademacher --channel sign --alpha-range 0.5 2.5 41 --out bo/
    amp-toolkit plot results/

`run` and `se` are sweeps (`amp.sweep`): every finished point is saved at once, and the same
command run again after an interruption computes only what is missing. Results are JSON + NPZ
(`amp.io`), with the configuration, seeds and amp version, and `plot` redraws the figures from them.
Fault injection for tests: with AMP_TOOLKIT_KILL_AFTER=N in the environment, `run` and `se` kill
their own process (SIGKILL) right after saving their N-th point.
"""
import argparse
import io
import os
import pathlib
import signal
import sys

import numpy as np

import amp
from amp import io as amp_io
from amp import specs, sweep
from amp.plots import amp_vs_se, bayes_optimal_curve

PROG = "amp-toolkit"
KILL_AFTER = "AMP_TOOLKIT_KILL_AFTER"
SWEEP_FIGURE = "amp_vs_se.png"
BAYES_OPTIMAL = "bayes_optimal"


def _denoiser_help():
    return ("priors (--prior NAME[:PARAM=VALUE,...], a list value '/'-separated; a parameter without '=' "
            "has no default):\n" + specs.describe("prior") +
            "\n\nchannels (--channel NAME[:PARAM=VALUE,...]):\n" + specs.describe("channel") +
            "\n\nexample: --prior bernoulli-gauss:rho=0.3 --channel sign:noise_var=0.1")


def _spec(kind):
    def parse(text):
        try:
            return specs.parse(text, kind)[1]
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


def _damping(text):
    """--damping: eta in (0, 1], or 'auto' (GAMP halves eta from 1 when a step overshoots)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"damping must be a number in (0, 1] or 'auto', got {text!r}") from None


def _problem_arguments(p, amp_run):
    p.add_argument("--prior", type=_spec("prior"), required=True, help="prior spec (see below)")
    p.add_argument("--channel", type=_spec("channel"), required=True, help="channel spec (see below)")
    p.add_argument("--alpha", type=float, nargs="+", required=True, metavar="ALPHA",
                   help="sample ratio(s) alpha = n / d")
    if amp_run:
        p.add_argument("--d", type=int, default=2000, help="dimension of each instance (default 2000)")
        p.add_argument("--seeds", type=int, default=3, metavar="N", help="replicates 0..N-1 per alpha (default 3)")
        p.add_argument("--seed", type=int, default=0,
                       help="base seed: replicate S uses seeds [SEED, S, 0] (instance) and [SEED, S, 1] (start)")
    p.add_argument("--iterations", type=int, default=50, help="max_iter of GAMP and SE (default 50)")
    p.add_argument("--tol", type=float, default=1e-8, help="stop when the residual falls below (default 1e-8)")
    p.add_argument("--damping", type=_damping if amp_run else float, default=1.0,
                   help="eta in (0, 1]" + (", or 'auto' (GAMP's auto_damping from eta = 1; the SE undamped)"
                                           if amp_run else "") + " (default 1)")
    p.add_argument("--init-overlap", type=float, default=0.01, help="normalised initial overlap (default 0.01)")
    p.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR", help="results folder")
    p.add_argument("--force", action="store_true",
                   help="reuse DIR even if it holds results of another configuration, discarding them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser():
    epilog = _denoiser_help()
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=epilog,
                                     formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"{PROG} {amp.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="GAMP on teacher-student instances next to its SE, over alphas and seeds",
                              description="Sweep GAMP over (alpha, replicate) and the SE over alpha; save each "
                              "point as it finishes (a rerun resumes) and draw DIR/" + SWEEP_FIGURE + ".",
                              epilog=epilog, formatter_class=fmt)
    _problem_arguments(run, amp_run=True)
    se_cmd = commands.add_parser("se", help="the state evolution of GAMP over alphas",
                                 description="Iterate the Bayes-optimal SE at each alpha; save each curve (a rerun "
                                 "resumes) and draw DIR/" + SWEEP_FIGURE + ".", epilog=epilog, formatter_class=fmt)
    _problem_arguments(se_cmd, amp_run=False)
    bo = commands.add_parser("bayes-optimal", help="Bayes-optimal errors, SE branches and thresholds over alpha",
                             description="SE fixed points from both starts, free entropies, the Bayes-optimal MSE "
                             "and the thresholds alpha_weak, alpha_alg, alpha_it; saved as DIR/" + BAYES_OPTIMAL +
                             ".json/.npz and drawn in DIR/" + BAYES_OPTIMAL + ".png.", epilog=epilog,
                             formatter_class=fmt)
    bo.add_argument("--prior", type=_spec("prior"), required=True, help="prior spec (see below)")
    bo.add_argument("--channel", type=_spec("channel"), required=True, help="channel spec (see below)")
    grid = bo.add_mutually_exclusive_group(required=True)
    grid.add_argument("--alpha", type=float, nargs="+", metavar="ALPHA", help="increasing sample ratios (at least 2)")
    grid.add_argument("--alpha-range", type=float, nargs=3, metavar=("START", "STOP", "NUM"),
                      help="NUM sample ratios evenly spaced from START to STOP")
    bo.add_argument("--out", type=pathlib.Path, required=True, metavar="DIR", help="results folder")
    bo.add_argument("--force", action="store_true", help="replace a saved result of another configuration")
    plot = commands.add_parser("plot", help="redraw the figures of a results folder from its saved files",
                               description="Redraw DIR/" + SWEEP_FIGURE + " (a run or se folder) and DIR/" +
                               BAYES_OPTIMAL + ".png (a bayes-optimal result, with the AMP points of a run in the "
                               "same folder) from the saved results alone.", epilog=epilog, formatter_class=fmt)
    plot.add_argument("folder", type=pathlib.Path, metavar="DIR", help="results folder")
    plot.add_argument("--key", default="mse", help="history entry to draw (default mse)")
    return parser


# ------------------------------------------------------------------------------- figures


def sweep_figure(result, key="mse"):
    """One panel per alpha: GAMP runs (mean and spread over replicates) against the SE curve."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    alphas = result.alphas
    cols = min(3, len(alphas))
    rows = -(-len(alphas) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(alphas):]:
        ax.set_visible(False)
    config = result.config
    for ax, alpha in zip(axes.flat, alphas):
        se_history = result.se[alpha].result.history if alpha in result.se else None
        runs = result.runs(alpha)
        label = f"alpha = {alpha:g}" + (f", d = {config.d}" if runs else "")
        if runs and se_history is not None:
            amp_vs_se([r.history for r in runs], se_history, key=key, ax=ax, label=label)
        elif se_history is not None:
            ax.plot(np.asarray(se_history[key], dtype=float), "-", color="k", label="state evolution")
            ax.set(xlabel="iteration t", ylabel=key, title=label)
            ax.legend()
    fig.suptitle(f"{config.prior} prior, {config.channel} channel", fontsize=9)
    fig.tight_layout()
    return fig


def _save_figure(fig, path):
    """Save a figure atomically (no half-written PNG on an interruption); returns the path."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    amp_io.atomic_write(path, buffer.getvalue())
    return path


# ------------------------------------------------------------------------------- commands


def _kill_hook():
    """on_point for the sweep: SIGKILL this process after the N-th point when AMP_TOOLKIT_KILL_AFTER=N."""
    limit = os.environ.get(KILL_AFTER)
    if not limit:
        return None
    count = 0

    def on_point(name):
        nonlocal count
        count += 1
        if count >= int(limit):
            os.kill(os.getpid(), signal.SIGKILL)
    return on_point


def _sweep_command(args, amp_run):
    auto = amp_run and args.damping == "auto"
    config = sweep.SweepConfig(prior=args.prior, channel=args.channel, d=args.d if amp_run else None,
                               max_iter=args.iterations, tol=args.tol, damping=1.0 if auto else args.damping,
                               auto_damping=auto, init_overlap=args.init_overlap, seed=args.seed if amp_run else 0)
    if amp_run and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    replicates = range(args.seeds) if amp_run else ()
    try:
        result = sweep.run_sweep(args.out, config, args.alpha, replicates, force=args.force,
                                 progress=False if args.no_progress else None, on_point=_kill_hook())
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; the finished points are saved in {args.out}: run the same command "
              "again to compute the rest", file=sys.stderr)
        return 130
    _print_sweep(result, args.alpha)
    print(f"wrote {_save_figure(sweep_figure(result), args.out / SWEEP_FIGURE)}")
    return 0


def _print_sweep(result, alphas):
    print(f"{result.config.prior} prior, {result.config.channel} channel"
          + (f", d = {result.config.d}" if result.amp else ""))
    print(f"{'alpha':>8} {'runs':>5} {'AMP mse':>11} {'+-':>9} {'SE mse':>11} {'SE iters':>8}")
    for alpha in dict.fromkeys(alphas):
        mse = np.array([r.history["mse"][-1] for r in result.runs(alpha)])
        curve = result.se[alpha].result
        spread = mse.std(ddof=1) if mse.size > 1 else 0.0
        amp_part = f"{mse.mean():>11.4g} {spread:>9.2g}" if mse.size else f"{'-':>11} {'-':>9}"
        print(f"{alpha:>8g} {mse.size:>5} {amp_part} {curve.history['mse'][-1]:>11.4g} {curve.n_iter:>8}")


def _bayes_optimal_command(args):
    from state_evolution.bayes_optimal import bayes_optimal

    if args.alpha_range is not None:
        start, stop, num = args.alpha_range
        if num != int(num) or num < 2:
            raise ValueError(f"--alpha-range NUM must be an integer >= 2, got {num:g}")
        alphas = np.linspace(start, stop, int(num))
    else:
        alphas = np.asarray(args.alpha, dtype=float)
    config = {"prior": args.prior, "channel": args.channel, "alphas": alphas.tolist()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / BAYES_OPTIMAL
    json_path, _ = amp_io.paths(path)
    if json_path.exists():
        saved = amp_io.load_result(json_path)
        if saved.config == config:
            print(f"{json_path} holds this result already; loading it")
            _report_bayes_optimal(saved.result, args.out)
            return 0
        if not args.force:
            raise sweep.ConfigMismatch(f"{json_path} holds a result of another configuration ({saved.config}); "
                                       "use another folder, or --force to replace it")
    prior, channel = specs.parse(args.prior, "prior")[0], specs.parse(args.channel, "channel")[0]
    print(f"computing the Bayes-optimal SE at {alphas.size} alphas...", file=sys.stderr)
    result = bayes_optimal(prior, channel, alphas)
    amp_io.save_result(result, path, config=config, overwrite=args.force)
    _report_bayes_optimal(result, args.out)
    return 0


def _report_bayes_optimal(bo, folder):
    print(f"transition: {bo.transition}; alpha_weak = {bo.alpha_weak}, alpha_alg = {bo.alpha_alg}, "
          f"alpha_it = {bo.alpha_it}")
    print(f"{'alpha':>8} {'MSE':>11} {'gen error':>11} {'branch':>14}")
    for a, m, g, b in zip(bo.alphas, bo.mse, bo.gen_error, bo.bayes_branch):
        print(f"{a:>8.4g} {m:>11.4g} {g:>11.4g} {b:>14}")
    print(f"wrote {_save_figure(bayes_optimal_curve(bo), folder / (BAYES_OPTIMAL + '.png'))}")


def _amp_points(saved_bo, folder):
    """(alphas, final mse (n_alphas, n_runs)) of a run in `folder` with the same prior and channel, or None."""
    if not (folder / "config.json").exists():
        return None
    result = sweep.load_sweep(folder)
    config = saved_bo.config
    if not result.amp or (result.config.prior, result.config.channel) != (config["prior"], config["channel"]):
        return None
    alphas = sorted({a for a, _ in result.amp})
    runs = min(len(result.runs(a)) for a in alphas)
    return alphas, [[r.history["mse"][-1] for r in result.runs(a)[:runs]] for a in alphas]


def _plot_command(args):
    folder = args.folder
    drawn = []
    if (folder / "config.json").exists():
        drawn.append(_save_figure(sweep_figure(sweep.load_sweep(folder), key=args.key), folder / SWEEP_FIGURE))
    json_path, _ = amp_io.paths(folder / BAYES_OPTIMAL)
    if json_path.exists():
        saved = amp_io.load_result(json_path)
        fig = bayes_optimal_curve(saved.result, key=args.key, amp_points=_amp_points(saved, folder))
        drawn.append(_save_figure(fig, folder / (BAYES_OPTIMAL + ".png")))
    if not drawn:
        raise ValueError(f"{folder} holds no results of {PROG} (no config.json nor {BAYES_OPTIMAL}.json)")
    for path in drawn:
        print(f"wrote {path}")
    return 0


def main(argv=None):
    """Entry point of the amp-toolkit console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in ("run", "se"):
            return _sweep_command(args, amp_run=args.command == "run")
        if args.command == "bayes-optimal":
            return _bayes_optimal_command(args)
        return _plot_command(args)
    except (ValueError, FileExistsError) as err:
        parser.exit(2, f"{PROG} {args.command}: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
