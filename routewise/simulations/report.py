"""Simulation reports: ``results.json`` and PNG plots (matplotlib, Agg canvas, no pyplot).

Files written by :func:`write_report` into the output directory:

* ``results.json`` — :meth:`~routewise.simulations.SimulationResult.to_dict` (summary, baselines, per-run curves);
* ``regret.png`` — cumulative regret over time per policy (mean ± sd over seeds), with the
  best fixed arm (in hindsight) and uniform random as exact references;
* ``arm_share.png`` — the share of traffic each arm gets over time, one panel per policy plus
  the oracle's own choices, with scenario events and Guardian quarantines marked;
* ``reward.png`` — mean expected reward over time per policy against the oracle.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from routewise.errors import ConfigError
from routewise.reward import Scalarizer
from routewise.simulations.policies import PolicySpec
from routewise.simulations.records import RunRecord
from routewise.simulations.scenario import Event, Scenario

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["SimulationReport", "arm_colors", "write_report"]

_BACKEND_HUES = [0.58, 0.08, 0.33, 0.83, 0.0, 0.15, 0.5, 0.7]
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


class SimulationReport(Protocol):
    """What a report reads from a simulation's result.

    :class:`~routewise.simulations.SimulationResult` is one (it writes itself with this
    module, so the report names the fields it reads instead of importing the result type).

    Examples
    --------
    >>> from routewise.simulations import load_scenario, simulate
    >>> result: SimulationReport = simulate(load_scenario("stationary"), ["uniform"], rounds=50)
    >>> [spec.name for spec in result.policies], len(result.runs["uniform"])
    (['uniform'], 1)
    """

    @property
    def scenario(self) -> Scenario: ...
    @property
    def arms(self) -> list[str]: ...
    @property
    def reward(self) -> Scalarizer: ...
    @property
    def rounds(self) -> int: ...
    @property
    def seeds(self) -> list[int]: ...
    @property
    def policies(self) -> list[PolicySpec]: ...
    @property
    def runs(self) -> dict[str, list[RunRecord]]: ...
    @property
    def events(self) -> list[tuple[int, Event]]: ...
    @property
    def guardian(self) -> bool: ...

    def baselines(self) -> dict[str, Any]:
        """The oracle's mean reward and the best fixed arm in hindsight."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable results (what ``results.json`` holds)."""
        ...


def arm_colors(arms: list[str]) -> dict[str, tuple[float, float, float]]:
    """One hue per backend, one lightness per mode, so related arms read as a family.

    Examples
    --------
    >>> c = arm_colors(["a:x/direct_emit", "a:x/transport_compressed", "b:y/direct_emit"])
    >>> len(set(c.values()))
    3
    """
    backends: list[str] = []
    for a in arms:
        b = a.rpartition("/")[0] or a
        if b not in backends:
            backends.append(b)
    out: dict[str, tuple[float, float, float]] = {}
    shades = {"direct_emit": 0.35, "transport_compressed": 0.55, "local_reconstructed": 0.75}
    for a in arms:
        b, _, mode = a.rpartition("/")
        hue = _BACKEND_HUES[backends.index(b or a) % len(_BACKEND_HUES)]
        light = shades.get(mode, 0.5)
        out[a] = colorsys.hls_to_rgb(hue, light, 0.65)
    return out


