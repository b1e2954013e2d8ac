"""Decide: targeting, stickiness, holdout, coverage, many experiments in one Redis round trip."""

from __future__ import annotations

import numpy as np
import redis

from server import create_app
from tests.support import decide as _decide
from tests.support import experiment_body
from tests.support import start_experiment as _start


def test_sticky_assignment_and_payload(client, admin, sdk):
    _start(client, admin)
    first = _decide(client, sdk, "v1")["decisions"][0]
    assert first["reason"] == "assigned" and first["experiment"] == "hero"
    assert 0 < first["propensity"] <= 1
    for _ in range(5):
        again = _decide(client, sdk, "v1")["decisions"][0]
        assert again["reason"] == "sticky"
        assert again["variant"] == first["variant"]
        assert again["decision_id"] == first["decision_id"]
        assert again["payload"] == first["payload"]


def test_many_experiments_in_one_call_and_implicit_list(client, admin, sdk):
    _start(client, admin, key="a-one")
    _start(client, admin, key="b-two", mode="ab")
    _start(client, admin, key="c-web-only", audience={"channels": ["web"]})
    client.post("/v1/experiments", json=experiment_body(key="d-draft"), headers=admin)
    d = _decide(client, sdk, "v", channel="app")
    assert [x["experiment"] for x in d["decisions"]] == ["a-one", "b-two"]
    d = _decide(client, sdk, "v", channel="app",
                experiments=["c-web-only", "d-draft", "a-one"])
    assert [(x["experiment"], x["reason"]) for x in d["decisions"]] == [
        ("c-web-only", "not_targeted"), ("d-draft", "not_running"), ("a-one", "sticky")]
    assert d["decisions"][0]["variant"] == "control"
    assert d["decisions"][0]["payload"] == {"headline": "Welcome"}


def test_unknown_experiment_is_404_naming_the_item(client, admin, sdk):
    _start(client, admin)
    r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web",
                                        "experiments": ["hero", "ghost"]}, headers=sdk)
    assert r.status_code == 404
    assert r.json["error"]["fields"] == {"experiments.1": "unknown experiment 'ghost'"}


def test_persona_targeting_and_response_persona(client, admin, sdk):
    _start(client, admin, audience={"personas": ["vip"]})
    d = _decide(client, sdk, "v")
    assert d["persona"] == "default" and d["decisions"] == []
    d = _decide(client, sdk, "v", persona="vip")
    assert d["persona"] == "vip" and d["decisions"][0]["reason"] == "assigned"


def test_attribute_rules_use_attributes_stored_by_earlier_calls(client, admin, sdk):
    rules = [{"fact": "attributes.plan", "op": "in", "value": ["pro", "team"]},
             {"any": [{"fact": "attributes.age", "op": "gte", "value": 18},
                      {"fact": "attributes.guardian", "op": "exists", "value": True}]}]
    _start(client, admin, audience={"rules": rules})
    assert _decide(client, sdk, "v")["decisions"] == []
    assert _decide(client, sdk, "v", attributes={"plan": "pro"})["decisions"] == []
    # The plan is remembered in the profile; age arrives later.
    d = _decide(client, sdk, "v", attributes={"age": 30})
    assert d["decisions"][0]["reason"] == "assigned"
    assert _decide(client, sdk, "w", attributes={"plan": "free", "age": 40})["decisions"] == []
    d = _decide(client, sdk, "x", attributes={"plan": "team", "guardian": "mum"})
    assert d["decisions"][0]["reason"] == "assigned"
    # Unsetting an attribute (null) takes the visitor out of the audience.
    d = _decide(client, sdk, "v", experiments=["hero"], attributes={"plan": None})
    assert d["decisions"][0]["reason"] == "not_targeted"


def test_rule_semantics_for_missing_and_list_attributes(client, admin, sdk):
    rules = [{"fact": "attributes.tags", "op": "eq", "value": "sale"},
             {"fact": "attributes.banned", "op": "ne", "value": True},
             {"not": {"fact": "attributes.score", "op": "lt", "value": 0.5}}]
    _start(client, admin, audience={"rules": rules})
    assert _decide(client, sdk, "v1", attributes={"tags": ["new", "sale"]})["decisions"]
    assert not _decide(client, sdk, "v2", attributes={"tags": ["new"]})["decisions"]
    assert not _decide(client, sdk, "v3", attributes={"tags": "sale", "banned": True})["decisions"]
    assert not _decide(client, sdk, "v4", attributes={"tags": "sale", "score": 0.1})["decisions"]
    # A string never compares as a number.
    assert _decide(client, sdk, "v5", attributes={"tags": "sale", "score": "0.1"})["decisions"]


def test_coverage_share(client, admin, sdk):
    _start(client, admin, mode="ab", coverage=0.3)
    entered = sum(
        _decide(client, sdk, f"v{i}", experiments=["hero"])["decisions"][0]["reason"] == "assigned"
        for i in range(1000))
    # Binomial(1000, 0.3): sd 14.5, so +-5 sd.
    assert 228 <= entered <= 372


def test_holdout_is_uniform_and_flagged(client, admin, sdk):
    variants = [{"key": k, "weight": w} for k, w in [("control", 1), ("b", 8), ("c", 1)]]
    _start(client, admin, mode="ab", holdout=0.5, variants=variants)
    counts = {"control": 0, "b": 0, "c": 0}
    held = 0
    for i in range(1200):
        d = _decide(client, sdk, f"v{i}")["decisions"][0]
        if d["reason"] == "holdout":
            held += 1
            counts[d["variant"]] += 1
            assert abs(d["propensity"] - (0.5 / 3 + 0.5 * {"control": .1, "b": .8, "c": .1}[
                d["variant"]])) < 1e-9
    assert 500 <= held <= 700
    # Uniform inside the holdout despite 1:8:1 weights.
    for n in counts.values():
        assert abs(n - held / 3) < 5 * (held * (1 / 3) * (2 / 3)) ** 0.5


