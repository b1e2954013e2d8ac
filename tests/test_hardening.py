"""The public SDK key is untrusted: typed ids, signed identify, server keys, caps, exposures."""

from __future__ import annotations

import itertools

import pytest

from server import create_app
from tests.support import decide as _decide
from tests.support import sign
from tests.support import start_experiment as _start


def _identify(client, key, visitor, ids, **extra):
    return client.post("/v1/identify", json={"visitor_id": visitor, "ids": ids, **extra},
                       headers=key)


def _track(client, key, visitor, event_id, metric="purchase", **extra):
    r = client.post("/v1/track", json={"visitor_id": visitor, "metric": metric,
                                       "event_id": event_id, **extra}, headers=key)
    assert r.status_code == 200, r.json
    return r.json


def _exposures(client, admin, key="hero"):
    rows = client.get(f"/v1/experiments/{key}/counters", headers=admin).json["rows"]
    return sum(r["exposures"] for r in rows)


# 1. Identity takeover


def test_an_sdk_key_cannot_read_a_customer_by_naming_their_id(client, admin, sdk, server):
    _start(client, admin, mode="ab")
    client.put("/v1/personas", json=[{"name": "vip", "when": {
        "fact": "attributes.tier", "op": "eq", "value": "gold"}}], headers=admin)
    mine = _decide(client, server, "c-1001", id_type="customer_id",
                   attributes={"tier": "gold"})
    assert mine["persona"] == "vip"
    # The attacker names the customer id as its visitor id: it is a stranger's id.
    theirs = _decide(client, sdk, "c-1001")
    assert theirs["persona"] == "default"
    assert theirs["decisions"][0]["reason"] == "assigned"
    # And cannot claim the customer's id type at all.
    r = client.post("/v1/decide", json={"visitor_id": "c-1001", "id_type": "customer_id",
                                        "channel": "web"}, headers=sdk)
    assert r.status_code == 403 and "id_type" in r.json["error"]["fields"]
    profile = client.get("/v1/visitors/c-1001?id_type=customer_id", headers=admin).json
    assert profile["attributes"] == {"tier": "gold"} and len(profile["ids"]) == 0


def test_linking_a_customer_with_the_sdk_key_needs_the_backends_signature(client, admin, sdk):
    for extra in ({}, {"signature": sign("victim", secret="guessed")},
                  {"signature": sign("someone-else")}):
        r = _identify(client, sdk, "attacker-device", {"customer_id": "victim"}, **extra)
        assert r.status_code == 403 and "signature" in r.json["error"]["fields"], r.json
    r = _identify(client, sdk, "attacker-device", {"email_sha256": "e" * 64})
    assert r.status_code == 403
    # A signature made for an e-mail hash never passes for a customer id of the same text.
    r = _identify(client, sdk, "attacker-device", {"customer_id": "e" * 64},
                  signature=sign("e" * 64, id_type="email_sha256"))
    assert r.status_code == 403
    # Nothing was squatted: the customer id is still free, the device owns nothing.
    assert client.get("/v1/visitors/victim?id_type=customer_id",
                      headers=admin).status_code == 404
    r = _identify(client, sdk, "victims-phone", {"customer_id": "victim"},
                  signature=sign("victim"))
    assert r.status_code == 200 and r.json["visitor_id"] == "victims-phone"
    profile = client.get("/v1/visitors/victim?id_type=customer_id", headers=admin).json
    assert profile["known"] is True and profile["visitor_id"] == "victims-phone"


def test_an_sdk_key_cannot_join_a_known_customers_profile_through_another_id(
        client, admin, sdk, server):
    _start(client, admin)
    assert _identify(client, sdk, "victims-phone", {"customer_id": "victim"},
                     signature=sign("victim")).status_code == 200
    assert _identify(client, server, "victims-phone", {"device_id": "hw-1"}).status_code == 200
    _track(client, server, "victim", "order-1", value=80.0, id_type="customer_id")
    for ids in ({"visitor_id": "victims-phone"}, {"device_id": "hw-1"}):
        r = _identify(client, sdk, "attacker-device", ids)
        assert r.status_code == 403, r.json
    # The attacker's own device learned nothing and changed nothing.
    assert client.get("/v1/visitors/attacker-device", headers=admin).status_code == 404
    victim = client.get("/v1/visitors/victim?id_type=customer_id", headers=admin).json
    assert victim["lifecycle"]["lifetime_value"] == 80.0
    assert {i["id"] for i in victim["ids"]} == {"victim", "hw-1"}


