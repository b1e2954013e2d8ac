"""Report figures drawn with matplotlib (Agg backend, no display), as SVG or PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def _render(fig: Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, bbox_inches="tight", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def posteriors(densities: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str, metric: str,
               fmt: str) -> bytes:
    """Posterior density of each variant's rate (or revenue per visitor)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for key, (x, density) in densities.items():
        ax.plot(x, density, label=key)
        ax.fill_between(x, density, alpha=0.15)
    ax.set_title(f"Posterior of {metric} per visitor — {title}")
    ax.set_xlabel(metric)
    ax.set_ylabel("density")
    ax.legend(frameon=False)
    return _render(fig, fmt)


def uplift(rows: Sequence[Mapping[str, Any]], title: str, metric: str, fmt: str) -> bytes:
    """Forest plot: absolute uplift over control with 95% intervals."""
    shown = [r for r in rows if r.get("uplift")]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * max(len(shown), 1)))
    for i, r in enumerate(shown):
        a = r["uplift"]["absolute"]
        colour = "tab:green" if a["lower"] > 0 else "tab:red" if a["upper"] < 0 else "tab:gray"
        ax.plot([a["lower"], a["upper"]], [i, i], color=colour, linewidth=3)
        ax.plot([a["estimate"]], [i], "o", color="black")
        ax.annotate(f"P(beats control) {r['chance_to_beat_control']:.0%}",
                    (a["upper"], i), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(shown)), [r["key"] for r in shown])
    ax.set_xlabel(f"absolute uplift in {metric} over control (95% interval)")
    ax.set_title(title)
    return _render(fig, fmt)


def allocation(series: Sequence[Mapping[str, Any]], variants: Sequence[str], title: str,
               fmt: str) -> bytes:
    """Share of new visitors per variant in each allocation epoch (stacked areas)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if series:
        starts = [float(s["start"]) for s in series]
        # Repeat the last epoch at its end so that it shows as a step, not a line.
        width = starts[1] - starts[0] if len(starts) > 1 else 3600.0
        edges = [*starts, starts[-1] + width]
        times = mdates.date2num([datetime.fromtimestamp(t, UTC) for t in edges])
        totals = np.array([max(sum(s["exposures"].values()), 1) for s in series], dtype=float)
        shares = [np.array([s["exposures"][v] for s in series]) / totals for v in variants]
        shares = [np.append(x, x[-1]) for x in shares]
        ax.stackplot(times, shares, labels=list(variants), alpha=0.85, step="post")
        ax.xaxis_date()
        ax.set_ylim(0, 1)
        ax.legend(frameon=False, loc="upper left", fontsize=8)
        fig.autofmt_xdate()
    ax.set_ylabel("share of new visitors")
    ax.set_title(f"Traffic allocation over time — {title}")
    return _render(fig, fmt)
