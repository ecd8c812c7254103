"""A PNG of a candidate's reward difference against the control and its confidence sequence
over time (matplotlib, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from routewise.controller.experiments.sequential import ComparisonHistory

__all__ = ["plot_confidence_sequence"]


def plot_confidence_sequence(
    history: ComparisonHistory, path: str | Path, *, title: str | None = None
) -> None:
    """Write a PNG of the reward difference (candidate − control) and its confidence
    sequence over the number of observations (matplotlib, Agg canvas, no pyplot state)."""
    from matplotlib.figure import Figure

    pts = history.points
    if history.last is not None and (not pts or pts[-1] != history.last):
        pts.append(history.last)
    fig = Figure(figsize=(9, 4.8), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.axhline(0.0, color="0.3", lw=0.8, ls="--")
    if pts:
        arr = np.asarray(pts, dtype=np.float64)
        n = arr[:, 0] + arr[:, 1]
        ax.fill_between(
            n, arr[:, 3], arr[:, 4], color="tab:blue", alpha=0.25, lw=0, label="confidence sequence"
        )
        ax.plot(n, np.maximum.accumulate(arr[:, 3]), color="tab:blue", lw=0.8, ls=":")
        ax.plot(
            n,
            np.minimum.accumulate(arr[:, 4]),
            color="tab:blue",
            lw=0.8,
            ls=":",
            label="running intersection",
        )
        ax.plot(n, arr[:, 2], color="tab:blue", lw=1.5, label="difference in mean reward")
        lo, hi = np.percentile(arr[:, 3], 5), np.percentile(arr[:, 4], 95)
        pad = 0.1 * (hi - lo) if hi > lo else 0.1
        ax.set_ylim(min(lo, 0.0) - pad, max(hi, 0.0) + pad)
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(
            0.5,
            0.5,
            "no confidence sequence yet (burn-in)",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("observations (control + candidate)")
    ax.set_ylabel("reward difference (candidate − control)")
    ax.set_title(title or f"always-valid p = {history.min_p_value:.3g}")
    ax.grid(alpha=0.3)
    fig.savefig(Path(path))