def test_id_types_never_collide(client, admin, server):
    assert _identify(client, server, "phone", {"device_id": "x"}).status_code == 200
    assert _identify(client, server, "laptop", {"customer_id": "x"}).status_code == 200
    phone = client.get("/v1/visitors/x?id_type=device_id", headers=admin).json
    laptop = client.get("/v1/visitors/x?id_type=customer_id", headers=admin).json
    assert phone["visitor_id"] == "phone" and laptop["visitor_id"] == "laptop"
    assert phone["known"] is False and laptop["known"] is True
    assert client.get("/v1/visitors/x", headers=admin).status_code == 404  # no visitor_id "x"


def test_server_keys_act_by_customer_id_but_cannot_administer(client, admin, server):
    _start(client, admin)
    d = _decide(client, server, "c-7", "email", id_type="customer_id")["decisions"][0]
    assert d["reason"] == "assigned"
    bought = _track(client, server, "c-7", "o-1", value=30.0, id_type="customer_id")
    assert bought["attributed"] == [{"experiment": "hero", "variant": d["variant"],
                                     "event_id": "o-1"}]
    assert _identify(client, server, "c-7", {"email_sha256": "a" * 64},
                     id_type="customer_id").status_code == 200
    for method, path in (("GET", "/v1/experiments"), ("POST", "/v1/experiments/hero/stop"),
                         ("GET", "/v1/visitors/c-7"), ("PUT", "/v1/personas")):
        assert client.open(path, method=method, headers=server, json=[]).status_code == 403


def test_lowercase_bearer_scheme_is_accepted(client, sdk):
    key = sdk["Authorization"].split(" ", 1)[1]
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web"},
                        headers={"Authorization": f"{scheme} {key}"})
        assert r.status_code == 200, (scheme, r.json)


def test_an_sdk_key_cannot_claim_ids_a_victim_may_later_log_in_with(client, admin, sdk,
                                                                    server):
    _start(client, admin)
    _decide(client, sdk, "attacker")
    # Squatting a device id, or pulling in another browser's cookie: both refused.
    for ids in ({"device_id": "victims-future-phone"}, {"visitor_id": "victims-new-cookie"},
                {"customer_id": "attacker", "device_id": "victims-future-phone"}):
        r = _identify(client, sdk, "attacker", ids,
                      **({"signature": sign("attacker")} if "customer_id" in ids else {}))
        assert r.status_code == 403, (ids, r.json)
    # The victim logs in later on that phone: the attacker is no part of the customer.
    assert _identify(client, server, "victims-new-cookie",
                     {"customer_id": "vic", "device_id": "victims-future-phone"}).status_code == 200
    _track(client, sdk, "attacker", "evil", value=90_000.0)
    victim = client.get("/v1/visitors/vic?id_type=customer_id", headers=admin).json
    assert "attacker" not in {i["id"] for i in victim["ids"]}
    assert victim["lifecycle"]["lifetime_value"] == 0.0
    assert client.get("/v1/visitors/attacker", headers=admin).json["known"] is False


def test_a_bound_signature_works_for_one_browser_until_it_expires(client, admin, sdk, clock):
    expires = int(clock.now) + 300
    good = sign("c-1", visitor_id="browser-1", expires=expires)
    # Leaked to another browser: refused; the unbound form of it: refused.
    for visitor, extra in (("browser-2", {"signature_expires": expires}), ("browser-1", {})):
        r = _identify(client, sdk, visitor, {"customer_id": "c-1"}, signature=good, **extra)
        assert r.status_code == 403, r.json
    r = _identify(client, sdk, "browser-1", {"customer_id": "c-1"}, signature=good,
                  signature_expires=expires)
    assert r.status_code == 200, r.json
    clock.advance(301)
    late = _identify(client, sdk, "browser-1", {"customer_id": "c-1"}, signature=good,
                     signature_expires=expires)
    assert late.status_code == 403 and "signature_expires" in late.json["error"]["fields"]


# 3. Unbounded data from the public key


