"""Figures of AMP runs against their state evolution (matplotlib, no display needed)."""
import numpy as np


def amp_vs_se(amp_histories, se_history, key="mse", ax=None, label=None):
    """Per-iteration `key` of AMP runs (mean and spread over runs) against the SE curve.

    amp_histories : list of history dicts (one per run); se_history : history dict of the SE.
    Returns the matplotlib Figure.
    """
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
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
