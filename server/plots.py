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

# Titles carry experiment names and segment names people chose: a "$" must stay a dollar
# sign, never start TeX maths (which a stray one makes fail, for every reader of the figure).
matplotlib.rcParams["text.parse_math"] = False


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


def cumulative(points: Sequence[Mapping[str, Any]], variants: Sequence[str], title: str,
               metric: str, fmt: str) -> bytes:
    """Each treatment's absolute uplift over control, as the data arrived (95% bands)."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if points:
        times = mdates.date2num([datetime.fromtimestamp(float(p["end"]), UTC) for p in points])
        for key in variants:
            series = [p["uplift"].get(key) for p in points]
            if not any(series):
                continue
            est = np.array([s["estimate"] if s else np.nan for s in series])
            lo = np.array([s["lower"] if s else np.nan for s in series])
            hi = np.array([s["upper"] if s else np.nan for s in series])
            (line,) = ax.plot(times, est, marker="o", markersize=3, label=key)
            ax.fill_between(times, lo, hi, color=line.get_color(), alpha=0.15)
        if len(times) == 1:  # one point: an hour either side, not matplotlib's years
            ax.set_xlim(times[0] - 1 / 24, times[0] + 1 / 24)
        ax.xaxis_date()
        fig.autofmt_xdate()
        ax.legend(frameon=False, fontsize=8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"uplift in {metric} over control")
    ax.set_title(f"Cumulative uplift — {title}")
    return _render(fig, fmt)


def segments(rows: Sequence[Mapping[str, Any]], title: str, fmt: str) -> bytes:
    """Heat map of persona x channel: each segment's leader and its chance to be best."""
    personas = sorted({r["persona"] for r in rows})
    channels = sorted({r["channel"] for r in rows})
    grid = np.full((max(len(personas), 1), max(len(channels), 1)), np.nan)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * max(len(channels), 1),
                                    0.8 + 0.5 * max(len(personas), 1)))
    for r in rows:
        i, j = personas.index(r["persona"]), channels.index(r["channel"])
        if r["leader"] is not None:
            grid[i, j] = r["chance"]
            ax.text(j, i, f"{r['leader']}\n{r['chance']:.0%}", ha="center", va="center",
                    fontsize=8, color="white" if r["chance"] > 0.6 else "black")
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(channels)), channels)
    ax.set_yticks(range(len(personas)), personas)
    fig.colorbar(image, ax=ax, label="leader's chance to be best")
    ax.set_title(f"Leader per persona and channel — {title}", fontsize=10)
    return _render(fig, fmt)


def daily(days: Sequence[tuple[float, int]], fmt: str) -> bytes:
    """A small bar chart of exposures per day (the experiments list)."""
    fig, ax = plt.subplots(figsize=(2.4, 0.7))
    if days:
        times = mdates.date2num([datetime.fromtimestamp(t, UTC) for t, _ in days])
        ax.bar(times, [n for _, n in days], width=0.8, color="tab:blue")
        ax.xaxis_date()
    ax.set_axis_off()
    return _render(fig, fmt)


def planning(decided: Mapping[str, Sequence[int | None]],
             lost_by_day: Mapping[str, Sequence[float] | np.ndarray], title: str,
             fmt: str) -> bytes:
    """`centric simulate`: runs decided by each day, and mean cumulative lost conversions.

    Both mappings are keyed by the mode's name: the decision day of every run (None when it
    did not decide) and the mean lost conversions at the end of every day.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, days_of_runs in decided.items():
        lost = np.asarray(lost_by_day[name], dtype=float)
        days = np.arange(1, len(lost) + 1)
        runs = max(len(days_of_runs), 1)
        when = np.array([d for d in days_of_runs if d is not None], dtype=float)
        left.step(days, [np.sum(when <= d) / runs for d in days], where="post", label=name)
        right.plot(days, lost, label=name)
    left.set_title("Experiments decided by day")
    left.set_xlabel("day")
    left.set_ylabel("share of the simulated runs")
    left.set_ylim(0, 1.02)
    left.legend(frameon=False)
    right.set_title("Lost conversions (mean over the runs)")
    right.set_xlabel("day")
    right.set_ylabel("cumulative lost conversions")
    right.legend(frameon=False)
    fig.suptitle(title, fontsize=10)
    return _render(fig, fmt)
