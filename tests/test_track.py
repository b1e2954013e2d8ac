"""Track: idempotency, attribution windows, conversion vs revenue counters, guardrails."""

from __future__ import annotations

from server.stores.visitors import INLINE_EVENTS
from tests.support import experiment_body


def _setup(client, admin, **overrides):
    body = experiment_body(**overrides)
    client.post("/v1/experiments", json=body, headers=admin)
    client.post(f"/v1/experiments/{body['key']}/start", headers=admin)


def _decide(client, sdk, visitor, channel="web"):
    return client.post("/v1/decide", json={"visitor_id": visitor, "channel": channel},
                       headers=sdk).json["decisions"]


def _track(client, sdk, **event):
    r = client.post("/v1/track", json=event, headers=sdk)
    assert r.status_code == 200, r.json
    return r.json


def _cells(client, admin, key="hero"):
    rows = client.get(f"/v1/experiments/{key}/counters", headers=admin).json["rows"]
    return {(r["group"], r["persona"], r["channel"], r["variant"]): r for r in rows}


def test_conversion_counts_distinct_visitors_once(client, admin, sdk):
    _setup(client, admin)
    variant = _decide(client, sdk, "v1")[0]["variant"]
    t = _track(client, sdk, visitor_id="v1", metric="purchase", event_id="e1")
    assert t == {"accepted": 1, "duplicates": 0,
                 "attributed": [{"experiment": "hero", "variant": variant, "event_id": "e1"}]}
    assert _track(client, sdk, visitor_id="v1", metric="purchase", event_id="e1") == {
        "accepted": 0, "duplicates": 1, "attributed": []}
    # A second purchase by the same visitor is accepted but the visitor converted already.
    _track(client, sdk, visitor_id="v1", metric="purchase", event_id="e2")
    cell = _cells(client, admin)[("policy", "default", "web", variant)]
    assert cell["exposures"] == 1
    assert cell["metrics"]["purchase"]["conversions"] == 1


def test_revenue_sums_per_visitor_and_squares_of_visitor_totals(client, admin, sdk):
    _setup(client, admin, mode="ab", variants=[{"key": "control"}, {"key": "b", "weight": 1e-9}],
           metric={"name": "revenue", "kind": "revenue"})
    for v in ("a", "b"):
        assert _decide(client, sdk, v)[0]["variant"] == "control"
    events = [("a", 10.0), ("a", 5.5), ("b", 2.0), ("a", -1.5)]
    for i, (visitor, value) in enumerate(events):
        _track(client, sdk, visitor_id=visitor, metric="revenue", value=value, event_id=f"e{i}")
    m = _cells(client, admin)[("policy", "default", "web", "control")]["metrics"]["revenue"]
    assert m["conversions"] == 2
    assert abs(m["value_sum"] - 16.0) < 1e-9
    # Visitor totals 14 and 2: 196 + 4.
    assert abs(m["value_sq_sum"] - 200.0) < 1e-9


def test_attribution_window_and_event_time(client, admin, sdk, clock):
    _setup(client, admin, attribution_window_hours=24)
    variant = _decide(client, sdk, "v")[0]["variant"]
    clock.advance(25 * 3600)
    late = _track(client, sdk, visitor_id="v", metric="purchase", event_id="late")
    assert late["accepted"] == 1 and late["attributed"] == []
    # An event stamped inside the window is still credited when it arrives late (offline queue).
    stamped = _track(client, sdk, visitor_id="v", metric="purchase", event_id="stamped",
                     timestamp=clock.now - 2 * 3600)
    assert stamped["attributed"] == [{"experiment": "hero", "variant": variant,
                                      "event_id": "stamped"}]
    # ...but not one from before the assignment (beyond clock-skew tolerance).
    clock.advance(1)
    early = _track(client, sdk, visitor_id="v", metric="purchase", event_id="early",
                   timestamp="2020-01-01T00:00:00Z")
    assert early["attributed"] == []


def test_other_metrics_guardrails_and_unassigned_visitors(client, admin, sdk):
    _setup(client, admin, guardrails=[{"name": "refund", "kind": "conversion"}])
    variant = _decide(client, sdk, "v")[0]["variant"]
    assert _track(client, sdk, visitor_id="v", metric="newsletter", event_id="n1")[
        "attributed"] == []
    assert _track(client, sdk, visitor_id="nobody", metric="purchase", event_id="p1") == {
        "accepted": 1, "duplicates": 0, "attributed": []}
    g = _track(client, sdk, visitor_id="v", metric="refund", event_id="r1")
    assert g["attributed"][0]["variant"] == variant
    m = _cells(client, admin)[("policy", "default", "web", variant)]["metrics"]
    assert m["refund"]["conversions"] == 1 and m["purchase"]["conversions"] == 0


def test_batch_with_duplicates_inside(client, admin, sdk):
    _setup(client, admin)
    _decide(client, sdk, "v")
    events = [{"visitor_id": "v", "metric": "purchase", "event_id": f"e{i % 3}"}
              for i in range(7)]
    r = client.post("/v1/track", json={"events": events}, headers=sdk).json
    assert r["accepted"] == 3 and r["duplicates"] == 4
    assert len(r["attributed"]) == 3


