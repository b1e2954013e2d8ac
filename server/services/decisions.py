"""Deciding which variant a visitor sees, for many experiments in one Redis round trip."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from redis.exceptions import RedisClusterException, RedisError

from bandits import choose
from experiments.assignment import ab_variant, holdout_variant, in_coverage, in_holdout
from experiments.model import Experiment, MetricKind, Mode, Status
from server import identities
from server.errors import InvalidInput, NotFound, ProfileBusy, StoreUnavailable
from server.observability import metrics
from server.services.breaker import Breaker
from server.services.catalog import OTHER_SEGMENT, Catalog, SegmentState, Serving, Snapshot
from server.stores.counters import learning_fade
from server.stores.visitors import Option, Proposal, VisitorStore

DEFAULT_PERSONA = "default"
log = logging.getLogger("centric")


@dataclass(frozen=True, slots=True)
class DecideRequest:
    """A validated decide call."""

    visitor_id: str
    channel: str
    experiments: tuple[str, ...] | None = None
    attributes: dict[str, Any] | None = None
    persona: str | None = None
    id_type: str = identities.VISITOR
    expose: bool = True  # False: store new assignments pending until the caller confirms
    trusted: bool = True  # False for SDK keys: an explicit persona must be one defined


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one experiment."""

    experiment: str
    variant: str
    payload: Any
    decision_id: str
    propensity: float | None
    reason: str
    pending: bool = False  # shown only once the caller confirms it (POST /v1/expose)


@dataclass(frozen=True, slots=True)
class DecideResult:
    """The answer to a decide call."""

    visitor_id: str
    persona: str
    decisions: tuple[Decision, ...]


