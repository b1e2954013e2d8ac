"""Customer value on a running server, moments and their members, and the repeat metric.

Customers are built through the API only: purchases tracked with past timestamps by a server
key, as a shop's back end would import its order history.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from experiments import customer_value as cv
from tests.support import experiment_body, start_experiment

DAY = 86400.0


def _buy(client: Any, server: dict[str, str], clock: Any, customer: str, days_ago: float,
         value: float, n: int) -> None:
    r = client.post("/v1/track", headers=server, json={
        "visitor_id": customer, "id_type": "customer_id", "metric": "purchase",
        "value": value, "event_id": f"order-{customer}-{n}",
        "timestamp": clock() - days_ago * DAY})
    assert r.status_code == 200, r.json


def _customer(client, server, clock, customer: str, purchases: list[tuple[float, float]]):
    """A customer whose purchases were (days ago, value), oldest first."""
    for n, (days_ago, value) in enumerate(purchases):
        _buy(client, server, clock, customer, days_ago, value, n)


def _shop(client, server, clock, count: int = 60) -> dict[str, list[tuple[float, float]]]:
    """A shop with varied histories: one-off buyers, regulars and lapsed customers."""
    rng = np.random.default_rng(11)
    histories = {}
    for i in range(count):
        first = float(rng.uniform(20, 300))
        repeats = int(rng.poisson(2.0)) if i % 3 else 0
        times = sorted(rng.uniform(0, first, size=repeats), reverse=True)
        purchases = [(first, float(rng.gamma(4, 10)))] + [
            (float(t), float(rng.gamma(4, 12))) for t in times]
        histories[f"c{i:03d}"] = purchases
        _customer(client, server, clock, f"c{i:03d}", purchases)
    return histories


def _profile(client, admin, customer: str) -> dict[str, Any]:
    r = client.get(f"/v1/visitors/{customer}?id_type=customer_id", headers=admin)
    assert r.status_code == 200, r.json
    return dict(r.json)


def test_fit_stores_the_model_and_scores_every_customer(client, admin, server, clock):
    histories = _shop(client, server, clock)
    r = client.post("/v1/models/clv/fit", headers=admin)
    assert r.status_code == 200, r.json
    model = r.json
    assert model["customers"] == 60 and model["time_unit"] == "days"
    assert model["repeat_customers"] == sum(len(h) > 1 for h in histories.values())
    assert client.get("/v1/models/clv", headers=admin).json == model
    bg = cv.BgNbdParams.from_json(model["bgnbd"])
    gg = cv.GammaGammaParams.from_json(model["gamma_gamma"])
    # Each profile's predictions are the models' at the history the shop really had:
    # frequency = purchases - 1, in days, spend = the mean of the repeat purchases only.
    for customer in ("c001", "c002", "c003"):
        h = histories[customer]
        x, tx, age = len(h) - 1, h[0][0] - h[-1][0], h[0][0]
        m = float(np.mean([v for _, v in h[1:]])) if x else 0.0
        p = _profile(client, admin, customer)["predictions"]
        assert p["p_alive"] == pytest.approx(float(cv.p_alive(bg, x, tx, age)), rel=1e-6)
        assert p["expected_purchases_90d"] == pytest.approx(
            float(cv.expected_purchases(bg, 90, x, tx, age)), rel=1e-6)
        assert p["predicted_clv_365d"] == pytest.approx(
            float(cv.predicted_value(bg, gg, 365, x, tx, age, m)), rel=1e-6)
        assert 0 < p["p_alive"] <= 1 and p["predicted_at"] == clock()


def test_predictions_are_facts_persona_rules_use(client, admin, server, sdk, clock):
    _shop(client, server, clock)
    assert client.post("/v1/models/clv/fit", headers=admin).status_code == 200
    values = {c: _profile(client, admin, c)["predictions"]["predicted_clv_365d"]
              for c in ("c001", "c002", "c004", "c005")}
    threshold = float(np.median(list(values.values())))
    r = client.put("/v1/personas", headers=admin, json=[{"name": "valuable", "when": {
        "fact": "predicted_clv_365d", "op": "gt", "value": threshold}}])
    assert r.status_code == 200, r.json
    start_experiment(client, admin, mode="ab")
    for customer, value in values.items():
        r = client.post("/v1/decide", headers=server, json={
            "visitor_id": customer, "id_type": "customer_id", "channel": "web"})
        assert r.status_code == 200
        assert (r.json["persona"] == "valuable") is (value > threshold), customer


def test_a_fit_needs_enough_customers(client, admin, server, clock):
    _customer(client, server, clock, "lonely", [(10, 5.0), (3, 6.0)])
    r = client.post("/v1/models/clv/fit", headers=admin)
    assert r.status_code == 409 and "customers" in r.json["error"]["fields"]
    assert client.get("/v1/models/clv", headers=admin).status_code == 404
    assert "predictions" in _profile(client, admin, "lonely")
    assert _profile(client, admin, "lonely")["predictions"] is None


SECOND_PURCHASE = {"all": [{"fact": "days_since_first_purchase", "op": "gte", "value": 10},
                           {"fact": "purchase_count", "op": "eq", "value": 1}]}


def _moments(client, admin, *moments: dict[str, Any]) -> Any:
    return client.put("/v1/moments", headers=admin, json=list(moments))


def _members(client, headers, name: str = "second", **query: Any) -> dict[str, Any]:
    r = client.get(f"/v1/moments/{name}/members", headers=headers, query_string=query)
    assert r.status_code == 200, r.json
    return dict(r.json)


def _sweep(client, admin) -> dict[str, Any]:
    r = client.post("/v1/moments/sweep", headers=admin)
    assert r.status_code == 200, r.json
    return dict(r.json)


def test_members_are_exactly_who_the_rule_holds_for_once_per_entry(client, admin, server,
                                                                    clock):
    start_experiment(client, admin, key="nudge", mode="ab", variants=[
        {"key": "control", "weight": 1, "payload": {"subject": "Thanks"}},
        {"key": "voucher", "weight": 1, "payload": {"subject": "10% off"}}])
    r = _moments(client, admin, {"name": "second", "when": SECOND_PURCHASE,
                                 "experiment": "nudge"})
    assert r.status_code == 200, r.json
    assert r.json[0]["channel"] == "email"
    _customer(client, server, clock, "ann", [(12, 30.0)])  # in: 12 days, one purchase
    _customer(client, server, clock, "bob", [(5, 30.0)])  # not yet: 5 days
    _customer(client, server, clock, "cat", [(40, 30.0), (2, 20.0)])  # bought again: out
    client.post("/v1/decide", headers=server, json={
        "visitor_id": "dan", "id_type": "customer_id", "channel": "web",
        "experiments": []})  # known, but never bought
    assert _sweep(client, admin)["entered"] == {"second": 1}
    first = _members(client, server)
    assert [m["customer_id"] for m in first["members"]] == ["ann"]
    (ann,) = first["members"]
    assert ann["id_type"] == "customer_id" and ann["entry"] == 1
    assert ann["entered_at"] == clock()
    decision = ann["decision"]
    assert decision["experiment"] == "nudge" and decision["reason"] == "assigned"
    assert decision["variant"] in {"control", "voucher"} and decision["propensity"] == 0.5
    assert decision["payload"]["subject"] in {"Thanks", "10% off"}
    # A retried page is the same page, with the same (sticky, counted once) decision.
    retried = _members(client, server)
    assert retried["members"][0]["decision"].pop("reason") == "sticky"
    decision.pop("reason")
    assert retried == first
    report = client.get("/v1/experiments/nudge/report", headers=admin).json
    assert sum(v["exposures"] for v in report["variants"]) == 1

    # Six days on, bob is in too; the job that kept its cursor gets only bob.
    clock.advance(6 * DAY)
    assert _sweep(client, admin)["entered"] == {"second": 1}
    later = _members(client, server, cursor=first["next_cursor"])
    assert [m["customer_id"] for m in later["members"]] == ["bob"]
    assert later["has_more"] is False and later["count"] == 2
    # Nothing new since bob's entry; the cursor stays where it was.
    nothing = _members(client, server, cursor=later["next_cursor"])
    assert nothing["members"] == [] and nothing["next_cursor"] == later["next_cursor"]

    # ann buys again: she leaves the moment.
    _buy(client, server, clock, "ann", 0, 25.0, 9)
    assert _sweep(client, admin)["left"] == {"second": 1}
    assert [m["customer_id"] for m in _members(client, server)["members"]] == ["bob"]


def test_a_member_who_did_not_react_comes_back_after_the_cooldown(client, admin, server,
                                                                   clock):
    start_experiment(client, admin, key="nudge", mode="ab")
    start_experiment(client, admin, key="reminder", mode="ab")
    assert _moments(client, admin, {
        "name": "second", "when": SECOND_PURCHASE, "experiment": "nudge",
        "followup_experiment": "reminder", "cooldown_days": 7}).status_code == 200
    _customer(client, server, clock, "ann", [(12, 30.0)])
    _sweep(client, admin)
    (first,) = _members(client, server)["members"]
    assert first["entry"] == 1 and first["decision"]["experiment"] == "nudge"
    clock.advance(3 * DAY)
    assert _sweep(client, admin)["entered"] == {"second": 0}  # still within the cool-down
    clock.advance(4 * DAY)
    assert _sweep(client, admin)["entered"] == {"second": 1}
    (again,) = _members(client, server, cursor=first["entry_id"].split(":")[1])["members"]
    assert again["customer_id"] == "ann" and again["entry"] == 2
    assert again["decision"]["experiment"] == "reminder"
    assert again["entered_at"] == clock()


def test_member_pages_cover_everyone_once(client, admin, server, clock):
    assert _moments(client, admin, {"name": "second", "when": SECOND_PURCHASE}).status_code == 200
    customers = {f"p{i:03d}" for i in range(230)}
    for c in customers:
        _customer(client, server, clock, c, [(15, 10.0)])
    _sweep(client, admin)
    seen: list[str] = []
    cursor, more, pages = "0", True, 0
    while more:
        page = _members(client, server, cursor=cursor, limit=100)
        assert all(m["decision"] is None for m in page["members"])  # no experiment named
        seen += [m["customer_id"] for m in page["members"]]
        cursor, more, pages = page["next_cursor"], page["has_more"], pages + 1
    assert pages == 3 and len(seen) == len(set(seen)) == 230 and set(seen) == customers


def test_moments_refuse_bad_input_naming_the_field(client, admin, sdk, viewer, server):
    cases = [
        ({"name": "Bad Name", "when": SECOND_PURCHASE}, "moments.0.name"),
        ({"name": "m", "when": {"fact": "nope", "op": "eq", "value": 1}}, "moments.0.when.fact"),
        ({"name": "m", "when": SECOND_PURCHASE, "cooldown_days": -1}, "moments.0.cooldown_days"),
        ({"name": "m", "when": SECOND_PURCHASE, "experiment": "missing"}, "moments.0.experiment"),
        ({"name": "m", "when": SECOND_PURCHASE, "followup_experiment": "x"},
         "moments.0.followup_experiment"),
        ({"name": "m", "when": SECOND_PURCHASE, "extra": 1}, "moments.0.extra"),
    ]
    for body, field in cases:
        r = _moments(client, admin, body)
        assert r.status_code == 400, body
        assert field in r.json["error"]["fields"], (field, r.json)
    assert _moments(client, admin, {"name": "m", "when": SECOND_PURCHASE},
                    {"name": "m", "when": SECOND_PURCHASE}).status_code == 400
    assert client.put("/v1/moments", headers=admin, json={"name": "m"}).status_code == 400
    for headers in (sdk, viewer):
        assert client.get("/v1/moments/m/members", headers=headers).status_code == 403
        assert _moments(client, headers, {"name": "m", "when": SECOND_PURCHASE}).status_code \
            == 403
    assert client.get("/v1/moments/nope/members", headers=server).status_code == 404
    for query in ({"cursor": "-1"}, {"cursor": "x" * 100}, {"limit": 0}, {"limit": 10**9}):
        r = client.get("/v1/moments/nope/members", headers=server, query_string=query)
        assert r.status_code == 400, query
    assert client.post("/v1/models/clv/fit", headers=server).status_code == 403


def test_a_moment_can_target_a_persona_and_attributes(client, admin, server, clock):
    r = client.put("/v1/personas", headers=admin, json=[{"name": "big", "when": {
        "fact": "lifetime_value", "op": "gte", "value": 100}}])
    assert r.status_code == 200
    assert _moments(client, admin, {"name": "second", "when": {"all": [
        SECOND_PURCHASE, {"fact": "persona", "op": "eq", "value": "big"},
        {"fact": "attributes.newsletter", "op": "eq", "value": True}]}}).status_code == 200
    for customer, value, newsletter in [("big-yes", 150.0, True), ("big-no", 150.0, False),
                                        ("small-yes", 20.0, True)]:
        client.post("/v1/decide", headers=server, json={
            "visitor_id": customer, "id_type": "customer_id", "channel": "web",
            "experiments": [], "attributes": {"newsletter": newsletter}})
        _customer(client, server, clock, customer, [(12, value)])
    _sweep(client, admin)
    assert [m["customer_id"] for m in _members(client, server)["members"]] == ["big-yes"]


def test_an_anonymous_buyer_joins_once_identify_makes_them_known(client, admin, server, clock):
    assert _moments(client, admin, {"name": "second", "when": SECOND_PURCHASE}).status_code == 200
    r = client.post("/v1/track", headers=server, json={
        "visitor_id": "cookie-1", "metric": "purchase", "value": 30.0, "event_id": "o-1",
        "timestamp": clock() - 12 * DAY})
    assert r.status_code == 200
    assert _sweep(client, admin)["customers"] == 0  # anonymous: no customer to mail
    r = client.post("/v1/identify", headers=server, json={
        "visitor_id": "cookie-1", "ids": {"customer_id": "ann"}})
    assert r.status_code == 200, r.json
    assert _sweep(client, admin)["entered"] == {"second": 1}
    (member,) = _members(client, server)["members"]
    assert (member["customer_id"], member["id_type"]) == ("ann", "customer_id")


def test_erasing_a_customer_removes_them_from_moments(client, admin, server, clock):
    assert _moments(client, admin, {"name": "second", "when": SECOND_PURCHASE}).status_code == 200
    _customer(client, server, clock, "ann", [(12, 30.0)])
    _sweep(client, admin)
    assert _members(client, server)["count"] == 1
    r = client.delete("/v1/visitors/ann?id_type=customer_id", headers=admin)
    assert r.status_code == 200
    assert _members(client, server)["count"] == 0
    assert _sweep(client, admin)["customers"] == 0


def test_a_repeat_metric_counts_only_purchases_after_an_earlier_one(client, admin, server,
                                                                      clock):
    metric = {"name": "purchase", "kind": "repeat", "within_days": 30}
    start_experiment(client, admin, key="win", mode="ab", metric=metric)
    _customer(client, server, clock, "returning", [(20, 30.0)])

    def decide(customer: str) -> str:
        r = client.post("/v1/decide", headers=server, json={
            "visitor_id": customer, "id_type": "customer_id", "channel": "email",
            "experiments": ["win"]})
        return str(r.json["decisions"][0]["variant"])

    for customer in ("returning", "newcomer", "slow"):
        decide(customer)
    # The slow one had bought before the message (imported late), but buys again too late.
    _customer(client, server, clock, "slow", [(25, 10.0)])
    clock.advance(2 * DAY)
    _buy(client, server, clock, "returning", 0, 20.0, 5)  # a second purchase: counts
    _buy(client, server, clock, "newcomer", 0, 20.0, 5)  # a first purchase: does not
    clock.advance(31 * DAY)
    _buy(client, server, clock, "slow", 0, 20.0, 5)  # too late: does not
    report = client.get("/v1/experiments/win/report", headers=admin).json
    assert report["metric"]["kind"] == "repeat"
    assert sum(v["conversions"] for v in report["variants"]) == 1
    assert sum(v["exposures"] for v in report["variants"]) == 3


def test_a_repeat_metric_is_validated(client, admin):
    for metric, field in [({"name": "purchase", "kind": "repeat"}, "metric.within_days"),
                          ({"name": "purchase", "kind": "conversion", "within_days": 3},
                           "metric.within_days"),
                          ({"name": "purchase", "kind": "repeat", "within_days": 0},
                           "metric.within_days"),
                          ({"name": "signup", "kind": "repeat", "within_days": 3},
                           "metric.name")]:
        r = client.post("/v1/experiments", headers=admin,
                        json=experiment_body(metric=metric))
        assert r.status_code == 400, metric
        assert field in r.json["error"]["fields"], (field, r.json)


def test_a_customer_merged_away_leaves_the_moment_and_is_listed_once(client, admin, server,
                                                                     clock):
    assert _moments(client, admin, {"name": "second", "when": SECOND_PURCHASE}).status_code == 200
    for customer in ("ann", "ann-mail"):
        id_type = "customer_id" if customer == "ann" else "email_sha256"
        ident = customer if id_type == "customer_id" else "a" * 64
        r = client.post("/v1/track", headers=server, json={
            "visitor_id": ident, "id_type": id_type, "metric": "purchase", "value": 30.0,
            "event_id": f"o-{customer}", "timestamp": clock() - 40 * DAY})
        assert r.status_code == 200
    _sweep(client, admin)
    assert _members(client, server)["count"] == 2
    # Both are one person: linking them merges one profile into the other (two purchases).
    r = client.post("/v1/identify", headers=server, json={
        "visitor_id": "ann", "id_type": "customer_id", "ids": {"email_sha256": "a" * 64}})
    assert r.status_code == 200, r.json
    page = _members(client, server)
    assert len(page["members"]) <= 1  # the merged-away profile is never listed
    _sweep(client, admin)
    assert _members(client, server)["count"] == 0  # two purchases now: nobody is in


def test_an_erasure_during_a_sweep_is_never_undone(app, client, admin, server, clock, rclient):
    start_experiment(client, admin, key="nudge", mode="ab")
    assert _moments(client, admin, {"name": "second", "when": SECOND_PURCHASE,
                                    "experiment": "nudge"}).status_code == 200
    _customer(client, server, clock, "ann", [(12, 30.0)])
    _sweep(client, admin)
    # The profile goes while the membership stays (an erase between a sweep's read and write).
    keys = app.extensions["centric"].keys
    rclient.delete(keys.visitor("customer_id:ann").profile)
    assert _members(client, server)["members"] == []
    assert client.get("/v1/visitors/ann?id_type=customer_id", headers=admin).status_code == 404
    assert _members(client, server)["count"] == 0


def test_a_deleted_experiment_leaves_members_without_a_message(client, admin, server, clock):
    start_experiment(client, admin, key="nudge", mode="ab")
    assert _moments(client, admin, {"name": "second", "when": SECOND_PURCHASE,
                                    "experiment": "nudge"}).status_code == 200
    _customer(client, server, clock, "ann", [(12, 30.0)])
    _sweep(client, admin)
    assert client.post("/v1/experiments/nudge/stop", headers=admin).status_code == 200
    assert client.delete("/v1/experiments/nudge", headers=admin).status_code == 204
    (member,) = _members(client, server)["members"]
    assert member["customer_id"] == "ann" and member["decision"] is None


def test_nobody_enters_twice_within_the_cooldown(client, admin, server, clock):
    rule = {"fact": "lifetime_value", "op": "lt", "value": 50}
    assert _moments(client, admin, {"name": "second", "when": rule,
                                    "cooldown_days": 7}).status_code == 200
    _buy(client, server, clock, "ann", 1, 30.0, 0)
    assert _sweep(client, admin)["entered"] == {"second": 1}
    r = client.post("/v1/track", headers=server, json={
        "visitor_id": "ann", "id_type": "customer_id", "metric": "refund", "value": 0,
        "event_id": "noop"})
    assert r.status_code == 200
    _buy(client, server, clock, "ann", 0, 30.0, 1)  # 60: out
    assert _sweep(client, admin)["left"] == {"second": 1}
    client.post("/v1/track", headers=server, json={
        "visitor_id": "ann", "id_type": "customer_id", "metric": "refund", "value": 20.0,
        "event_id": "refund-1"})  # 40: the rule holds again, a day later
    clock.advance(DAY)
    assert _sweep(client, admin)["entered"] == {"second": 0}  # within the cool-down
    clock.advance(7 * DAY)
    assert _sweep(client, admin)["entered"] == {"second": 1}
    (member,) = _members(client, server)["members"]
    assert member["entry"] == 2


def test_a_moment_defined_again_keeps_counting_and_a_stale_sweep_writes_nothing(
        app, client, admin, server, clock):
    services = app.extensions["centric"]
    moment = {"name": "second", "when": SECOND_PURCHASE}
    assert _moments(client, admin, moment).status_code == 200
    _customer(client, server, clock, "ann", [(12, 30.0)])
    _sweep(client, admin)
    cursor = _members(client, server)["next_cursor"]
    old = services.moments.store.load()[0]
    old_generation = services.moments.store.generations()["second"]
    assert _moments(client, admin).status_code == 200  # deleted ...
    assert _moments(client, admin, moment).status_code == 200  # ... and defined again
    # A sweep that read the old definition writes nothing into the new one.
    assert services.moments.store.sweep(old, old_generation, int(clock() * 1000),
                                        [("customer_id:ann", True)]) == (0, 0)
    assert _members(client, server)["count"] == 0
    _sweep(client, admin)
    (again,) = _members(client, server, cursor=cursor)["members"]  # numbered after the old
    assert again["customer_id"] == "ann"


def test_a_merge_keeps_the_first_purchase_value_with_the_first_purchase(app, client, admin,
                                                                        server, clock, rclient):
    from server.services.customer_value import history_of

    client.post("/v1/track", headers=server, json={
        "visitor_id": "guest", "metric": "purchase", "value": 100.0, "event_id": "g-1",
        "timestamp": clock() - 20 * DAY})
    _buy(client, server, clock, "ann", 5, 20.0, 1)
    r = client.post("/v1/identify", headers=server, json={
        "visitor_id": "guest", "ids": {"customer_id": "ann"}})
    assert r.status_code == 200, r.json
    keys = app.extensions["centric"].keys
    canonical = next(n for n in ("customer_id:ann", "visitor_id:guest")
                     if rclient.hget(keys.visitor(n).profile, "pc") == "2")
    profile = rclient.hgetall(keys.visitor(canonical).profile)
    h = history_of(canonical, profile, int(clock() * 1000))
    assert h is not None and h.frequency == 1 and h.monetary == pytest.approx(20.0)
    assert h.age == pytest.approx(20.0) and h.recency == pytest.approx(15.0)
