"""Per-visitor state (profile, assignments, dedupe set) and the counters it updates.

Both operations are single Lua scripts over keys that share the visitor's shard tag, so
each is one atomic round trip and runs unchanged on Redis Cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from server.keys import Keyspace
from server.scripts import Scripts


@dataclass(frozen=True, slots=True)
class Proposal:
    """What to assign if the visitor has no valid sticky assignment and passes the rules."""

    experiment: str
    seed: str
    rules_json: str
    variants: tuple[str, ...]
    variant: str
    group: str  # "p" policy, "h" holdout
    propensity: float
    decision_id: str
    persona: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What Redis decided for one proposal."""

    reason: str
    variant: str | None
    decision_id: str | None
    propensity: float | None


@dataclass(frozen=True, slots=True)
class Candidate:
    """An experiment that uses the tracked metric and may credit the visitor."""

    experiment: str
    seed: str
    kind: str
    window_ms: int


@dataclass(frozen=True, slots=True)
class TrackCall:
    """One outcome event ready for the track script."""

    visitor_id: str
    event_id: str
    metric: str
    value: float
    at_ms: int
    candidates: tuple[Candidate, ...]


class VisitorStore:
    """Runs the decide and track scripts."""

    def __init__(self, client: redis.Redis, keys: Keyspace, scripts: Scripts) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts

    def decide(
        self,
        visitor_id: str,
        channel: str,
        attributes: dict[str, Any],
        proposals: list[Proposal],
        now_ms: int,
        ttl_ms: int,
    ) -> list[Outcome]:
        """Merge attributes, apply rules, and keep or create each assignment: one round trip."""
        vk = self.keys.visitor(visitor_id)
        keys = [vk.profile, vk.assignments]
        args: list[Any] = [
            now_ms,
            json.dumps(attributes, separators=(",", ":")) if attributes else "",
            channel,
            ttl_ms,
            len(proposals),
        ]
        for p in proposals:
            keys.append(self.keys.counters(p.experiment, p.seed, vk.shard))
            args += [p.experiment, p.seed, p.rules_json, "|".join(p.variants), p.variant,
                     p.group, repr(p.propensity), p.decision_id, p.persona]
        raw = self.scripts.decide(keys=keys, args=args)
        outcomes = []
        for i in range(len(proposals)):
            reason, variant, decision_id, propensity = raw[4 * i:4 * i + 4]
            outcomes.append(Outcome(reason, variant or None, decision_id or None,
                                    float(propensity) if propensity else None))
        return outcomes

    def track(
        self, calls: list[TrackCall], now_ms: int, dedupe_ms: int, ttl_ms: int
    ) -> list[list[tuple[str, str]] | None]:
        """Record events; per event the (experiment, variant) credited, or None if a duplicate."""
        batch = []
        for c in calls:
            vk = self.keys.visitor(c.visitor_id)
            keys = [vk.profile, vk.assignments, vk.events]
            args: list[Any] = [now_ms, c.event_id, c.metric, repr(c.value), c.at_ms, dedupe_ms,
                               ttl_ms, len(c.candidates)]
            for cand in c.candidates:
                keys.append(self.keys.counters(cand.experiment, cand.seed, vk.shard))
                args += [cand.experiment, cand.seed, cand.kind, cand.window_ms]
            batch.append((keys, args))
        results: list[list[tuple[str, str]] | None] = []
        for answer in self.scripts.run_many(self.scripts.track, batch):
            if int(answer[0]) == 0:
                results.append(None)
            else:
                rest = answer[1:]
                results.append([(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)])
        return results