def test_invented_segments_are_capped_and_folded_into_other(settings, clock, admin_app):
    app = admin_app(settings.with_changes(max_segments=4))
    client, admin, server, sdk = app["client"], app["admin"], app["server"], app["sdk"]
    _start(client, admin)
    # The public key cannot invent personas at all.
    r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web",
                                        "persona": "made-up"}, headers=sdk)
    assert r.status_code == 400 and "persona" in r.json["error"]["fields"]
    for name in ("persona", "channel"):
        r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web",
                                            name: "other"}, headers=server)
        assert r.status_code == 400 and name in r.json["error"]["fields"]
    # A backend may, but an experiment holds at most 4 segments; the rest is other/other.
    for i in range(12):
        _decide(client, server, f"v-{i}", f"ch-{i % 3}", persona=f"p-{i}")
    rows = client.get("/v1/experiments/hero/counters", headers=admin).json["rows"]
    segments = {(r["persona"], r["channel"]) for r in rows if r["exposures"]}
    assert len(segments - {("other", "other")}) == 4
    assert ("other", "other") in segments
    assert sum(r["exposures"] for r in rows) == 12
    report = client.get("/v1/experiments/hero/report", headers=admin).json
    assert report["segment_cap"]["reached"] is True and report["segment_cap"]["limit"] == 4
    assert "other" in report["segment_cap"]["text"]
    # A segment admitted before the cap keeps its own counts.
    _decide(client, server, "v-new", "ch-0", persona="p-0")
    rows = client.get("/v1/experiments/hero/counters", headers=admin).json["rows"]
    assert sum(r["exposures"] for r in rows if r["persona"] == "p-0") == 2


def test_configured_channels_refuse_invented_ones(settings, clock, admin_app):
    app = admin_app(settings.with_changes(channels="web, app"))
    client, sdk = app["client"], app["sdk"]
    r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "made-up"}, headers=sdk)
    assert r.status_code == 400 and "channel" in r.json["error"]["fields"]
    assert _decide(client, sdk, "v", "app")["persona"] == "default"


def test_the_segment_cap_is_exact_with_persona_rules_across_workers(settings, clock,
                                                                     admin_app):
    capped = settings.with_changes(max_segments=2)
    first = admin_app(capped)
    client, admin = first["client"], first["admin"]
    client.put("/v1/personas", json=[{"name": f"p{i}", "when": {
        "fact": "attributes.kind", "op": "eq", "value": i}} for i in range(4)], headers=admin)
    _start(client, admin)
    # Three fresh workers, each seeing new segments settled by the rules inside Redis.
    for n, worker in enumerate([first, admin_app(capped), admin_app(capped)]):
        for i in range(4):
            for channel in ("web", "app"):
                _decide(worker["client"], worker["sdk"], f"w{n}-{i}-{channel}", channel,
                        attributes={"kind": i})
    rows = client.get("/v1/experiments/hero/counters", headers=admin).json["rows"]
    named = {(r["persona"], r["channel"]) for r in rows if r["exposures"]} - {("other", "other")}
    # Near the cap (2 is always near) the first worker counts a new segment's first visitor
    # as other/other and admits p0 on web and app; the fresh workers know the registry.
    assert named == {("p0", "web"), ("p0", "app")}, named
    assert sum(r["exposures"] for r in rows) == 3 * 4 * 2


def test_merges_keep_the_attribute_cap(client, admin, sdk, server, app):
    limit = app.extensions["centric"].settings.max_profile_attributes
    devices = [f"dev-{i}" for i in range(3)]
    for n, device in enumerate(devices):
        for half in range(2):
            attrs = {f"d{n}_{half * 100 + i}": i for i in range(100)}
            _decide(client, sdk, device, attributes=attrs)
    for device in devices[1:]:
        assert _identify(client, server, devices[0], {"visitor_id": device}).status_code == 200
    profile = client.get(f"/v1/visitors/{devices[0]}", headers=admin).json
    assert len(profile["attributes"]) == limit
    # The cap still holds for the next decide: one more attribute is refused, removing works.
    r = client.post("/v1/decide", json={"visitor_id": devices[1], "channel": "web",
                                        "attributes": {"one_more": 1}}, headers=sdk)
    assert r.status_code == 400 and "attributes" in r.json["error"]["fields"]


