"""Per-visitor state (profile, attributes, assignments, dedupe set) and the counters it updates.

Both operations are single Lua scripts over keys that share the visitor's shard tag, so
each is one atomic round trip and runs unchanged on Redis Cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from server.errors import InvalidInput
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
    serving: tuple[float, ...]  # probability of each variant for this visitor


@dataclass(frozen=True, slots=True)
class Outcome:
    """What Redis decided for one proposal."""

    reason: str
    variant: str | None
    decision_id: str | None
    propensity: float | None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A known experiment; kind is '' when it does not use the tracked metric."""

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
    skew_ms: int
    candidates: tuple[Candidate, ...]


STALE = "stale"


@dataclass(frozen=True, slots=True)
class Limits:
    """Retention and size limits the scripts enforce."""

    ttl_ms: int
    dedupe_ms: int
    epoch_ms: int
    log_maxlen: int
    max_attributes: int


class VisitorStore:
    """Runs the decide and track scripts."""

    def __init__(self, client: redis.Redis, keys: Keyspace, scripts: Scripts,
                 limits: Limits) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.limits = limits

    def decide(
        self,
        visitor_id: str,
        channel: str,
        attributes: dict[str, str],
        proposals: list[Proposal],
        now_ms: int,
    ) -> list[Outcome]:
        """Merge attributes (name -> JSON, '' deletes), apply rules, keep or create assignments."""
        vk = self.keys.visitor(visitor_id)
        lim = self.limits
        keys = [vk.profile, vk.attributes, vk.assignments]
        args: list[Any] = [now_ms, channel, lim.ttl_ms, lim.epoch_ms, lim.log_maxlen,
                           lim.max_attributes, len(attributes), len(proposals)]
        for name, value in attributes.items():
            args += [name, value]
        for p in proposals:
            keys += [self.keys.counters(p.experiment, p.seed, vk.shard),
                     self.keys.epoch_counters(p.experiment, p.seed, vk.shard),
                     self.keys.log(p.experiment, p.seed, vk.shard)]
            args += [p.experiment, p.seed, p.rules_json, "|".join(p.variants), p.variant,
                     p.group, repr(p.propensity), p.decision_id, p.persona,
                     ",".join(repr(q) for q in p.serving)]
        raw = self.scripts.decide(keys=keys, args=args)
        if raw and raw[0] == "!too_many_attributes":
            raise InvalidInput(
                f"a profile holds at most {lim.max_attributes} attributes",
                {"attributes": f"would make {raw[1]} attributes; the limit is "
                               f"{lim.max_attributes} (send null to remove some)"},
            )
        outcomes = []
        for i in range(len(proposals)):
            reason, variant, decision_id, propensity = raw[4 * i:4 * i + 4]
            outcomes.append(Outcome(reason, variant or None, decision_id or None,
                                    float(propensity) if propensity else None))
        return outcomes

    def track(
        self, calls: list[TrackCall], now_ms: int, strict: bool
    ) -> list[list[tuple[str, str]] | str | None]:
        """Record events; per event: credited (experiment, variant) pairs, None, or STALE.

        None marks a duplicate; STALE (nothing written) means strict mode found an assignment
        of an experiment the candidates do not know, so the caller must refresh and retry.
        """
        lim = self.limits
        batch = []
        for c in calls:
            vk = self.keys.visitor(c.visitor_id)
            keys = [vk.profile, vk.assignments, vk.events]
            args: list[Any] = [now_ms, c.event_id, c.metric, repr(c.value), c.at_ms,
                               lim.dedupe_ms, lim.ttl_ms, c.skew_ms, lim.log_maxlen,
                               1 if strict else 0, len(c.candidates)]
            for cand in c.candidates:
                keys += [self.keys.counters(cand.experiment, cand.seed, vk.shard),
                         self.keys.epoch_counters(cand.experiment, cand.seed, vk.shard),
                         self.keys.log(cand.experiment, cand.seed, vk.shard)]
                args += [cand.experiment, cand.seed, cand.kind, cand.window_ms]
            batch.append((keys, args))
        results: list[list[tuple[str, str]] | str | None] = []
        for answer in self.scripts.run_many(self.scripts.track, batch):
            status = int(answer[0])
            if status == 0:
                results.append(None)
            elif status < 0:
                results.append(STALE)
            else:
                rest = answer[1:]
                results.append([(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)])
        return results
