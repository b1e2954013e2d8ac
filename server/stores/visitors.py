"""Per-visitor state (profile, attributes, assignments, dedupe set) and the counters it updates.

Both operations are single Lua scripts over keys that share the visitor's shard tag, so
each is one atomic round trip and runs unchanged on Redis Cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from server.errors import InvalidInput, ProfileBusy
from server.identities import MAX_LINK_HOPS
from server.keys import Keyspace
from server.scripts import Scripts


@dataclass(frozen=True, slots=True)
class Option:
    """What a visitor gets in one experiment if Redis settles on this persona."""

    persona: str
    variant: str
    group: str  # "p" policy, "h" holdout
    propensity: str  # exact (repr) probability of this variant for a visitor like this one
    serving: str  # probability of each variant for this visitor, ','-joined exact reprs
    early: str = ""  # "not_targeted" outside the audience, "not_covered" outside coverage
    segment: tuple[str, str] = ("", "")  # (persona, channel) a new assignment counts under
    admit_after: bool = False  # a new segment to admit once Redis settled the persona


@dataclass(frozen=True, slots=True)
class Proposal:
    """What to assign in one experiment if the visitor has no valid sticky assignment.

    The persona is settled inside Redis, so a proposal carries one Option per persona the
    visitor may turn out to be; what does not depend on the persona is sent once.
    """

    experiment: str
    seed: str
    rules_json: str
    variants: str  # '|'-joined variant keys
    options: tuple[Option, ...]
    # Profile field a new assignment snapshots as its pre-exposure covariate ('' for none).
    covariate: str = ""
    fade: str = ""  # learning decay rate per ms (server.stores.counters.learning_fade)

    def option(self, persona: str) -> Option:
        """The option of the persona Redis settled on."""
        return next(o for o in self.options if o.persona == persona)

    def table(self, channel: str) -> str:
        """The options as the decide script reads them: one tab-separated line per persona."""
        # Leading and trailing newlines let the script find '\n<persona>\t' with one search.
        return "\n" + "".join(
            f"{o.persona}\t{o.variant}\t{o.group}\t{o.propensity}\t{o.serving}\t"
            f"{o.early or '-'}\t{o.segment[0] or o.persona}\t{o.segment[1] or channel}\n"
            for o in self.options)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What Redis decided for one proposal."""

    reason: str
    variant: str | None
    decision_id: str | None
    propensity: float | None
    pending: bool = False  # the exposure waits for the caller's confirmation