class DecisionService:
    """Targeting, sticky assignment, holdout, A/B hashing and Thompson sampling."""

    def __init__(
        self,
        catalog: Catalog,
        visitors: VisitorStore,
        rng: np.random.Generator,
        clock: Callable[[], float],
        breaker: Breaker | None = None,
        channels: frozenset[str] = frozenset(),
    ) -> None:
        self.catalog = catalog
        self.visitors = visitors
        self.rng = rng
        self.clock = clock
        self.breaker = breaker or Breaker(1.0)
        self.channels = channels  # the channels decide accepts; empty: any valid name

    def decide(self, request: DecideRequest) -> DecideResult:
        """Answer every requested (or every live, matching) experiment for one visitor.

        When Redis fails or is slower than the budget, every experiment gets its control with
        reason 'fallback' (status 200): the page is never broken by the store.
        """
        if self.channels and request.channel not in self.channels:
            raise InvalidInput("unknown channel", {"channel": "one of the configured channels: "
                                                              + ", ".join(sorted(self.channels))})
        if self.breaker.open:
            return self._fallback(request)
        try:
            result = self._decide(request)
        except ProfileBusy as error:
            # This visitor's profile is busy: only this answer falls back, the store is fine.
            log.info("decide falls back for a busy profile: %s", error.message)
            return self._fallback(request)
        except (RedisError, RedisClusterException, StoreUnavailable) as error:
            # A cluster client that cannot reach its nodes in time raises a
            # RedisClusterException, which is not a RedisError: it is an outage all the same.
            self.breaker.failed()
            metrics().redis_errors.labels("decide").inc()
            log.warning("decide falls back to control: %s: %s", type(error).__name__, error)
            return self._fallback(request)
        self.breaker.succeeded()
        return result

    def _fallback(self, request: DecideRequest) -> DecideResult:
        snapshot = self.catalog.last
        known = snapshot.experiments if snapshot is not None else {}
        if request.experiments is not None:
            keys = list(dict.fromkeys(request.experiments))
        else:
            keys = [e.key for e in known.values() if e.status is Status.RUNNING
                    and (not e.audience.channels or request.channel in e.audience.channels)]
        decisions = []
        for key in keys:
            e = known.get(key)
            if e is None:
                decisions.append(Decision(key, "control", None, _new_id(), None, "fallback"))
            else:
                decisions.append(replace(_control(e, "fallback"), propensity=None))
        return DecideResult(request.visitor_id, request.persona or DEFAULT_PERSONA,
                            tuple(decisions))

    def _decide(self, request: DecideRequest) -> DecideResult:
        snapshot = self.catalog.snapshot()
        if request.persona is not None and not request.trusted:
            self._check_persona(snapshot, request.persona)
        explicit = request.experiments is not None
        if explicit:
            snapshot, experiments = self._requested(snapshot, request.experiments or ())
        else:
            experiments = [e for e in snapshot.experiments.values()
                           if e.status is Status.RUNNING
                           or (e.status is Status.STOPPED and e.winner is not None)]

        # The persona is settled inside Redis (rules over the stored profile), so propose for
        # every persona it may turn out to be; an explicit persona needs just one.
        if request.persona is not None:
            candidates, persona_rules = [request.persona], ""
        else:
            candidates = [*snapshot.persona_names, DEFAULT_PERSONA]
            persona_rules = snapshot.persona_rules_json
        decided: dict[str, Decision] = {}
        proposals: list[Proposal] = []
        for e in experiments:
            early = self._without_redis(e, request)
            if early is not None:
                decided[e.key] = early
                continue
            proposals.append(self._propose(snapshot, e, request.visitor_id, candidates,
                                           request.channel))

        attributes = {
            name: "" if value is None else json.dumps(value, separators=(",", ":"))
            for name, value in (request.attributes or {}).items()
        }
        result = self.visitors.decide(
            identities.node(request.id_type, request.visitor_id), request.channel, attributes,
            proposals, int(self.clock() * 1000), request.persona, persona_rules,
            expose=request.expose, known=identities.known_fact(request.id_type, request.visitor_id))
        persona = result.persona
        for proposal, outcome in zip(proposals, result.outcomes, strict=True):
            e = snapshot.experiments[proposal.experiment]
            if proposal.option(persona).admit_after and outcome.reason in ("assigned", "holdout"):
                # A new segment settled inside Redis: this visitor counted as other/other;
                # register the segment so that the next ones count under its own name.
                self.catalog.admit(e, persona, request.channel)
            if outcome.reason == "not_targeted":
                decided[e.key] = _control(e, "not_targeted")
            else:
                variant = outcome.variant or e.control
                decided[e.key] = Decision(
                    e.key, variant, e.variant(variant).payload,
                    outcome.decision_id or _new_id(), outcome.propensity,
                    outcome.reason, outcome.pending,
                )
        decisions = tuple(
            decided[e.key] for e in experiments
            if explicit or decided[e.key].reason not in {"not_targeted", "not_running"}
        )
        return DecideResult(request.visitor_id, persona, decisions)

    @staticmethod
    def _check_persona(snapshot: Snapshot, persona: str) -> None:
        """With the public key, an explicit persona is one the product owners named.

        Anyone could otherwise invent personas to fill every experiment's segment registry.
        """
        if persona != DEFAULT_PERSONA and persona not in snapshot.named_personas:
            raise InvalidInput("unknown persona", {"persona": "not a defined persona; define "
                                                              "it or let the rules decide"})

    def _requested(self, snapshot: Snapshot,
                   keys: tuple[str, ...]) -> tuple[Snapshot, list[Experiment]]:
        if any(k not in snapshot.experiments for k in keys):
            # Perhaps created in the last refresh interval: look again before a 404.
            snapshot = self.catalog.fresh()
        unknown = {f"experiments.{i}": f"unknown experiment '{k}'"
                   for i, k in enumerate(keys) if k not in snapshot.experiments}
        if unknown:
            raise NotFound("unknown experiment", unknown)
        return snapshot, [snapshot.experiments[k] for k in dict.fromkeys(keys)]

    def _without_redis(self, e: Experiment, request: DecideRequest) -> Decision | None:
        """Decisions that need no visitor state: not running, winner, channel."""
        if e.status is Status.STOPPED and e.winner is not None:
            return Decision(e.key, e.winner, e.variant(e.winner).payload, _new_id(), 1.0,
                            "winner")
        if e.status is not Status.RUNNING:
            return _control(e, "not_running")
        audience = e.audience
        if audience.channels and request.channel not in audience.channels:
            return _control(e, "not_targeted")
        if (audience.personas and request.persona is not None
                and request.persona not in audience.personas):
            return _control(e, "not_targeted")
        return None

    def _propose(self, snapshot: Snapshot, e: Experiment, visitor_id: str,
                 candidates: list[str], channel: str) -> Proposal:
        plan = _plan(snapshot, e)
        # The hashes and the draw do not depend on the persona: one per experiment.
        covered = in_coverage(e.seed, visitor_id, e.coverage)
        held = in_holdout(e.seed, visitor_id, e.holdout)
        fixed: int | None = None
        if held:
            fixed = holdout_variant(e.seed, visitor_id, plan.k)
        elif e.mode is not Mode.BANDIT:
            fixed = ab_variant(e.seed, visitor_id, plan.weights.probabilities)
        u = self.rng.random() if fixed is None else 0.0
        only = len(candidates) == 1
        options = []
        for persona in candidates:
            counted, admit_after = self._segment(e, persona, channel, only)
            serving = (self.catalog.serving(snapshot, e, *counted)
                       if e.mode is Mode.BANDIT else plan.weights)
            index = choose(serving.cumulative, u) if fixed is None else fixed
            # The probability that a visitor like this one is served this variant, holdout
            # included (membership of the holdout is itself a uniform hash draw).
            propensity = e.holdout / plan.k + (1.0 - e.holdout) * serving.probabilities[index]
            early = ""
            if e.audience.personas and persona not in e.audience.personas:
                early = "not_targeted"
            elif not covered:
                # Decided in Redis: a sticky assignment made under another linked id wins.
                early = "not_covered"
            options.append(Option(persona, plan.keys[index], "h" if held else "p",
                                  repr(propensity), plan.uniform.text if held else serving.text,
                                  early, counted, admit_after))
        return Proposal(e.key, e.seed, plan.rules, plan.variants, tuple(options),
                        plan.covariate, plan.fade)

    def _segment(self, e: Experiment, persona: str, channel: str,
                 only: bool) -> tuple[tuple[str, str], bool]:
        """The segment a new assignment counts under, and whether to admit it afterwards."""
        # Segments beyond the experiment's cap learn and count together as other/other.
        state = self.catalog.segment(e, persona, channel)
        admit_after = state in (SegmentState.NEW, SegmentState.NEAR)
        if admit_after and only:
            # The segment is certain before the script runs: admit it first.
            admitted = self.catalog.admit(e, persona, channel)
            state = SegmentState.ADMITTED if admitted else SegmentState.FULL
            admit_after = False
        elif state is SegmentState.NEW:
            # With persona rules the segment is settled inside Redis, and admitted after the
            # script if it is the one that matched. With room to spare it is counted by name
            # at once; near the cap this visitor counts as other/other, so that the cap holds.
            state = SegmentState.ADMITTED
        counted = (persona, channel) if state is SegmentState.ADMITTED else OTHER_SEGMENT
        return counted, admit_after