def test_outcomes_credit_the_assignment_segment(client, admin, sdk):
    _setup(client, admin)
    variant = _decide(client, sdk, "v", channel="email")[0]["variant"]
    _decide(client, sdk, "v", channel="web")  # sticky, still the e-mail segment
    _track(client, sdk, visitor_id="v", metric="purchase", event_id="x")
    cells = _cells(client, admin)
    assert cells[("policy", "default", "email", variant)]["metrics"]["purchase"][
        "conversions"] == 1
    assert ("policy", "default", "web", variant) not in cells


def test_paused_experiment_still_credits_open_assignments(client, admin, sdk):
    _setup(client, admin)
    variant = _decide(client, sdk, "v")[0]["variant"]
    client.post("/v1/experiments/hero/pause", headers=admin)
    r = _track(client, sdk, visitor_id="v", metric="purchase", event_id="x")
    assert r["attributed"] == [{"experiment": "hero", "variant": variant, "event_id": "x"}]


def test_a_worker_with_stale_definitions_still_credits(settings, client, admin, sdk, clock):
    from server import create_app

    stale = create_app(settings.with_changes(refresh_interval=3600.0), clock=clock).test_client()
    stale.post("/v1/track", json={"visitor_id": "x", "metric": "purchase", "event_id": "warm"},
               headers=sdk)  # caches definitions before the experiment exists
    _setup(client, admin)
    variant = _decide(client, sdk, "v")[0]["variant"]
    r = stale.post("/v1/track", json={"visitor_id": "v", "metric": "purchase",
                                      "event_id": "buy"}, headers=sdk).json
    assert r["attributed"] == [{"experiment": "hero", "variant": variant, "event_id": "buy"}]
    cell = _cells(client, admin)[("policy", "default", "web", variant)]
    assert cell["metrics"]["purchase"]["conversions"] == 1


def test_metrics_are_locked_while_running(client, admin, sdk):
    _setup(client, admin)
    r = client.put("/v1/experiments/hero", json=experiment_body(
        metric={"name": "purchase", "kind": "revenue"}), headers=admin)
    assert r.status_code == 409
    r = client.put("/v1/experiments/hero", json=experiment_body(
        guardrails=[{"name": "refund"}]), headers=admin)
    assert r.status_code == 409


def test_caller_timestamps_before_the_assignment_are_not_credited(client, admin, sdk, clock):
    _setup(client, admin)
    _decide(client, sdk, "v")
    before = _track(client, sdk, visitor_id="v", metric="purchase", event_id="b",
                    timestamp=clock.now - 120)
    assert before["attributed"] == []
    # Within the configured clock-skew allowance (30 s) it counts.
    near = _track(client, sdk, visitor_id="v", metric="purchase", event_id="n",
                  timestamp=clock.now - 10)
    assert len(near["attributed"]) == 1


def test_decisions_and_outcomes_are_logged_without_visitor_ids(app, client, admin, sdk,
                                                              rclient, prefix):
    _setup(client, admin)
    decision = _decide(client, sdk, "visitor-secret")[0]
    _track(client, sdk, visitor_id="visitor-secret", metric="purchase", event_id="o1")
    services = app.extensions["centric"]
    exp = services.experiments.get("hero")
    shard = services.keys.visitor("visitor_id:visitor-secret").shard
    entries = rclient.xrange(services.keys.log("hero", exp.seed, shard))
    kinds = [fields["k"] for _, fields in entries]
    assert kinds == ["d", "o"]
    assert entries[0][1]["d"] == entries[1][1]["d"] == decision["decision_id"]
    assert entries[1][1]["m"] == "purchase" and entries[1][1]["v"] == decision["variant"]
    assert not any("visitor-secret" in str(fields) for _, fields in entries)


def test_a_visitor_with_many_events_keeps_a_bounded_hash_and_exact_dedupe(app, client, admin,
                                                                         sdk, rclient):
    _setup(client, admin)
    _decide(client, sdk, "busy")
    sent = [f"ev-{i}" for i in range(INLINE_EVENTS + 20)]
    for event in sent:
        r = client.post("/v1/track", json={"visitor_id": "busy", "metric": "purchase",
                                           "event_id": event}, headers=sdk)
        assert r.json["accepted"] == 1
    vk = app.extensions["centric"].keys.visitor("visitor_id:busy")
    inline = [f for f in rclient.hkeys(vk.profile) if f.startswith("e:")]
    assert len(inline) == INLINE_EVENTS  # the latest; decide never reads more than these
    assert set(rclient.zrange(vk.events, 0, -1)) | {f[2:] for f in inline} == set(sent)
    assert 0 < rclient.pttl(vk.events)
    for event in (sent[0], sent[-1]):  # the oldest (in the set) and the newest (inline)
        r = client.post("/v1/track", json={"visitor_id": "busy", "metric": "purchase",
                                           "event_id": event}, headers=sdk)
        assert r.json["duplicates"] == 1
    profile = client.get("/v1/visitors/busy", headers=admin).json
    assert profile["lifecycle"]["purchase_count"] == len(sent)
