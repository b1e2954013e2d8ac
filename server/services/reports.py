"""Building reports and plots of an experiment from its Redis counters."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from typing import Any

import numpy as np

from experiments.model import Experiment
from experiments.report import (
    CSV_COLUMNS,
    ReportOptions,
    build_report,
    csv_rows,
    posterior_densities,
    segment_allocation,
)
from server.errors import InvalidInput
from server.schemas import EXPERIMENT_KEY
from server.services.experiments import ExperimentService
from server.stores.counters import CounterStore

PLOTS = ("posteriors", "uplift", "allocation", "cumulative", "segments", "daily")
CUMULATIVE_POINTS = 12  # reports built for the cumulative-uplift figure, at most
DAY = 86400.0


def _rng(experiment: Experiment) -> np.random.Generator:
    # Seeded by the experiment: the same counters always give the same report.
    return np.random.default_rng(int(experiment.seed or "0", 16))


class ReportService:
    """Reads cells and turns them into the report, its CSV and its plots."""

    def __init__(self, experiments: ExperimentService, counters: CounterStore,
                 epoch_seconds: float, max_segments: int = 64) -> None:
        self.experiments = experiments
        self.counters = counters
        self.options = ReportOptions(epoch_seconds=epoch_seconds)
        self.max_segments = max_segments

    def report(self, key: str) -> dict[str, Any]:
        """The JSON report of one experiment."""
        e = self.experiments.get(key)
        return self._report(e, self.counters.read_cells(e))

    def _report(self, e: Experiment, cells: dict[Any, Any]) -> dict[str, Any]:
        report = build_report(e, cells, _rng(e), self.options)
        folded = any(s["persona"] == "other" and s["channel"] == "other"
                     for s in report.get("segments", []))
        report["segment_cap"] = {
            "limit": self.max_segments,
            "reached": folded,
            "text": (f"This experiment reached its cap of {self.max_segments} persona x "
                     "channel segments: later traffic of further segments is counted in "
                     "segment other / other." if folded else
                     f"At most {self.max_segments} persona x channel segments are tracked "
                     "per experiment; none was folded into other / other."),
        }
        return report

    def overview(self, key: str, now: float) -> dict[str, Any]:
        """The report with the exposures in total and on the current UTC day (one read)."""
        e = self.experiments.get(key)
        cells = self.counters.read_cells(e)
        days = self._days(cells)
        today = now // DAY * DAY
        return {"report": self._report(e, cells),
                "exposures": sum(n for _, n in days),
                "today": sum(n for day, n in days if day >= today)}

    def csv(self, key: str) -> str:
        """The report's variant rows as CSV."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_rows(self.report(key)))
        return out.getvalue()

    def plot(self, key: str, name: str, fmt: str, persona: str | None,
             channel: str | None) -> bytes:
        """One figure (posteriors, uplift or allocation) as SVG or PNG bytes."""
        if name not in PLOTS:
            raise InvalidInput(f"unknown plot '{name}'", {"name": f"one of {', '.join(PLOTS)}"})
        if fmt not in ("svg", "png"):
            raise InvalidInput(f"unknown format '{fmt}'", {"format": "svg or png"})
        if (persona is None) != (channel is None):
            raise InvalidInput("give both persona and channel, or neither",
                               {"persona" if persona is None else "channel": "missing"})
        for field, value in (("persona", persona), ("channel", channel)):
            if value is not None and not EXPERIMENT_KEY.match(value):  # the same names
                raise InvalidInput(f"invalid {field}", {field: "must match "
                                                                "[a-z0-9][a-z0-9_-]{0,63}"})
        from server import plots  # matplotlib is heavy: load it only for a valid plot request

        e = self.experiments.get(key)
        cells = self.counters.read_cells(e)
        title = e.name if persona is None else f"{e.name} — {persona} / {channel}"
        if name == "posteriors":
            densities = posterior_densities(e, cells, _rng(e), persona, channel)
            return plots.posteriors(densities, title, e.metric.name, fmt)
        if name == "allocation":
            if persona is None:
                series = build_report(e, cells, _rng(e), self.options)["allocation"]
            else:
                assert channel is not None
                series = segment_allocation(e, cells, self.options.epoch_seconds, persona,
                                            channel)
            return plots.allocation(series, e.variant_keys, title, fmt)
        if name == "daily":
            return plots.daily(self._days(cells), fmt)
        if name == "cumulative":
            return plots.cumulative(self._cumulative(e, cells, persona, channel),
                                    e.variant_keys, title, e.metric.name, fmt)
        report = build_report(e, cells, _rng(e), self.options)
        if name == "segments":
            return plots.segments([_leader(s) for s in report["segments"]], title, fmt)
        rows = report["variants"]
        if persona is not None:
            rows = next((s["variants"] for s in report["segments"]
                         if s["persona"] == persona and s["channel"] == channel), [])
        return plots.uplift(rows, title, e.metric.name, fmt)


    def _days(self, cells: dict[Any, Any]) -> list[tuple[float, int]]:
        """Exposures per UTC day, holdout included."""
        per_day: dict[float, int] = {}
        for (_, _, _, _, epoch), cell in cells.items():
            day = (epoch * self.options.epoch_seconds) // DAY * DAY
            per_day[day] = per_day.get(day, 0) + cell.exposures
        return sorted(per_day.items())

    def _cumulative(self, e: Experiment, cells: dict[Any, Any], persona: str | None,
                    channel: str | None) -> list[dict[str, Any]]:
        """The report's uplift intervals on the data up to each of a dozen epochs."""
        if persona is not None:
            cells = {k: v for k, v in cells.items() if k[1] == persona and k[2] == channel}
        epochs = sorted({k[4] for k in cells})
        step = max(1, -(-len(epochs) // CUMULATIVE_POINTS))
        cuts = epochs[step - 1::step]
        if epochs and cuts[-1] != epochs[-1]:
            cuts.append(epochs[-1])
        # Fewer draws than the report: the figure shows the trend, the report the figures.
        options = replace(self.options, draws=4_000, segment_draws=20)
        points = []
        for cut in cuts:
            subset = {k: v for k, v in cells.items() if k[4] <= cut}
            variants = build_report(e, subset, _rng(e), options)["variants"]
            points.append({"end": (cut + 1) * self.options.epoch_seconds,
                           "uplift": {v["key"]: v["uplift"]["absolute"]
                                      for v in variants if v["uplift"]}})
        return points


def _leader(segment: dict[str, Any]) -> dict[str, Any]:
    """A segment's most likely best variant and its chance to be best."""
    seen = [v for v in segment["variants"] if v["chance_to_be_best"] is not None]
    best = max(seen, key=lambda v: v["chance_to_be_best"], default=None)
    return {"persona": segment["persona"], "channel": segment["channel"],
            "leader": best["key"] if best else None,
            "chance": best["chance_to_be_best"] if best else 0.0}