@dataclass(frozen=True, slots=True)
class _Plan:
    """What decide sends for one experiment that does not depend on the visitor."""

    keys: tuple[str, ...]
    k: int
    variants: str
    rules: str
    weights: Serving  # the A/B split
    uniform: Serving  # the holdout's
    covariate: str
    fade: str


def _plan(snapshot: Snapshot, e: Experiment) -> _Plan:
    """The experiment's plan, built once per snapshot."""
    plan = snapshot.memo.get(("plan", e.key))
    if plan is None or plan[0] is not e:
        keys = e.variant_keys
        k = len(keys)
        plan = (e, _Plan(
            keys, k, "|".join(keys),
            json.dumps(list(e.audience.rules), separators=(",", ":")) if e.audience.rules else "",
            Serving.of(e.normalised_weights), Serving.of([1.0 / k] * k), covariate_field(e),
            learning_fade(e)))
        snapshot.memo[("plan", e.key)] = plan
    return plan[1]


def covariate_field(e: Experiment) -> str:
    """Profile field whose value before the assignment is the experiment's CUPED covariate."""
    # The same history as the primary metric predicts it best: past spend for revenue, past
    # purchases for a conversion.
    return "ltv" if e.metric.kind is MetricKind.REVENUE else "pc"


def _new_id() -> str:
    return uuid.uuid4().hex


def _control(e: Experiment, reason: str) -> Decision:
    return Decision(e.key, e.control, e.variant(e.control).payload, _new_id(), None, reason)