class CountingRedis(redis.Redis):
    """A real client that counts round trips (commands and pipelines)."""

    trips = 0

    def execute_command(self, *args, **kwargs):
        CountingRedis.trips += 1
        return super().execute_command(*args, **kwargs)

    def pipeline(self, *args, **kwargs):
        pipe = super().pipeline(*args, **kwargs)
        original = pipe.execute

        def execute(*a, **k):
            CountingRedis.trips += 1
            return original(*a, **k)

        pipe.execute = execute
        return pipe


def test_decide_is_one_round_trip_for_many_experiments(redis_url, settings, admin, client):
    for i in range(4):
        _start(client, admin, key=f"exp-{i}", mode="bandit" if i % 2 else "ab",
               audience={"rules": [{"fact": "attributes.plan", "op": "exists", "value": True}]})
    counting = CountingRedis.from_url(redis_url, decode_responses=True)
    app = create_app(settings.with_changes(refresh_interval=3600.0, posterior_interval=3600.0),
                     redis_client=counting,
                     rng=np.random.default_rng(1))
    c = app.test_client()
    body = {"visitor_id": "v", "channel": "web", "attributes": {"plan": "pro"}}
    c.post("/v1/decide", json=body, headers=admin)  # warms caches (definitions, posteriors, key)
    for visitor in ("v", "w", "x"):
        CountingRedis.trips = 0
        r = c.post("/v1/decide", json={**body, "visitor_id": visitor}, headers=admin)
        assert len(r.json["decisions"]) == 4
        assert CountingRedis.trips == 1


def test_definitions_change_reaches_other_apps(settings, client, admin, sdk):
    _start(client, admin)
    other = create_app(settings.with_changes(refresh_interval=0.0)).test_client()
    assert other.post("/v1/decide", json={"visitor_id": "v", "channel": "web"},
                      headers=sdk).json["decisions"]
    client.post("/v1/experiments/hero/pause", headers=admin)
    assert other.post("/v1/decide", json={"visitor_id": "v", "channel": "web"},
                      headers=sdk).json["decisions"] == []


def test_sticky_answer_repeats_the_exact_propensity(client, admin, sdk):
    _start(client, admin, variants=[{"key": k} for k in ("control", "b", "c")], holdout=0.1)
    for visitor in ("p1", "p2", "p3"):
        first = _decide(client, sdk, visitor)["decisions"][0]
        again = _decide(client, sdk, visitor)["decisions"][0]
        assert again["propensity"] == first["propensity"]


def test_large_integer_attributes_keep_full_precision(client, admin, sdk):
    _start(client, admin, audience={"rules": [
        {"fact": "attributes.customer_no", "op": "eq", "value": 123456789012345}]})
    _decide(client, sdk, "v", attributes={"customer_no": 123456789012345})
    assert _decide(client, sdk, "v", experiments=["hero"])["decisions"][0]["reason"] == "sticky"
    d = _decide(client, sdk, "w", attributes={"customer_no": 123456789012346})
    assert d["decisions"] == []


def test_profile_attribute_count_is_capped_without_partial_writes(app, client, admin, sdk):
    _start(client, admin, audience={"rules": [
        {"fact": "attributes.a0", "op": "exists", "value": True}]})
    for batch in range(2):
        attrs = {f"a{batch * 100 + i}": i for i in range(100)}
        _decide(client, sdk, "v", attributes=attrs)
    r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web",
                                        "attributes": {"one_more": 1}}, headers=sdk)
    assert r.status_code == 400 and "attributes" in r.json["error"]["fields"]
    services = app.extensions["centric"]
    assert len(services.identity.store.attribute_names("visitor_id:v")) == 200
    # Removing one makes room again.
    assert client.post("/v1/decide", json={"visitor_id": "v", "channel": "web",
                                           "attributes": {"a5": None, "one_more": 1}},
                       headers=sdk).status_code == 200


def test_implicit_decide_serves_a_shipped_winner(client, admin, sdk):
    _start(client, admin)
    client.post("/v1/experiments/hero/stop", json={"winner": "benefit"}, headers=admin)
    d = _decide(client, sdk, "anyone")["decisions"]
    assert [(x["experiment"], x["variant"], x["reason"]) for x in d] == [
        ("hero", "benefit", "winner")]


def test_changes_reach_a_worker_with_the_default_refresh_interval(settings, client, admin, sdk):
    _start(client, admin)
    other = create_app(settings.with_changes(refresh_interval=0.5)).test_client()
    body = {"visitor_id": "v", "channel": "web"}
    assert other.post("/v1/decide", json=body, headers=sdk).json["decisions"]
    client.post("/v1/experiments/hero/pause", headers=admin)
    import time

    time.sleep(1.0)  # the promise: visible within a second
    assert other.post("/v1/decide", json=body, headers=sdk).json["decisions"] == []


def test_explicit_decide_of_a_just_created_experiment_is_not_404(settings, client, admin, sdk):
    slow = create_app(settings.with_changes(refresh_interval=3600.0)).test_client()
    slow.post("/v1/decide", json={"visitor_id": "v", "channel": "web"}, headers=sdk)  # warm
    _start(client, admin)
    d = slow.post("/v1/decide", json={"visitor_id": "v", "channel": "web",
                                      "experiments": ["hero"]}, headers=sdk)
    assert d.status_code == 200 and d.json["decisions"][0]["reason"] == "assigned"