def test_a_profile_links_a_bounded_number_of_ids(client, server, app):
    limit = app.extensions["centric"].settings.max_linked_ids
    linked = 1
    while linked + 10 <= limit:
        ids = {f"t{linked + i}": "x" for i in range(10)}
        assert _identify(client, server, "hoarder", ids).status_code == 200
        linked += 10
    r = _identify(client, server, "hoarder", {f"u{i}": "x" for i in range(10)})
    assert r.status_code == 409 and "ids" in r.json["error"]["fields"]
    # Nor through a merge with another profile that holds many.
    assert _identify(client, server, "other", {f"w{i}": "y" for i in range(10)}).status_code == 200
    assert _identify(client, server, "hoarder", {"visitor_id": "other"}).status_code == 409


def test_sdk_events_for_visitors_never_seen_create_nothing(client, admin, sdk, server, app,
                                                           rclient, prefix):
    before = set(rclient.scan_iter(match=f"*{{{prefix}:s*", count=1000))
    events = [{"visitor_id": f"ghost-{i}", "metric": "purchase", "value": 9.0,
               "event_id": f"e-{i}"} for i in range(50)]
    r = client.post("/v1/track", json={"events": events}, headers=sdk)
    assert r.status_code == 200 and r.json["accepted"] == 50 and r.json["attributed"] == []
    assert set(rclient.scan_iter(match=f"*{{{prefix}:s*", count=1000)) == before
    # The shop's backend reporting an order by customer id still records lifecycle facts.
    _track(client, server, "c-55", "order-55", value=42.0, id_type="customer_id")
    profile = client.get("/v1/visitors/c-55?id_type=customer_id", headers=admin).json
    assert profile["known"] is True
    assert profile["lifecycle"]["purchase_count"] == 1
    assert profile["lifecycle"]["lifetime_value"] == 42.0


def test_channels_per_profile_are_bounded(client, admin, sdk, app):
    limit = app.extensions["centric"].settings.max_profile_channels
    for i in range(limit + 10):
        _decide(client, sdk, "roamer", f"ch-{i}")
    profile = client.get("/v1/visitors/roamer", headers=admin).json
    assert len(profile["channels"]) == limit


def test_one_sdk_event_cannot_outweigh_a_variants_revenue(client, admin, sdk, server, app):
    limit = app.extensions["centric"].settings.max_sdk_value
    _start(client, admin, metric={"name": "purchase", "kind": "revenue"})
    _decide(client, sdk, "v")
    r = client.post("/v1/track", json={"visitor_id": "v", "metric": "purchase",
                                       "value": limit * 10, "event_id": "huge"}, headers=sdk)
    assert r.status_code == 400 and "value" in r.json["error"]["fields"]
    assert _track(client, sdk, "v", "fine", value=limit)["attributed"]
    # The shop's order system reports any order.
    assert _track(client, server, "v", "big-order", value=limit * 10)["attributed"]


# 6. Refunds and negative values


def test_only_refund_events_lower_lifetime_value(client, admin, server):
    _track(client, server, "c-9", "o-1", value=100.0, id_type="customer_id")
    r = client.post("/v1/track", json={"visitor_id": "c-9", "id_type": "customer_id",
                                       "metric": "purchase", "value": -60.0,
                                       "event_id": "o-2"}, headers=server)
    assert r.status_code == 400 and "value" in r.json["error"]["fields"]
    _track(client, server, "c-9", "r-1", metric="refund", value=30.0, id_type="customer_id")
    _track(client, server, "c-9", "r-2", metric="refund", value=-500.0, id_type="customer_id")
    life = client.get("/v1/visitors/c-9?id_type=customer_id", headers=admin).json["lifecycle"]
    assert life["purchase_count"] == 1
    assert life["lifetime_value"] == 0.0  # 100 - 30 - 500, never below zero


# 7. Alias chains


def test_links_point_straight_at_the_person_after_many_merges(client, admin, sdk, server,
                                                               app):
    _start(client, admin)
    chain = [f"hop-{i}" for i in range(12)]
    for device in chain:
        _decide(client, sdk, device)
    # Each device in turn joins the previous one's person: twelve merges in a row.
    for previous, device in itertools.pairwise(chain):
        assert _identify(client, server, device, {"visitor_id": previous}).status_code == 200
    services = app.extensions["centric"]
    owner = services.identity.store.owner(f"visitor_id:{chain[0]}")
    for device in chain:
        alias = services.redis.hget(services.keys.visitor(f"visitor_id:{device}").profile,
                                    "alias")
        assert alias in (None, owner), (device, alias)
    variants = {_decide(client, sdk, d)["decisions"][0]["variant"] for d in chain}
    assert len(variants) == 1


