"""Moments: who is in them now, kept up to date by a bounded sweep, and what to send them.

A sweep walks the buyers index in small batches. For each known customer it refreshes the
customer-value predictions where they are stale, evaluates every moment's rule with the
Python twin of the decide script's rule language (experiments.rule_eval), and applies the
outcomes to each moment's membership in one short script per batch. Members are listed by
the sequence number of their entry, so a daily job that keeps the last page's cursor gets
every entry once, and a retried page gives the same members and (sticky) decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.rule_eval import DEFAULT_PERSONA, build_facts, evaluate
from experiments.rules import attribute_names
from server import identities
from server.errors import InvalidInput, NotFound, StoreUnavailable
from server.keys import ATTRIBUTE
from server.services.customer_value import History, history_of, predict
from server.services.decisions import DecideRequest, DecisionService
from server.services.experiments import ExperimentService
from server.stores.audit import AuditEntry, AuditLog
from server.stores.customer_value import (
    Buyer,
    CustomerValueStore,
    ModelRecord,
    read_prediction,
)
from server.stores.moments import Member, Moment, MomentStore
from server.stores.personas import PersonaStore

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one sweep did."""

    customers: int
    rescored: int
    entered: dict[str, int]
    left: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """The result as the API shows it."""
        return {"customers": self.customers, "rescored": self.rescored,
                "entered": self.entered, "left": self.left}


def _stale(buyer: Buyer, model: ModelRecord, now_ms: int) -> bool:
    """Predictions older than the fit, than the history's last change, or a day are redone.

    The history's last change is when a purchase arrived (or identify or a merge changed
    it), not the purchase's own time: an order imported late counts from its arrival.
    """
    p = read_prediction(buyer.profile)
    if p is None:
        return True
    return (p.at_ms < model.fitted_at_ms or p.at_ms < buyer.changed_ms
            or now_ms - p.at_ms >= DAY_MS)