def _mark_events(ax: Axes, events: list[tuple[int, str]], *, labels: bool) -> None:
    for r, text in events:
        ax.axvline(r, color="0.2", linestyle=":", linewidth=1.2)
        if labels:
            ax.annotate(
                text,
                xy=(r, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                va="top",
                ha="left",
                fontsize=8,
                color="0.15",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.7", "alpha": 0.85},
            )


def write_report(result: SimulationReport, out: Path) -> dict[str, Path]:
    """Write ``results.json``, ``regret.png``, ``arm_share.png`` and ``reward.png`` into ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("out", f"cannot create directory {str(out)!r} ({exc.strerror})") from None
    paths = {
        "results": out / "results.json",
        "regret": out / "regret.png",
        "arm_share": out / "arm_share.png",
        "reward": out / "reward.png",
    }
    paths["results"].write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
    _plot_regret(result, paths["regret"])
    _plot_arm_share(result, paths["arm_share"])
    _plot_reward(result, paths["reward"])
    return paths


def _title(result: SimulationReport) -> str:
    g = "" if result.guardian else ", Guardian off"
    return (
        f"scenario {result.scenario.name!r} — {result.rounds:,} rounds × {len(result.seeds)} "
        f"seed(s), reward {result.reward.name}{g}"
    )


def _events(result: SimulationReport) -> list[tuple[int, str]]:
    return [(r, e.describe()) for r, e in result.events]


def _plot_regret(result: SimulationReport, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    first = result.runs[result.policies[0].name]
    edges = np.asarray(first[0].bin_edges)
    x = edges[1:]
    sizes = np.diff(edges)
    # exact references, from the first policy's runs (every policy sees the same requests)
    fixed, unif = [], []
    for run in first:
        arm_bin = np.asarray(run.arm_expected_per_bin) * sizes[:, None]
        oracle = np.asarray(run.oracle_per_bin) * sizes
        best = int(np.argmax(arm_bin.sum(axis=0)))
        fixed.append(np.cumsum(oracle - arm_bin[:, best]))
        unif.append(np.cumsum(oracle - arm_bin.mean(axis=1)))
    ax.plot(
        x,
        np.mean(fixed, axis=0),
        color="0.35",
        linestyle="--",
        linewidth=1.5,
        label=f"best fixed arm, hindsight ({result.baselines()['best_fixed_arm']})",
    )
    ax.plot(
        x,
        np.mean(unif, axis=0),
        color="0.6",
        linestyle="-.",
        linewidth=1.2,
        label="uniform random (expected)",
    )
    for i, spec in enumerate(result.policies):
        curves = np.asarray([r.regret_curve for r in result.runs[spec.name]])
        mean = curves.mean(axis=0)
        color = _PALETTE[i % len(_PALETTE)]
        ax.plot(x, mean, color=color, linewidth=2.0, label=spec.name)
        if curves.shape[0] > 1:
            sd = curves.std(axis=0, ddof=1)
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.18, linewidth=0)
    _mark_events(ax, _events(result), labels=True)
    ax.set_xlim(0, result.rounds)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative regret vs per-request oracle (exact, expected reward)")
    ax.set_title("Cumulative regret (mean ± 1 sd over seeds)\n" + _title(result), fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.93), fontsize=9, framealpha=0.9)
    fig.savefig(path)


def _plot_arm_share(result: SimulationReport, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    arms = result.arms
    colors = arm_colors(arms)
    panels: list[tuple[str, np.ndarray[Any, Any], list[int]]] = []
    first = result.runs[result.policies[0].name]
    oracle = np.sum([np.asarray(r.oracle_counts, dtype=np.float64) for r in first], axis=0)
    panels.append(("oracle (best arm per request)", oracle, []))
    for spec in result.policies:
        runs = result.runs[spec.name]
        counts = np.sum([np.asarray(r.arm_counts, dtype=np.float64) for r in runs], axis=0)
        quarantines = sorted(
            {e["round"] for r in runs for e in r.guardian_events if e["to"] == "quarantined"}
        )
        panels.append((spec.name, counts, quarantines))
    edges = np.asarray(first[0].bin_edges)
    fig = Figure(figsize=(12, 1.9 * len(panels) + 1.6), dpi=100, layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, counts, quarantines) in zip(axes, panels, strict=True):
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        ax.stackplot(
            edges,
            np.vstack([share, share[-1:]]).T,
            step="post",
            colors=[colors[a] for a in arms],
            linewidth=0,
        )
        ax.set_ylim(0, 1)
        ax.set_xlim(0, result.rounds)
        ax.set_ylabel("share")
        ax.set_title(name, fontsize=10, loc="left")
        _mark_events(ax, _events(result), labels=ax is axes[0])
        if quarantines:
            ax.plot(
                quarantines,
                [1.0] * len(quarantines),
                marker="v",
                linestyle="none",
                color="black",
                markersize=5,
                clip_on=False,
                label=f"Guardian quarantine ({len(quarantines)})",
            )
            ax.legend(loc="lower right", fontsize=8, framealpha=0.85)
    axes[-1].set_xlabel("round")
    handles = [Patch(color=colors[a], label=a) for a in arms]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="arm")
    fig.suptitle(
        "Traffic share per arm over time (summed over seeds)\n" + _title(result), fontsize=11
    )
    fig.savefig(path)


def _plot_reward(result: SimulationReport, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    first = result.runs[result.policies[0].name]
    edges = np.asarray(first[0].bin_edges)
    mids = (edges[:-1] + edges[1:]) / 2
    oracle = np.mean([r.oracle_per_bin for r in first], axis=0)
    ax.plot(mids, oracle, color="black", linewidth=1.5, linestyle="--", label="oracle")
    for i, spec in enumerate(result.policies):
        curve = np.mean([r.expected_per_bin for r in result.runs[spec.name]], axis=0)
        ax.plot(mids, curve, color=_PALETTE[i % len(_PALETTE)], linewidth=1.6, label=spec.name)
    _mark_events(ax, _events(result), labels=True)
    ax.set_xlim(0, result.rounds)
    ax.set_xlabel("round")
    ax.set_ylabel(f"mean expected reward per {int(np.diff(edges).mean()):,} rounds")
    ax.set_title("Expected reward of the chosen arms over time\n" + _title(result), fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9, framealpha=0.9)
    fig.savefig(path)