@dataclass(frozen=True, slots=True)
class DecideOutcome:
    """The persona Redis settled on, and one Outcome per experiment."""

    persona: str
    outcomes: list[Outcome]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A known experiment; kind is '' when it does not use the tracked metric."""

    experiment: str
    seed: str
    kind: str
    window_ms: int
    fade: str = ""  # learning decay rate per ms when this is a bandit's primary metric


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
    may_create: bool = True  # False for SDK calls: a visitor never seen records nothing
    known: tuple[str, str] = ("", "")  # (profile field, value) when the id names a customer


@dataclass(frozen=True, slots=True)
class ExposeEntry:
    """One decision the caller confirms it showed."""

    experiment: str
    seed: str
    decision_id: str
    fade: str = ""  # learning decay rate per ms of a bandit ('' for none)


@dataclass(frozen=True, slots=True)
class ExposeOutcome:
    """How many confirmations counted, repeated an earlier one, or matched nothing."""

    exposed: int
    duplicates: int
    ignored: int


STALE = "stale"
UNSEEN = "unseen"

# Most counted event ids a visitor hash keeps; the older ones within the dedupe window move to
# the visitor's overflow set (server/lua/track.lua).
INLINE_EVENTS = 32


@dataclass(frozen=True, slots=True)
class Limits:
    """Retention and size limits the scripts enforce."""

    ttl_ms: int
    dedupe_ms: int
    epoch_ms: int
    log_maxlen: int
    max_attributes: int
    purchase_metric: str = "purchase"
    refund_metric: str = "refund"
    max_channels: int = 16
    inline_events: int = INLINE_EVENTS


BUSY_WAIT_SECONDS = 3.0


class _Retry:
    """Waits out a merge in progress with growing pauses, then gives up with a 503."""

    def __init__(self, patience: float = BUSY_WAIT_SECONDS) -> None:
        self.deadline = time.monotonic() + patience
        self.pause = 0.002

    def wait(self) -> None:
        if time.monotonic() > self.deadline:
            raise ProfileBusy("the visitor's profile is being merged; retry",
                                   {"visitor_id": "busy"})
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, 0.05)


class VisitorStore:
    """Runs the decide and track scripts."""

    def __init__(self, client: redis.Redis, keys: Keyspace, scripts: Scripts,
                 limits: Limits, patience: float = BUSY_WAIT_SECONDS) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.limits = limits
        self.patience = patience  # how long to wait for a merge holding a profile

    def decide(
        self,
        visitor_id: str,
        channel: str,
        attributes: dict[str, str],
        proposals: list[Proposal],
        now_ms: int,
        persona: str | None = None,
        persona_rules: str = "",
        expose: bool = True,
        known: tuple[str, str] = ("", ""),
    ) -> DecideOutcome:
        """Run the decide script: one round trip (one more per linked-id hop).

        Merges attributes (name -> JSON, '' deletes), settles the persona, and keeps or creates
        the assignment of each experiment. With `expose` False new assignments are stored
        pending: not counted until the caller confirms it showed them (`expose`).
        """
        lim = self.limits
        retry = _Retry(self.patience)
        hops = 0
        while True:
            vk = self.keys.visitor(visitor_id)
            keys = [vk.profile, vk.lock, vk.linked]
            args: list[Any] = [now_ms, channel, lim.ttl_ms, lim.epoch_ms, lim.log_maxlen,
                               lim.max_attributes, len(attributes), len(proposals),
                               persona or "", persona_rules, "1" if expose else "0",
                               known[0], known[1], lim.max_channels, visitor_id]
            for name, value in attributes.items():
                args += [name, value]
            for p in proposals:
                keys += [self.keys.counters(p.experiment, p.seed, vk.shard),
                         self.keys.epoch_counters(p.experiment, p.seed, vk.shard),
                         self.keys.log(p.experiment, p.seed, vk.shard)]
                args += [p.experiment, p.seed, p.rules_json, p.variants, p.covariate, p.fade,
                         p.table(channel)]
            raw = self.scripts.decide(keys=keys, args=args)
            if raw and raw[0] == "!alias" and hops < MAX_LINK_HOPS:
                visitor_id, hops = raw[1], hops + 1
                continue
            if raw and raw[0] == "!busy":
                retry.wait()
                continue
            break
        if raw and raw[0] == "!too_many_attributes":
            raise InvalidInput(
                f"a profile holds at most {lim.max_attributes} attributes",
                {"attributes": f"would make {raw[1]} attributes; the limit is "
                               f"{lim.max_attributes} (send null to remove some)"},
            )
        if raw and raw[0] == "!alias":
            raise ProfileBusy("linked ids form a chain too long", {"visitor_id": "loop"})
        outcomes = []
        for i in range(len(proposals)):
            reason, variant, decision_id, propensity, pending = raw[1 + 5 * i:6 + 5 * i]
            outcomes.append(Outcome(reason, variant or None, decision_id or None,
                                    float(propensity) if propensity else None,
                                    pending == "1"))
        return DecideOutcome(raw[0], outcomes)

    def track(
        self, calls: list[TrackCall], now_ms: int, strict: bool
    ) -> list[list[tuple[str, str]] | str | None]:
        """Record events; per event: credited (experiment, variant) pairs, None, STALE, UNSEEN.

        None marks a duplicate; UNSEEN an SDK event for a visitor never seen (nothing kept);
        STALE (nothing written) means strict mode found an assignment
        of an experiment the candidates do not know, so the caller must refresh and retry.
        Events sent under a linked id are rerun under the canonical id.
        """
        ids = [c.visitor_id for c in calls]
        results: list[list[tuple[str, str]] | str | None] = [None] * len(calls)
        pending = list(range(len(calls)))
        retry = _Retry(self.patience)
        hops = [0] * len(calls)
        while pending:
            answers = self.scripts.run_many(
                self.scripts.track, [self._track_call(calls[i], ids[i], now_ms, strict)
                                     for i in pending])
            again = []
            busy = False
            for i, answer in zip(pending, answers, strict=True):
                head = answer[0]
                if head == "!alias" and hops[i] < MAX_LINK_HOPS:
                    ids[i] = answer[1]
                    hops[i] += 1
                    again.append(i)
                elif head == "!busy":
                    busy = True
                    again.append(i)
                elif head == "!alias":
                    raise ProfileBusy("linked ids form a chain too long",
                                           {"visitor_id": "loop"})
                elif int(head) == 0:
                    results[i] = None
                elif int(head) == 2:
                    results[i] = UNSEEN
                elif int(head) < 0:
                    results[i] = STALE
                else:
                    rest = answer[1:]
                    results[i] = [(rest[j], rest[j + 1]) for j in range(0, len(rest), 2)]
            if busy:
                retry.wait()
            pending = again
        return results

    def _track_call(self, c: TrackCall, visitor_id: str, now_ms: int,
                    strict: bool) -> tuple[list[str], list[Any]]:
        lim = self.limits
        vk = self.keys.visitor(visitor_id)
        keys = [vk.profile, vk.events, vk.lock, vk.linked, self.keys.buyers(vk.shard)]
        args: list[Any] = [now_ms, c.event_id, c.metric, repr(c.value), c.at_ms, lim.dedupe_ms,
                           lim.ttl_ms, c.skew_ms, lim.log_maxlen, 1 if strict else 0,
                           len(c.candidates), lim.purchase_metric, "1" if c.may_create else "0",
                           c.known[0], c.known[1], lim.refund_metric, visitor_id,
                           lim.inline_events]
        for cand in c.candidates:
            keys += [self.keys.counters(cand.experiment, cand.seed, vk.shard),
                     self.keys.epoch_counters(cand.experiment, cand.seed, vk.shard),
                     self.keys.log(cand.experiment, cand.seed, vk.shard)]
            args += [cand.experiment, cand.seed, cand.kind, cand.window_ms, cand.fade]
        return keys, args

    def expose(self, visitor_id: str, entries: list[ExposeEntry], now_ms: int) -> ExposeOutcome:
        """Count the exposures of pending assignments the caller confirms it showed."""
        retry = _Retry(self.patience)
        hops = 0
        while True:
            vk = self.keys.visitor(visitor_id)
            keys = [vk.profile, vk.lock]
            args: list[Any] = [now_ms, self.limits.log_maxlen, len(entries), visitor_id]
            for entry in entries:
                keys += [self.keys.counters(entry.experiment, entry.seed, vk.shard),
                         self.keys.epoch_counters(entry.experiment, entry.seed, vk.shard),
                         self.keys.log(entry.experiment, entry.seed, vk.shard)]
                args += [entry.experiment, entry.seed, entry.decision_id, entry.fade]
            raw = self.scripts.expose(keys=keys, args=args)
            if raw and raw[0] == "!alias":
                if hops >= MAX_LINK_HOPS:
                    raise ProfileBusy("linked ids form a chain too long",
                                           {"visitor_id": "loop"})
                visitor_id, hops = raw[1], hops + 1
                continue
            if raw and raw[0] == "!busy":
                retry.wait()
                continue
            return ExposeOutcome(int(raw[0]), int(raw[1]), int(raw[2]))