class MomentService:
    """Moment definitions (audited), the membership sweep and the member list."""

    def __init__(self, store: MomentStore, values: CustomerValueStore, personas: PersonaStore,
                 experiments: ExperimentService, decisions: DecisionService, audit: AuditLog,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.values = values
        self.personas = personas
        self.experiments = experiments
        self.decisions = decisions
        self.audit = audit
        self.clock = clock

    def get(self) -> list[Moment]:
        """Every moment."""
        return self.store.load()

    def put(self, moments: Sequence[Moment], actor: str) -> list[Moment]:
        """Replace the moments; every experiment they name must exist."""
        known = {e.key for e in self.experiments.list()}
        for i, m in enumerate(moments):
            for name in ("experiment", "followup_experiment"):
                key = getattr(m, name)
                if key is not None and key not in known:
                    raise InvalidInput(f"no experiment '{key}'",
                                       {f"moments.{i}.{name}": "unknown experiment"})
        self.store.save(moments)
        self.audit.append(AuditEntry(
            at=int(self.clock() * 1000), actor=actor, action="replace", target_type="moments",
            target="moments", details={"moments": [m.name for m in moments]}))
        return list(moments)

    def moment(self, name: str) -> Moment:
        """One moment or NotFound."""
        for m in self.store.load():
            if m.name == name:
                return m
        raise NotFound(f"no moment '{name}'", {"name": "unknown moment"})

    def sweep(self) -> SweepResult:
        """Refresh stale predictions and every moment's membership, batch by batch."""
        now_ms = int(self.clock() * 1000)
        moments = self.store.load()
        generations = self.store.generations()
        model = self.values.load_model()
        personas = self.personas.get()
        wanted = sorted(set().union(*(attribute_names(m.when) for m in moments),
                                    *(attribute_names(p["when"]) for p in personas)))
        customers = rescored = 0
        entered = dict.fromkeys((m.name for m in moments), 0)
        left = dict.fromkeys((m.name for m in moments), 0)
        for batch in self.values.buyer_batches(now_ms, wanted):
            customers += len(batch.buyers)
            profiles = {b.node: b.profile for b in batch.buyers}
            if model is not None:
                stale = [h for b in batch.buyers if _stale(b, model, now_ms)
                         and (h := history_of(b.node, b.profile, now_ms)) is not None]
                rescored += self._rescore(model, stale, now_ms, profiles)
            for m in moments:
                # Nodes that are no buyers any more (erased, merged away) leave every moment.
                holds = [(node, self._holds(m, profile, personas, now_ms))
                         for node, profile in profiles.items()]
                holds += [(node, False) for node in batch.gone]
                came, went = self.store.sweep(m, generations.get(m.name, ""), now_ms, holds)
                entered[m.name] += came
                left[m.name] += went
        return SweepResult(customers, rescored, entered, left)

    def _rescore(self, model: ModelRecord, stale: list[History], now_ms: int,
                 profiles: dict[str, dict[str, str]]) -> int:
        predictions = predict(model, stale, now_ms)
        self.values.write_predictions(predictions)
        # The rules below must see the fresh figures, as the next decide will.
        for node, p in predictions:
            profile = profiles[node]
            profile.update(pa=repr(p.p_alive), e90=repr(p.expected_purchases_90d),
                           pt=str(p.at_ms))
            if p.predicted_clv_365d is None:
                profile.pop("clv", None)
            else:
                profile["clv"] = repr(p.predicted_clv_365d)
        return len(predictions)

    @staticmethod
    def _holds(m: Moment, profile: dict[str, str], personas: list[dict[str, Any]],
               now_ms: int) -> bool:
        attributes = {k[len(ATTRIBUTE):]: v for k, v in profile.items()
                      if k.startswith(ATTRIBUTE)}
        facts = build_facts(profile, attributes, now_ms=now_ms, channel=m.channel)
        # First match wins, as in decide (without choose_persona's explanations: a sweep
        # evaluates every customer).
        persona = next((p["name"] for p in personas if evaluate(p["when"], facts)),
                       DEFAULT_PERSONA)
        return evaluate(m.when, {**facts, "persona": persona})

    def members(self, name: str, cursor: int, limit: int) -> dict[str, Any]:
        """A page of the moment's members after ``cursor``, each with its message decided."""
        m = self.moment(name)
        page = self.store.members(name, cursor, limit + 1)
        more, page = len(page) > limit, page[:limit]
        ids = self._customer_ids([member.node for member in page])
        # A member erased or merged away since the last sweep is nobody to mail: it leaves
        # now, and decide is never asked about it (that would make it a profile again).
        gone = [member.node for member in page if member.node not in ids]
        if gone:
            self.store.remove(name, gone)
        out = [self._member(m, member, ids[member.node]) for member in page
               if member.node in ids]
        # The cursor to continue from, also after the last page: a daily job keeps it and
        # gets only the entries made since.
        return {"moment": name, "members": out,
                "next_cursor": str(page[-1].seq if page else cursor), "has_more": more,
                "count": self.store.count(name)}

    def _member(self, m: Moment, member: Member, known: tuple[str, str]) -> dict[str, Any]:
        id_type, value = known
        entry: dict[str, Any] = {
            "customer_id": value, "id_type": id_type, "entry": member.entries,
            "entry_id": f"{m.name}:{member.seq}", "entered_at": member.entered_ms / 1000,
            "decision": None}
        experiment = m.experiment_for(member.entries)
        if experiment is not None:
            node_type, node_value = identities.parse(member.node)
            try:
                result = self.decisions.decide(DecideRequest(
                    visitor_id=node_value, id_type=node_type, channel=m.channel,
                    experiments=(experiment,)))
            except NotFound:
                return entry  # the experiment was deleted since: no message to choose
            (d,) = result.decisions
            if d.reason == "fallback":
                # Redis failed mid-page: a retry must get the real (sticky) decision.
                raise StoreUnavailable("the data store is unavailable, retry the page",
                                       {"moment": "retry"}, retry_after=1)
            entry["decision"] = {"experiment": d.experiment, "variant": d.variant,
                                 "payload": d.payload, "decision_id": d.decision_id,
                                 "propensity": d.propensity, "reason": d.reason}
        return entry

    def _customer_ids(self, nodes: list[str]) -> dict[str, tuple[str, str]]:
        """(id type, id) the shop knows each buyer by: its customer id, else e-mail hash.

        Nodes that are no known buyer's own profile any more are left out.
        """
        fields = [identities.KNOWN_FIELDS[t] for t in identities.KNOWN_TYPES]
        profiles = self.values.fields(nodes, [*fields, "fp", "known", "alias"])
        out = {}
        for node in nodes:
            profile = profiles.get(node, {})
            if "fp" not in profile or "alias" in profile or profile.get("known") != "1":
                continue
            for id_type, field in zip(identities.KNOWN_TYPES, fields, strict=True):
                if field in profile:
                    out[node] = (id_type, profile[field])
                    break
            else:
                out[node] = identities.parse(node)
        return out
