"""Recording outcomes exactly once and crediting them to open assignments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from experiments.model import Status
from server.services.catalog import Catalog, Snapshot
from server.stores.visitors import Candidate, TrackCall, VisitorStore


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


class OutcomeService:
    """Turns events into one track script each, all sent in one round trip."""

    def __init__(self, catalog: Catalog, visitors: VisitorStore, clock: Callable[[], float],
                 dedupe_seconds: float, ttl_seconds: float) -> None:
        self.catalog = catalog
        self.visitors = visitors
        self.clock = clock
        self.dedupe_ms = int(dedupe_seconds * 1000)
        self.ttl_ms = int(ttl_seconds * 1000)

    def track(self, events: list[TrackEvent]) -> TrackResult:
        """Record events; duplicates (same visitor and event id) are acknowledged, not counted."""
        snapshot = self.catalog.snapshot()
        now_ms = int(self.clock() * 1000)
        by_metric = _candidates_by_metric(snapshot)
        calls = [
            TrackCall(
                visitor_id=ev.visitor_id,
                event_id=ev.event_id,
                metric=ev.metric,
                value=ev.value if ev.value is not None else 0.0,
                # A stamp from the future is taken as now, so it cannot open a window early.
                at_ms=min(ev.timestamp_ms, now_ms) if ev.timestamp_ms is not None else now_ms,
                candidates=by_metric.get(ev.metric, ()),
            )
            for ev in events
        ]
        results = self.visitors.track(calls, now_ms, self.dedupe_ms, self.ttl_ms)
        accepted = duplicates = 0
        attributed: list[Attribution] = []
        for ev, credited in zip(events, results, strict=True):
            if credited is None:
                duplicates += 1
                continue
            accepted += 1
            attributed += [Attribution(ev.event_id, exp, variant) for exp, variant in credited]
        return TrackResult(accepted, duplicates, tuple(attributed))


def _candidates_by_metric(snapshot: Snapshot) -> dict[str, tuple[Candidate, ...]]:
    index: dict[str, list[Candidate]] = {}
    for e in snapshot.experiments.values():
        if e.status is Status.DRAFT:
            continue
        window_ms = int(e.attribution_window_hours * 3600 * 1000)
        for m in e.metrics:
            index.setdefault(m.name, []).append(Candidate(e.key, e.seed, m.kind.value, window_ms))
    return {name: tuple(c) for name, c in index.items()}
