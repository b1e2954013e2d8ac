"""Recording outcomes exactly once and crediting them to open assignments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from experiments.model import Status
from server import identities
from server.services.catalog import Catalog, Snapshot
from server.stores.counters import learning_fade
from server.stores.visitors import (
    STALE,
    Candidate,
    ExposeEntry,
    ExposeOutcome,
    TrackCall,
    VisitorStore,
)


@dataclass(frozen=True, slots=True)
class TrackEvent:
    """A validated outcome event."""

    visitor_id: str
    metric: str
    event_id: str
    value: float | None = None
    timestamp_ms: int | None = None
    age: float | None = None  # seconds since the event, by the sender's clock
    id_type: str = identities.VISITOR


@dataclass(frozen=True, slots=True)
class Exposure:
    """A decision the caller says it showed."""

    experiment: str
    decision_id: str


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

    def expose(self, visitor_id: str, id_type: str, exposures: list[Exposure]) -> ExposeOutcome:
        """Count the exposures of decisions the caller showed (each once)."""
        snapshot = self.catalog.snapshot()
        if any(x.experiment not in snapshot.experiments for x in exposures):
            snapshot = self.catalog.fresh()  # perhaps created since the last refresh
        entries = [ExposeEntry(x.experiment, snapshot.experiments[x.experiment].seed,
                               x.decision_id, learning_fade(snapshot.experiments[x.experiment]))
                   for x in exposures if x.experiment in snapshot.experiments]
        unknown = len(exposures) - len(entries)
        if not entries:
            return ExposeOutcome(0, 0, unknown)
        node = identities.node(id_type, visitor_id)
        done = self.visitors.expose(node, entries, int(self.clock() * 1000))
        return ExposeOutcome(done.exposed, done.duplicates, done.ignored + unknown)

    def track(self, events: list[TrackEvent], trusted: bool = True) -> TrackResult:
        """Record events; repeats of a (visitor, event id) are acknowledged, not counted.

        An untrusted (SDK key) event for a visitor never seen records nothing: without an
        assignment there is nothing to credit, and it must not create profiles.
        """
        now_ms = int(self.clock() * 1000)
        results = self._run(self.catalog.snapshot(), events, now_ms, True, trusted)
        stale = [i for i, r in enumerate(results) if r == STALE]
        if stale:
            # This worker's definitions are older than an assignment the visitor holds:
            # read them again and rerun just those events (nothing was written for them).
            retried = self._run(self.catalog.fresh(), [events[i] for i in stale], now_ms,
                                False, trusted)
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
            else:
                accepted += 1  # a visitor never seen: acknowledged, nothing to credit
        return TrackResult(accepted, duplicates, tuple(attributed))

    def _run(self, snapshot: Snapshot, events: list[TrackEvent], now_ms: int,
             strict: bool, trusted: bool) -> list[list[tuple[str, str]] | str | None]:
        by_metric: dict[str, tuple[Candidate, ...]] = {}
        calls = []
        for ev in events:
            if ev.metric not in by_metric:
                by_metric[ev.metric] = _candidates(snapshot, ev.metric)
            if ev.age is not None:
                # The sender's own clock measured the age, so its offset cancels out.
                at_ms, skew_ms = now_ms - int(ev.age * 1000), SERVER_SKEW_MS
            elif ev.timestamp_ms is not None:
                # A stamp from the future is taken as now, so it cannot open a window early.
                at_ms, skew_ms = min(ev.timestamp_ms, now_ms), self.caller_skew_ms
            else:
                at_ms, skew_ms = now_ms, SERVER_SKEW_MS
            calls.append(TrackCall(
                visitor_id=identities.node(ev.id_type, ev.visitor_id),
                event_id=ev.event_id,
                metric=ev.metric,
                value=ev.value if ev.value is not None else 0.0,
                at_ms=at_ms,
                skew_ms=skew_ms,
                candidates=by_metric[ev.metric],
                may_create=trusted,
                known=identities.known_fact(ev.id_type, ev.visitor_id),
            ))
        return self.visitors.track(calls, now_ms, strict)


def _candidates(snapshot: Snapshot, metric: str) -> tuple[Candidate, ...]:
    """Every experiment that can hold assignments, with the kind it counts `metric` as."""
    out = []
    for e in snapshot.experiments.values():
        if e.status is Status.DRAFT:
            continue  # never started, so no assignments
        counted = next((m for m in e.metrics if m.name == metric), None)
        kind = counted.kind.value if counted is not None else ""
        hours = e.attribution_window_hours
        if counted is not None and counted.within_days is not None:
            hours = counted.within_days * 24  # a repeat purchase counts within its own days
        fade = learning_fade(e) if e.metric.name == metric else ""
        out.append(Candidate(e.key, e.seed, kind, int(hours * 3600_000), fade))
    return tuple(out)