def test_one_hop_limit_for_every_path_and_lookups_compact_chains(client, admin, sdk, server,
                                                                 app):
    _start(client, admin)
    services = app.extensions["centric"]
    target = _decide(client, sdk, "person")["decisions"][0]
    # A chain of eight links (the limit), as concurrent merges and expiries can leave behind.
    chain = [f"visitor_id:link-{i}" for i in range(8)]
    for here, there in itertools.pairwise([*chain, "visitor_id:person"]):
        services.redis.hset(services.keys.visitor(here).profile, "alias", there)
    for path in ("/v1/decide", "/v1/identify", "/v1/track"):
        body = {"/v1/decide": {"visitor_id": "link-0", "channel": "web"},
                "/v1/identify": {"visitor_id": "link-0", "ids": {"device_id": "d-1"}},
                "/v1/track": {"visitor_id": "link-0", "metric": "purchase",
                              "event_id": "e-1"}}[path]
        r = client.post(path, json=body, headers=server)
        assert r.status_code == 200, (path, r.json)
    d = _decide(client, sdk, "link-0")["decisions"][0]
    assert (d["variant"], d["reason"]) == (target["variant"], "sticky")
    # The identify lookup left every link pointing straight at the person.
    for link in chain:
        assert services.redis.hget(services.keys.visitor(link).profile, "alias") == \
            "visitor_id:person", link
    # One link more than the limit is refused the same way everywhere.
    longer = [f"visitor_id:far-{i}" for i in range(9)]
    for here, there in itertools.pairwise([*longer, "visitor_id:person"]):
        services.redis.hset(services.keys.visitor(here).profile, "alias", there)
    assert _decide(client, server, "far-0")["decisions"][0]["reason"] == "fallback"
    for path, body in (("/v1/identify", {"visitor_id": "far-0", "ids": {"device_id": "d-2"}}),
                       ("/v1/track", {"visitor_id": "far-0", "metric": "purchase",
                                      "event_id": "e-2"})):
        r = client.post(path, json=body, headers=server)
        assert r.status_code == 503, (path, r.json)
    # A profile that is busy (or broken) makes only its own visitor fall back.
    assert _decide(client, sdk, "someone-else")["decisions"][0]["reason"] == "assigned"


# Exposures only for what was shown


def test_unconfirmed_decisions_are_not_exposures_and_collect_nothing(client, admin, sdk):
    _start(client, admin)
    d = _decide(client, sdk, "v", expose=False)["decisions"][0]
    assert d["reason"] == "assigned"
    assert _exposures(client, admin) == 0
    assert _track(client, sdk, "v", "early")["attributed"] == []
    # The page rendered it: the SDK confirms, once however often it retries.
    body = {"visitor_id": "v", "decisions": [{"experiment": "hero",
                                              "decision_id": d["decision_id"]}]}
    assert d["pending"] is True
    first = client.post("/v1/expose", json=body, headers=sdk).json
    again = client.post("/v1/expose", json=body, headers=sdk).json
    # Once confirmed, the next page's sticky decision needs no confirmation.
    assert _decide(client, sdk, "v", expose=False)["decisions"][0]["pending"] is False
    assert first == {"exposed": 1, "duplicates": 0, "ignored": 0}
    assert again == {"exposed": 0, "duplicates": 1, "ignored": 0}
    assert _exposures(client, admin) == 1
    assert _track(client, sdk, "v", "later")["attributed"][0]["variant"] == d["variant"]


def test_a_pending_assignment_stays_sticky_and_counts_when_shown(client, admin, sdk, server):
    _start(client, admin)
    first = _decide(client, sdk, "v", expose=False)["decisions"][0]
    again = _decide(client, sdk, "v", expose=False)["decisions"][0]
    assert (again["variant"], again["reason"], again["decision_id"]) == (
        first["variant"], "sticky", first["decision_id"])
    assert _exposures(client, admin) == 0
    # A one-call decide (the default) counts the pending exposure when it shows it.
    shown = _decide(client, sdk, "v")["decisions"][0]
    assert shown["reason"] == "sticky" and _exposures(client, admin) == 1
    _decide(client, sdk, "v")
    assert _exposures(client, admin) == 1


