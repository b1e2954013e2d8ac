"""The rule language's golden cases, run through the Python twin and the Lua evaluator.

Every case of tests/golden/rules.json must give its expected outcome in
experiments/rule_eval.py and in server/lua/decide.lua. The Lua side is the production decide
path: the case's facts are built up for a fresh visitor through the API (earlier decide calls,
purchases tracked at a controlled clock, a customer id for `known`), the rule is an
experiment's audience, and, where a persona rule may hold it, also the rule of a persona. One
decide call then tells whether the experiment targeted the visitor and which persona matched.
Before that call the visitor's stored profile, fed to rule_eval.build_facts, must give exactly
the case's facts, so the Python side is fed what Lua reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.rule_eval import (
    DEFAULT_PERSONA,
    build_facts,
    choose_persona,
    evaluate,
    evaluate_all,
    explain,
)
from experiments.rules import validate_rule
from server import identities
from server.stores.customer_value import Prediction
from server.stores.identity import ProfileState
from tests.support import experiment_body

GOLDEN = json.loads((Path(__file__).parent / "golden" / "rules.json").read_text("utf-8"))
DEFAULTS: dict[str, Any] = GOLDEN["defaults"]
RULE_CASES: list[dict[str, Any]] = GOLDEN["rules"]
PERSONA_CASES: list[dict[str, Any]] = GOLDEN["personas"]
DAY = 86400.0
HIT = "hit"  # the persona whose rule is the case's rule


def _facts(case: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **case["facts"]}


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


# --- Python -------------------------------------------------------------------------------

def test_cases_are_valid_rules():
    # Every case must be a rule the API accepts, or the Lua side could not run it.
    for case in RULE_CASES:
        rule = case["rule"]
        top = rule["all"] if set(rule) == {"all"} else [rule]
        assert not any(validate_rule(r, "rule") for r in top), case["name"]
    for case in PERSONA_CASES:
        for p in case["personas"]:
            assert not validate_rule(p["when"], "when", allow_persona=False), case["name"]
    assert len(RULE_CASES) >= 60


@pytest.mark.parametrize("case", RULE_CASES, ids=_ids(RULE_CASES))
def test_python(case):
    facts = _facts(case)
    assert evaluate(case["rule"], facts) is case["expected"]
    explanation = explain(case["rule"], facts)
    assert explanation.result is case["expected"]
    assert set(explanation.facts) <= {c.fact for c in explanation.checks}
    assert all(facts.get(name) == value for name, value in explanation.facts.items())


@pytest.mark.parametrize("case", PERSONA_CASES, ids=_ids(PERSONA_CASES))
def test_python_personas(case):
    choice = choose_persona(case["personas"], _facts(case))
    assert (choice.name, choice.index) == (case["expected"]["persona"],
                                           case["expected"]["index"])
    assert (choice.matched is not None) == (choice.index is not None)


def test_empty_groups_follow_lua_truthiness():
    # Not reachable through the API (validation refuses empty groups), but an empty Lua
    # table is truthy: the script's all of nothing holds and any of nothing fails.
    assert evaluate({"all": []}, {}) is True
    assert evaluate({"any": []}, {}) is False
    assert evaluate({"not": {"any": []}}, {}) is True
    assert evaluate_all([], {}) is True


def test_explain_names_the_deciding_part_and_the_facts_read():
    rule = {"all": [{"fact": "channel", "op": "eq", "value": "web"},
                    {"any": [{"fact": "attributes.plan", "op": "eq", "value": "pro"},
                             {"fact": "lifetime_value", "op": "gte", "value": 100}]},
                    {"fact": "attributes.country", "op": "eq", "value": "CH"}]}
    facts = {"channel": "web", "attributes.plan": "free", "lifetime_value": 20}
    e = explain(rule, facts, path="audience.rules")
    assert e.result is False
    # The any failed as a whole (both its children), so it is what stopped the all.
    assert e.decided_by == "audience.rules.all.1"
    assert [c.path for c in e.checks] == ["audience.rules.all.0", "audience.rules.all.1.any.0",
                                          "audience.rules.all.1.any.1"]
    # The last leaf was never evaluated, so its fact was not read.
    assert e.facts == {"channel": "web", "attributes.plan": "free", "lifetime_value": 20}
    facts["lifetime_value"] = 150
    facts["attributes.country"] = "CH"
    e = explain(rule, facts)
    assert (e.result, e.decided_by) == (True, "")
    assert explain(rule["all"][1], facts).decided_by == "any.1"
    missing = explain({"not": {"fact": "attributes.x", "op": "eq", "value": 1}}, {})
    assert (missing.result, missing.decided_by) == (True, "not")
    assert missing.checks[0].missing and missing.facts == {"attributes.x": None}
    assert json.dumps(e.to_json())


def test_persona_rules_see_the_default_persona():
    personas = [{"name": "vip", "when": {"fact": "persona", "op": "eq", "value": "default"}}]
    choice = choose_persona(personas, {"persona": "staff"})
    assert (choice.name, choice.index) == ("vip", 0)
    assert choice.matched is not None and choice.matched.decided_by == "0.when"


def test_build_facts_reads_the_profile_as_the_script_does():
    now = 1_790_000_000_000
    profile = {"first_seen": str(now - 10 * 86_400_000), "fp": str(now - 36 * 3_600_000),
               "lp": str(now - 36 * 3_600_000), "pc": "1", "ltv": "0.8", "known": "1"}
    facts = build_facts(profile, {"plan": '"pro"', "n": "5", "gone": "1"}, now_ms=now,
                        channel="app", request_attributes={"gone": None, "tags": ("a", "b")},
                        persona="vip")
    assert facts == {"attributes.plan": "pro", "attributes.n": 5, "attributes.tags": ["a", "b"],
                     "channel": "app", "persona": "vip", "days_since_first_purchase": 1.5,
                     "days_since_last_purchase": 1.5, "days_since_first_seen": 10.0,
                     "purchase_count": 1.0, "lifetime_value": 0.8, "known": True}
    fresh = build_facts({}, {}, now_ms=now, channel="web")
    assert fresh == {"channel": "web", "persona": DEFAULT_PERSONA, "days_since_first_seen": 0.0,
                     "purchase_count": 0.0, "lifetime_value": 0.0, "known": False}
    assert build_facts({}, {}, now_ms=now, channel="web", known_id=True)["known"] is True


# --- Lua, through the API -----------------------------------------------------------------

class Visitor:
    """A fresh visitor whose profile the API builds up to a case's facts."""

    def __init__(self, client: Any, headers: dict[str, str], rclient: Any, app: Any,
                 clock: Any, case: dict[str, Any]) -> None:
        self.client, self.headers, self.rclient, self.clock = client, headers, rclient, clock
        self.services = app.extensions["centric"]
        self.case = case
        self.facts = _facts(case)
        self.setup = case.get("setup", {})
        self.id_type = "customer_id" if self.facts["known"] else identities.VISITOR
        self.id = "golden-visitor"
        self.now = clock.now

    def _at(self, days_ago: float) -> None:
        self.clock.now = self.now - days_ago * DAY

    def build(self) -> None:
        """Earlier contact, stored attributes and purchases, leaving the clock at 'now'."""
        f, setup = self.facts, self.setup
        count = f["purchase_count"]
        first, last = f.get("days_since_first_purchase"), f.get("days_since_last_purchase")
        seen = f["days_since_first_seen"]
        if count:
            assert first is not None and last is not None and seen >= first >= last
            assert count > 1 or first == last
        else:
            assert first is None and last is None and f["lifetime_value"] == 0
        stored = setup.get("stored_attributes")
        if seen or stored:
            # First contact: a decide that records first_seen (and the stored attributes).
            self._at(seen)
            self._decide({"experiments": [], "attributes": stored or {}})
        # The whole lifetime value on the first purchase, unless the case says how it adds up.
        values = setup.get("purchase_values") or ([f["lifetime_value"]] + [0] * (count - 1)
                                                  if count else [])
        assert len(values) == count
        for i, value in enumerate(values):
            # The first purchase opens the span, every later one lands on the last day.
            days_ago = first if i == 0 else last
            assert days_ago is not None
            self._at(days_ago)
            r = self.client.post("/v1/track", headers=self.headers, json={
                "visitor_id": self.id, "id_type": self.id_type, "metric": "purchase",
                "value": value, "event_id": f"purchase-{i}"})
            assert r.status_code == 200, r.json
        self.clock.now = self.now
        if "predictions" in setup:
            # What a customer-value fit leaves on the profile, through the store that owns it.
            p = setup["predictions"]
            node = identities.node(self.id_type, self.id)
            stored = self.services.customer_value.store.write_predictions([(node, Prediction(
                p["p_alive"], p["expected_purchases_90d"], p["predicted_clv_365d"],
                int(self.clock() * 1000)))])
            assert stored == 1

    def request_attributes(self) -> dict[str, Any]:
        """What the deciding call sends: the setup's, else every attribute fact."""
        if "stored_attributes" in self.setup or "request_attributes" in self.setup:
            return dict(self.setup.get("request_attributes", {}))
        return {name.removeprefix("attributes."): value for name, value in self.facts.items()
                if name.startswith("attributes.")}

    def stored_facts(self) -> dict[str, Any]:
        """The facts rule_eval derives from the profile as stored before the deciding call."""
        vk = self.services.keys.visitor(identities.node(self.id_type, self.id))
        state = ProfileState.of(self.rclient.hgetall(vk.profile), {})
        return build_facts(state.profile, state.attributes,
                           now_ms=int(self.clock() * 1000), channel=self.facts["channel"],
                           request_attributes=self.request_attributes(),
                           persona=self.facts["persona"],
                           known_id=self.id_type in identities.KNOWN_TYPES)

    def decide(self, experiments: list[str]) -> dict[str, Any]:
        """The deciding call, with the case's channel, attributes and persona."""
        body: dict[str, Any] = {"experiments": experiments,
                                "attributes": self.request_attributes()}
        if self.facts["persona"] != DEFAULT_PERSONA:
            body["persona"] = self.facts["persona"]
        return self._decide(body)

    def _decide(self, extra: dict[str, Any]) -> dict[str, Any]:
        r = self.client.post("/v1/decide", headers=self.headers, json={
            "visitor_id": self.id, "id_type": self.id_type, "channel": self.facts["channel"],
            **extra})
        assert r.status_code == 200, r.json
        return dict(r.json)


