"""Figures of AMP runs against their state evolution (matplotlib, no display needed)."""
import numpy as np


def amp_vs_se(amp_histories, se_history, key="mse", ax=None, label=None):
    """Per-iteration `key` of AMP runs (mean and spread over runs) against the SE curve.

    amp_histories : list of history dicts (one per run); se_history : history dict of the SE.
    Returns the matplotlib Figure.
    """
    fig, ax = _figure(ax)
    curve = np.asarray(se_history[key], dtype=float)
    ax.plot(np.arange(curve.size), curve, "-", color="k", label="state evolution")
    length = min(len(h[key]) for h in amp_histories)
    runs = np.array([h[key][:length] for h in amp_histories], dtype=float)
    spread = runs.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(length)
    ax.errorbar(np.arange(length), runs.mean(axis=0), yerr=spread, fmt="o", ms=4, capsize=2,
                label=f"AMP, {len(runs)} run(s)")
    ax.set_xlabel("iteration t")
    ax.set_ylabel(key)
    ax.set_yscale("log" if np.all(curve > 0) and curve.max() / max(curve.min(), 1e-300) > 50 else "linear")
    ax.set_title(label or "")
    ax.legend()
    fig.tight_layout()
    return fig


def bayes_optimal_curve(bo, key="mse", amp_points=None, ax=None, title=None):
    """Error against alpha: the Bayes-optimal curve, both SE branches, the thresholds, AMP points.

    bo : result of `state_evolution.bayes_optimal`; key : 'mse' or 'gen_error';
    amp_points : optional (alphas, values) with values (n_alphas, n_runs), shown as mean and spread.
    Returns the matplotlib Figure.
    """
    fig, ax = _figure(ax)
    ax.plot(*_broken(bo.alphas, getattr(bo.uninformative, key)), "--", color="tab:blue",
            label="SE from uninformative start")
    ax.plot(*_broken(bo.alphas, getattr(bo.informative, key)), ":", color="tab:green", label="SE from informative start")
    ax.plot(*_broken(bo.alphas, getattr(bo, key)), "-", color="k", lw=1.5, label="Bayes-optimal")
    for name, style in (("alpha_weak", "tab:gray"), ("alpha_it", "tab:red"), ("alpha_alg", "tab:purple")):
        value = getattr(bo, name)
        if value is not None:
            ax.axvline(value, color=style, lw=0.8, alpha=0.7)
            ax.annotate(f"{name.replace('alpha_', '')} = {value:.3f}", (value, ax.get_ylim()[1]),
                        rotation=90, va="top", ha="right", fontsize=7, color=style)
    if amp_points is not None:
        alphas, values = np.asarray(amp_points[0], dtype=float), np.asarray(amp_points[1], dtype=float)
        spread = values.std(axis=1, ddof=1) if values.shape[1] > 1 else np.zeros(len(alphas))
        ax.errorbar(alphas, values.mean(axis=1), yerr=spread, fmt="o", ms=4, capsize=2, color="tab:orange",
                    label=f"AMP ({values.shape[1]} runs)")
    ax.set_xlabel("alpha = n / d")
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(title or "")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _broken(x, y, jump=0.2):
    """x, y with NaN inserted where y jumps by more than `jump` of its range (a first-order
    transition between grid points), so the line is not drawn across it."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    span = np.nanmax(y) - np.nanmin(y)
    cuts = np.nonzero(np.abs(np.diff(y)) > jump * span)[0] + 1 if span > 0 else np.array([], dtype=int)
    return np.insert(x, cuts, np.nan), np.insert(y, cuts, np.nan)


def _figure(ax):
    """(Figure, Axes): a new 6 x 4 figure without a display, or the figure of `ax`."""
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt  # headless machines fall back to Agg by themselves
    return plt.subplots(figsize=(6, 4))


def save_figure(fig, path):
    """Lay out `fig`, write it to `path` (parent folders made) and say so on stdout."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