def test_expose_ignores_what_it_cannot_match(client, admin, sdk):
    _start(client, admin)
    d = _decide(client, sdk, "v", expose=False)["decisions"][0]
    body = {"visitor_id": "v", "decisions": [
        {"experiment": "hero", "decision_id": "0" * 32},
        {"experiment": "nope", "decision_id": d["decision_id"]},
    ]}
    r = client.post("/v1/expose", json=body, headers=sdk)
    assert r.status_code == 200 and r.json == {"exposed": 0, "duplicates": 0, "ignored": 2}
    r = client.post("/v1/expose", json={**body, "visitor_id": "stranger"}, headers=sdk)
    assert r.json["ignored"] == 2 and _exposures(client, admin) == 0


def test_a_batch_keeps_its_valid_events(client, admin, sdk):
    _start(client, admin)
    _decide(client, sdk, "v")
    events = [{"visitor_id": "v", "metric": "purchase", "value": 10.0, "event_id": "ok-1"},
              {"visitor_id": "v", "metric": "Bad Name", "event_id": "bad-1"},
              {"visitor_id": "v", "metric": "purchase", "value": 5.0, "event_id": "ok-2"},
              "not an event"]
    r = client.post("/v1/track", json={"events": events}, headers=sdk)
    assert r.status_code == 200
    assert r.json["accepted"] == 2
    assert [x["index"] for x in r.json["rejected"]] == [1, 3]
    assert "metric" in r.json["rejected"][0]["fields"]
    profile = client.get("/v1/visitors/v", headers=admin).json
    assert profile["lifecycle"]["purchase_count"] == 2


def test_a_late_confirmation_still_credits_what_happened_after_the_page_showed_it(
        client, admin, sdk, clock):
    _start(client, admin)
    d = _decide(client, sdk, "v", expose=False)["decisions"][0]
    clock.advance(20)  # the confirmation waited in the browser's queue (offline, retries)
    body = {"visitor_id": "v", "decisions": [{"experiment": "hero",
                                              "decision_id": d["decision_id"]}]}
    assert client.post("/v1/expose", json=body, headers=sdk).json["exposed"] == 1
    # The purchase happened 10 s after the page showed the variant, before the confirmation.
    assert _track(client, sdk, "v", "order", age=10)["attributed"] != []


def test_a_batch_refuses_a_forbidden_event_alone(client, admin, sdk):
    _start(client, admin)
    _decide(client, sdk, "v")
    events = [{"visitor_id": "v", "metric": "purchase", "event_id": "ok"},
              {"visitor_id": "c-1", "id_type": "customer_id", "metric": "purchase",
               "event_id": "not-mine"}]
    r = client.post("/v1/track", json={"events": events}, headers=sdk)
    assert r.status_code == 200 and r.json["accepted"] == 1
    assert r.json["rejected"] == [{"index": 1, "fields": {"id_type": "needs a server key"}}]


def test_odd_paths_and_methods_stay_in_the_envelope_and_out_of_the_metrics(client, sdk):
    r = client.post("//v1//decide", json={"visitor_id": "v", "channel": "web"}, headers=sdk)
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"
    for i in range(3):
        assert client.open("/x", method=f"ZZZ{i}").status_code in (404, 405)
    text = client.get("/metrics").get_data(as_text=True)
    assert "ZZZ" not in text and 'method="other"' in text


def test_an_events_age_beats_a_device_clock_that_is_behind(client, admin, sdk, clock):
    _start(client, admin)
    _decide(client, sdk, "v")
    clock.advance(600)
    # The device's clock is a day behind: its timestamp would predate the assignment...
    stamp = clock.now - 86400 - 60
    assert _track(client, sdk, "v", "by-stamp", timestamp=stamp)["attributed"] == []
    # ...but the event's age (measured on that same clock) places it correctly.
    assert _track(client, sdk, "v", "by-age", age=60)["attributed"] != []


@pytest.fixture
def admin_app(clock):
    """Build another app (other settings) with its own admin and SDK keys."""
    import numpy as np

    def build(settings):
        app = create_app(settings, clock=clock, rng=np.random.default_rng(11))
        store = app.extensions["centric"].api_keys
        return {"client": app.test_client(),
                "admin": {"Authorization": "Bearer " + store.create("admin")},
                "server": {"Authorization": "Bearer " + store.create("server")},
                "sdk": {"Authorization": "Bearer " + store.create("sdk")}}

    return build