@pytest.mark.parametrize("case", RULE_CASES, ids=_ids(RULE_CASES))
def test_lua(case, client, admin, server, rclient, app, clock):
    rule = case["rule"]
    # The audience list is the script's top-level all: a top-level all is sent as that list.
    audience = rule["all"] if set(rule) == {"all"} else [rule]
    body = experiment_body("golden", mode="ab", audience={"rules": audience})
    assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
    assert client.post("/v1/experiments/golden/start", headers=admin).status_code == 200
    # A persona rule evaluates the same rule at the script's other call site; persona rules
    # cannot read the persona, and explicit personas skip them.
    as_persona = (case["facts"].get("persona", DEFAULT_PERSONA) == DEFAULT_PERSONA
                  and not validate_rule(rule, "when", allow_persona=False))
    if as_persona:
        r = client.put("/v1/personas", json=[{"name": HIT, "when": rule}], headers=admin)
        assert r.status_code == 200, r.json
    visitor = Visitor(client, server, rclient, app, clock, case)
    visitor.build()
    assert visitor.stored_facts() == _facts(case)
    answer = visitor.decide(["golden"])
    (decision,) = answer["decisions"]
    assert decision["reason"] in {"assigned", "not_targeted"}
    assert (decision["reason"] == "assigned") is case["expected"]
    if as_persona:
        assert (answer["persona"] == HIT) is case["expected"]


@pytest.mark.parametrize("case", PERSONA_CASES, ids=_ids(PERSONA_CASES))
def test_lua_personas(case, client, admin, server, rclient, app, clock):
    r = client.put("/v1/personas", json=case["personas"], headers=admin)
    assert r.status_code == 200, r.json
    visitor = Visitor(client, server, rclient, app, clock, case)
    visitor.build()
    assert visitor.stored_facts() == _facts(case)
    assert visitor.decide([])["persona"] == case["expected"]["persona"]
