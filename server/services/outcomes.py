"""Recording outcomes exactly once and crediting them to open assignments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from experiments.model import Status
from server.services.catalog import Catalog, Snapshot
from server.stores.visitors import STALE, Candidate, TrackCall, VisitorStore


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """A validated outcome event."""

    visitor_id: str
    metric: str
    event_id: str
    value: float | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Attribution:
    """One assignment an event was credited to."""

    event_id: str
    experiment: str
    variant: str


@dataclass(frozen=True, slots=True)
class TrackResult:
    """Counts of new and repeated events, and where they were credited."""

    accepted: int
    duplicates: int
    attributed: tuple[Attribution, ...]


# Server clocks of several hosts differ by a little; caller clocks by more.
SERVER_SKEW_MS = 1000


class OutcomeService:
    """Turns events into one track script each, all sent in one round trip."""

    def __init__(self, catalog: Catalog, visitors: VisitorStore, clock: Callable[[], float],
                 clock_skew_seconds: float) -> None:
        self.catalog = catalog
        self.visitors = visitors
        self.clock = clock
        self.caller_skew_ms = int(clock_skew_seconds * 1000)

    def track(self, events: list[TrackEvent]) -> TrackResult:
        """Record events; repeats of a (visitor, event id) are acknowledged, not counted."""
        now_ms = int(self.clock() * 1000)
        results = self._run(self.catalog.snapshot(), events, now_ms, strict=True)
        stale = [i for i, r in enumerate(results) if r == STALE]
        if stale:
            # This worker's definitions are older than an assignment the visitor holds:
            # read them again and rerun just those events (nothing was written for them).
            retried = self._run(self.catalog.fresh(), [events[i] for i in stale], now_ms,
                                strict=False)
            for i, r in zip(stale, retried, strict=True):
                results[i] = r
        accepted = duplicates = 0
        attributed: list[Attribution] = []
        for ev, credited in zip(events, results, strict=True):
            if credited is None:
                duplicates += 1
            elif isinstance(credited, list):
                accepted += 1
                attributed += [Attribution(ev.event_id, exp, v) for exp, v in credited]
        return TrackResult(accepted, duplicates, tuple(attributed))

    def _run(self, snapshot: Snapshot, events: list[TrackEvent], now_ms: int,
             strict: bool) -> list[list[tuple[str, str]] | str | None]:
        by_metric: dict[str, tuple[Candidate, ...]] = {}
        calls = []
        for ev in events:
            if ev.metric not in by_metric:
                by_metric[ev.metric] = _candidates(snapshot, ev.metric)
            stamped = ev.timestamp_ms is not None
            calls.append(TrackCall(
                visitor_id=ev.visitor_id,
                event_id=ev.event_id,
                metric=ev.metric,
                value=ev.value if ev.value is not None else 0.0,
                # A stamp from the future is taken as now, so it cannot open a window early.
                at_ms=min(ev.timestamp_ms, now_ms) if ev.timestamp_ms is not None else now_ms,
                skew_ms=self.caller_skew_ms if stamped else SERVER_SKEW_MS,
                candidates=by_metric[ev.metric],
            ))
        return self.visitors.track(calls, now_ms, strict)


def _candidates(snapshot: Snapshot, metric: str) -> tuple[Candidate, ...]:
    """Every experiment that can hold assignments, with the kind it counts `metric` as."""
    out = []
    for e in snapshot.experiments.values():
        if e.status is Status.DRAFT:
            continue  # never started, so no assignments
        kind = next((m.kind.value for m in e.metrics if m.name == metric), "")
        out.append(Candidate(e.key, e.seed, kind, int(e.attribution_window_hours * 3600_000)))
    return tuple(out)
