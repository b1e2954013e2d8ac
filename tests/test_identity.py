"""Identity graph, profiles, personas and lifecycle moments, privacy: through the HTTP API."""

from __future__ import annotations

import random
import threading

import pytest
import requests

from server.stores.visitors import INLINE_EVENTS
from tests.support import decide as _decide
from tests.support import experiment_body, gunicorn_server, sign
from tests.support import start_experiment as _start

DAY = 86400


def _identify(client, sdk, visitor, **ids):
    """Identify as a page would: a known id carries the signature the shop's backend made."""
    body = {"visitor_id": visitor, "ids": ids}
    if "customer_id" in ids:
        body["signature"] = sign(ids["customer_id"])
    elif "email_sha256" in ids:
        body["signature"] = sign(ids["email_sha256"], id_type="email_sha256")
    r = client.post("/v1/identify", json=body, headers=sdk)
    assert r.status_code == 200, r.json
    return r.json["visitor_id"]


def _track(client, sdk, visitor, event_id, metric="purchase", **extra):
    r = client.post("/v1/track", json={"visitor_id": visitor, "metric": metric,
                                       "event_id": event_id, **extra}, headers=sdk)
    assert r.status_code == 200, r.json
    return r.json


def test_cross_device_story(client, admin, sdk, server):
    _start(client, admin, variants=[{"key": k} for k in ("control", "b", "c", "d")])
    web = _decide(client, sdk, "cookie-1", "web")["decisions"][0]
    # Logs in on the web, later on the app (which had seen nothing before).
    canonical = _identify(client, sdk, "cookie-1", customer_id="c-42")
    assert canonical == "cookie-1"
    # The page gets its own id back, never another device's (a credential it must not learn).
    assert _identify(client, sdk, "device-9", customer_id="c-42") == "device-9"
    # The app's backend also links the hardware id it knows (a server key: a page cannot
    # prove it owns an id other than its own).
    assert _identify(client, server, "device-9", device_id="hw-9") == "cookie-1"
    app = _decide(client, sdk, "device-9", "app")["decisions"][0]
    assert (app["variant"], app["reason"]) == (web["variant"], "sticky")
    # The e-mail system decides by customer id with its server key.
    by_customer = _decide(client, server, "c-42", "email", id_type="customer_id")
    assert by_customer["decisions"][0]["variant"] == web["variant"]
    bought = _track(client, sdk, "device-9", "order-1", value=59.0)
    assert bought["attributed"] == [{"experiment": "hero", "variant": web["variant"],
                                     "event_id": "order-1"}]
    profile = client.get("/v1/visitors/c-42?id_type=customer_id", headers=admin).json
    assert profile["visitor_id"] == "cookie-1" and profile["known"] is True
    assert {(i["id"], i["type"]) for i in profile["ids"]} == {
        ("c-42", "customer_id"), ("device-9", "visitor_id"), ("hw-9", "device_id")}
    assert set(profile["channels"]) == {"web", "app", "email"}
    assert profile["lifecycle"]["purchase_count"] == 1
    assert profile["lifecycle"]["lifetime_value"] == 59.0
    (assignment,) = profile["assignments"]
    assert assignment["variant"] == web["variant"] and assignment["outcomes"] == {"purchase": 1}
    assert client.get("/v1/visitors/device-9", headers=admin).json == profile
    assert client.get("/v1/visitors/hw-9?id_type=device_id", headers=admin).json == profile


def _visitors_with_distinct_variants(client, sdk):
    seen: dict[str, str] = {}
    for i in range(50):
        variant = _decide(client, sdk, f"dev-{i}")["decisions"][0]["variant"]
        seen.setdefault(variant, f"dev-{i}")
        if len(seen) == 2:
            return seen["control"], seen["benefit"]
    raise AssertionError("no two variants among 50 visitors")


@pytest.mark.parametrize("first", [0, 1])
def test_two_assigned_devices_merge_by_the_documented_policy(client, admin, sdk, server, first):
    _start(client, admin, mode="ab")
    devices = _visitors_with_distinct_variants(client, sdk)
    variant = {d: _decide(client, sdk, d)["decisions"][0]["variant"] for d in devices}
    rows = client.get("/v1/experiments/hero/counters", headers=admin).json["rows"]
    before = {r["variant"]: r["exposures"] for r in rows}
    a, b = devices[first], devices[1 - first]
    assert _identify(client, sdk, a, customer_id="cust") == a
    # The second device joins the profile that already holds the customer id: its variant wins.
    assert _identify(client, sdk, b, customer_id="cust") == b
    # A server key learns the canonical visitor id, which saves a hop on later calls.
    assert _identify(client, server, b, customer_id="cust") == a
    for d in devices:
        d_now = _decide(client, sdk, d)["decisions"][0]
        assert (d_now["variant"], d_now["reason"]) == (variant[a], "sticky")
    # Both devices really saw their variant once: the merge leaves the exposures alone.
    rows = client.get("/v1/experiments/hero/counters", headers=admin).json["rows"]
    assert {r["variant"]: r["exposures"] for r in rows} == before


def test_new_customer_moment_comes_and_goes(client, admin, sdk, clock):
    personas = [
        {"name": "new_customer", "when": {"all": [
            {"fact": "days_since_first_purchase", "op": "lte", "value": 10}]}},
        {"name": "bargain_hunter", "when": {"any": [
            {"fact": "attributes.discount_affinity", "op": "gte", "value": 0.5}]}},
    ]
    r = client.put("/v1/personas", json=personas, headers=admin)
    assert r.status_code == 200 and r.json == personas
    assert client.get("/v1/personas", headers=admin).json == personas
    _start(client, admin, key="first")
    assert _decide(client, sdk, "v", attributes={"discount_affinity": 0.8})["persona"] == \
        "bargain_hunter"
    _track(client, sdk, "v", "order-1", value=20.0)
    clock.advance(3 * DAY)
    d = _decide(client, sdk, "v")
    assert d["persona"] == "new_customer"
    assert d["decisions"][0]["reason"] == "sticky"  # assigned earlier as a bargain hunter
    _start(client, admin, key="second")
    d = _decide(client, sdk, "v", experiments=["second"])
    assert d["persona"] == "new_customer" and d["decisions"][0]["reason"] == "assigned"
    clock.advance(11 * DAY)
    d = _decide(client, sdk, "v")
    assert d["persona"] == "bargain_hunter"
    _start(client, admin, key="third")
    assert _decide(client, sdk, "v", experiments=["third"])["decisions"][0]["reason"] == \
        "assigned"
    personas_of = {}
    for key in ("first", "second", "third"):
        rows = client.get(f"/v1/experiments/{key}/counters", headers=admin).json["rows"]
        personas_of[key] = {r["persona"] for r in rows if r["exposures"]}
    assert personas_of == {"first": {"bargain_hunter"}, "second": {"new_customer"},
                           "third": {"bargain_hunter"}}
    # An explicit persona in the request overrides the rules (with the public key, only one
    # the product owners defined).
    assert _decide(client, sdk, "v", persona="new_customer")["persona"] == "new_customer"


def test_persona_audience_is_decided_inside_redis(client, admin, sdk):
    client.put("/v1/personas", json=[{"name": "pro", "when": {
        "fact": "attributes.plan", "op": "eq", "value": "pro"}}], headers=admin)
    _start(client, admin, audience={"personas": ["pro"]})
    assert _decide(client, sdk, "v")["decisions"] == []
    d = _decide(client, sdk, "v", attributes={"plan": "pro"})
    assert d["persona"] == "pro" and d["decisions"][0]["reason"] == "assigned"


def test_invalid_personas_name_the_bad_part(client, admin):
    bad = [{"name": "ok", "when": {"fact": "purchase_count", "op": "gte", "value": 1}},
           {"name": "broken", "when": {"any": [{"fact": "lifetime_value", "op": "gt",
                                                 "value": "lots"}]}}]
    r = client.put("/v1/personas", json=bad, headers=admin)
    assert r.status_code == 400
    assert "personas.1.when.any.0.value" in r.json["error"]["fields"]
    for body, field in [
        ([{"name": "default", "when": {"fact": "known", "op": "eq", "value": True}}],
         "personas.0.name"),
        ([{"name": "loop", "when": {"fact": "persona", "op": "eq", "value": "x"}}],
         "personas.0.when.fact"),
        ([{"name": "a", "when": {"fact": "known", "op": "eq", "value": True}}] * 2, "personas"),
        ({"name": "a"}, "body"),
    ]:
        r = client.put("/v1/personas", json=body, headers=admin)
        assert r.status_code == 400 and field in r.json["error"]["fields"], r.json


def test_raw_email_addresses_are_refused(client, sdk):
    for body, field in [
        ({"visitor_id": "v", "ids": {"email": "ann@example.com"}}, "ids.email"),
        ({"visitor_id": "v", "ids": {"customer_id": "ann@example.com"}}, "ids.customer_id"),
        ({"visitor_id": "v", "ids": {"email_sha256": "not-a-hash"}}, "ids.email_sha256"),
        ({"visitor_id": "ann@example.com", "ids": {"customer_id": "1"}}, "visitor_id"),
        ({"visitor_id": "v", "ids": {}}, "ids"),
    ]:
        r = client.post("/v1/identify", json=body, headers=sdk)
        assert r.status_code == 400 and field in r.json["error"]["fields"], (body, r.json)
    r = client.post("/v1/decide", json={"visitor_id": "bob@example.org", "channel": "web"},
                    headers=sdk)
    assert r.status_code == 400 and "visitor_id" in r.json["error"]["fields"]


def test_privacy_endpoints_are_admin_only(client, sdk, admin):
    assert client.get("/v1/visitors/x", headers=sdk).status_code == 403
    assert client.delete("/v1/visitors/x", headers=sdk).status_code == 403
    assert client.get("/v1/visitors/nobody", headers=admin).status_code == 404
    assert client.delete("/v1/visitors/nobody", headers=admin).status_code == 404
    assert client.get("/v1/personas", headers=sdk).status_code == 403


def _everything(rclient, prefix):
    """Every key name and stored value under a prefix, as text."""
    out = []
    for key in rclient.scan_iter(match=f"*{prefix}*", count=1000):
        kind = rclient.type(key)
        out.append(key)
        if kind == "string":
            out.append(rclient.get(key))
        elif kind == "hash":
            out += [f"{k}={v}" for k, v in rclient.hgetall(key).items()]
        elif kind == "zset":
            out += rclient.zrange(key, 0, -1)
        elif kind == "set":
            out += list(rclient.smembers(key))
        elif kind == "stream":
            out += [str(fields) for _, fields in rclient.xrange(key)]
        elif kind == "list":
            out += rclient.lrange(key, 0, -1)
    return out


def test_erasure_leaves_no_trace(client, admin, sdk, server, rclient, prefix):
    _start(client, admin, guardrails=[{"name": "refund"}])
    ids = ["anon-cookie-7", "phone-device-7", "cust-777", "a" * 64]
    _decide(client, sdk, ids[0], attributes={"city": "Lyon"})
    _identify(client, server, ids[0], customer_id=ids[2], email_sha256=ids[3])
    _decide(client, sdk, ids[1], "app")
    _identify(client, server, ids[1], customer_id=ids[2], device_id=ids[1])
    _track(client, sdk, ids[1], "order-7", value=10)
    _track(client, server, ids[2], "refund-7", metric="refund", id_type="customer_id")
    before = _everything(rclient, prefix)
    assert any(i in text for text in before for i in ids)
    r = client.delete(f"/v1/visitors/{ids[3]}?id_type=email_sha256", headers=admin)
    assert r.status_code == 200 and r.json["keys_removed"] >= 5
    left = _everything(rclient, prefix)
    assert not [text for text in left for i in ids if i in text]
    # Aggregate counters stay (both devices were shown a variant before they were linked).
    rows = client.get("/v1/experiments/hero/counters", headers=admin).json["rows"]
    assert sum(r["exposures"] for r in rows) == 2
    # The old ids start from nothing.
    d = _decide(client, sdk, ids[1], "app")["decisions"][0]
    assert d["reason"] == "assigned"
    assert client.get(f"/v1/visitors/{ids[1]}", headers=admin).json["ids"] == []
    assert client.get(f"/v1/visitors/{ids[2]}?id_type=customer_id",
                      headers=admin).status_code == 404


def test_known_customers_do_not_expire_but_anonymous_visitors_do(app, client, sdk, rclient):
    keys = app.extensions["centric"].keys
    _decide(client, sdk, "anon")
    assert 0 < rclient.pttl(keys.visitor("visitor_id:anon").profile) <= 400 * DAY * 1000
    _decide(client, sdk, "member")
    _identify(client, sdk, "member", customer_id="m-1")
    _decide(client, sdk, "member")
    assert rclient.pttl(keys.visitor("visitor_id:member").profile) == -1
    assert rclient.pttl(keys.visitor("customer_id:m-1").profile) == -1


@pytest.mark.slow
def test_concurrent_linking_and_tracking_ends_in_one_exact_profile(redis_url, prefix, app,
                                                                   admin):
    threads, purchases = 8, 6
    customer = "cust-concurrent"
    services = app.extensions["centric"]
    errors: list[str] = []
    sent: set[str] = set()
    lock = threading.Lock()

    def kind(who: str) -> str:
        return "customer_id" if who == customer else "visitor_id"

    with gunicorn_server({"CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix}) as base:
        requests.post(base + "/v1/experiments", json=experiment_body(), headers=admin)
        requests.post(base + "/v1/experiments/hero/start", headers=admin)
        barrier = threading.Barrier(threads)

        def device(n: int) -> None:
            s = requests.Session()
            s.headers.update(admin)
            rnd = random.Random(n)
            me = f"device-{n}"

            def post(path: str, body: dict) -> None:
                r = s.post(base + path, json=body)
                if r.status_code != 200:
                    errors.append(f"{path} {r.status_code} {r.text}")

            barrier.wait()
            post("/v1/decide", {"visitor_id": me, "channel": "app" if n % 2 else "web"})
            for i in range(purchases):
                if i == 2:
                    post("/v1/identify", {"visitor_id": me,
                                          "ids": {"customer_id": customer, "device_id": me}})
                event = f"order-{n}-{i}"
                # Before this device is linked, its purchases go under its own id only.
                who = me if i <= 2 or rnd.random() < 0.6 else customer
                post("/v1/track", {"visitor_id": who, "metric": "purchase", "value": 1.0,
                                   "event_id": event, "id_type": kind(who)})
                with lock:
                    sent.add(event)
                # Retries of the same event under another linked id count once.
                if i > 2 and rnd.random() < 0.4:
                    other = customer if who == me else me
                    post("/v1/track", {"visitor_id": other, "id_type": kind(other),
                                       "metric": "purchase", "value": 1.0,
                                       "event_id": event})

        workers = [threading.Thread(target=device, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert errors == []
    store = services.identity.store
    devices = [f"visitor_id:device-{n}" for n in range(threads)]
    hardware = [f"device_id:device-{n}" for n in range(threads)]
    owners = {store.owner(i) for i in [f"customer_id:{customer}", *devices, *hardware]}
    assert len(owners) == 1
    (canonical,) = owners
    profile = services.identity.export(canonical)
    assert profile["lifecycle"]["purchase_count"] == len(sent) == threads * purchases
    assert profile["lifecycle"]["lifetime_value"] == len(sent)
    linked = {f"{i['type']}:{i['id']}" for i in profile["ids"]}
    assert linked | {canonical} == {f"customer_id:{customer}", *devices, *hardware}
    # Exactly one canonical profile: every other id is a link, nothing else is stored.
    keys = services.keys
    for d in devices + hardware:
        if d != canonical:
            vk = keys.visitor(d)
            assert services.redis.hgetall(vk.profile) == {"alias": canonical}
            assert not services.redis.exists(vk.linked)


def test_two_known_customers_are_never_merged(client, admin, sdk, server):
    _start(client, admin)
    assert _identify(client, sdk, "phone-a", customer_id="alice") == "phone-a"
    assert _identify(client, sdk, "phone-b", customer_id="bob") == "phone-b"
    _track(client, server, "alice", "a-order", id_type="customer_id")
    for body, key in (
            ({"visitor_id": "phone-a", "ids": {"customer_id": "bob"},
              "signature": sign("bob")}, sdk),
            ({"visitor_id": "x", "ids": {"customer_id": "alice", "visitor_id": "phone-b"}},
             server),
            ({"visitor_id": "phone-a", "ids": {"email_sha256": "b" * 64,
                                               "customer_id": "bob"}}, server)):
        r = client.post("/v1/identify", json=body, headers=key)
        assert r.status_code == 409, r.json
    alice = client.get("/v1/visitors/alice?id_type=customer_id", headers=admin).json
    bob = client.get("/v1/visitors/bob?id_type=customer_id", headers=admin).json
    assert alice["visitor_id"] == "phone-a" and bob["visitor_id"] == "phone-b"
    assert alice["lifecycle"]["purchase_count"] == 1 and bob["lifecycle"]["purchase_count"] == 0


def test_a_known_customer_keeps_their_profile_against_an_anonymous_one(client, admin, sdk,
                                                                     server):
    _start(client, admin, mode="ab")
    a, b = _visitors_with_distinct_variants(client, sdk)
    assert _identify(client, sdk, b, customer_id="carol") == b
    carol = _decide(client, server, "carol", id_type="customer_id")["decisions"][0]["variant"]
    # A backend links another of carol's devices by naming her device (no customer id).
    assert _identify(client, server, a, visitor_id=b) == b
    assert _decide(client, sdk, a)["decisions"][0]["variant"] == carol
    assert _decide(client, server, "carol",
                   id_type="customer_id")["decisions"][0]["variant"] == carol


def test_every_link_of_a_known_customer_stops_expiring(app, client, sdk, server, rclient):
    keys = app.extensions["centric"].keys
    _decide(client, sdk, "anon-1")
    _identify(client, server, "anon-1", device_id="tablet-1")  # anonymous: links expire
    assert rclient.pttl(keys.visitor("device_id:tablet-1").profile) > 0
    assert rclient.pttl(keys.visitor("visitor_id:anon-1").linked) > 0
    _identify(client, sdk, "anon-1", customer_id="dave")
    _identify(client, server, "laptop-1", visitor_id="anon-1")  # no customer id in this call
    for node in ("device_id:tablet-1", "customer_id:dave", "visitor_id:laptop-1"):
        assert rclient.pttl(keys.visitor(node).profile) == -1, node
    for key in (keys.visitor("visitor_id:anon-1").profile,
                keys.visitor("visitor_id:anon-1").linked):
        assert rclient.pttl(key) == -1


def test_coverage_follows_the_person_not_the_id_used(client, admin, sdk, server):
    _start(client, admin, coverage=0.5)
    from experiments.assignment import in_coverage

    seed = client.get("/v1/experiments/hero", headers=admin).json["seed"]
    inside = next(f"c-{i}" for i in range(200) if in_coverage(seed, f"c-{i}", 0.5))
    outside = next(f"k-{i}" for i in range(200) if not in_coverage(seed, f"k-{i}", 0.5))
    variant = _decide(client, sdk, inside)["decisions"][0]["variant"]
    _identify(client, sdk, inside, customer_id=outside)
    d = _decide(client, server, outside, id_type="customer_id")["decisions"][0]
    assert (d["variant"], d["reason"]) == (variant, "sticky")


def test_leaving_a_persona_audience_stops_crediting(client, admin, sdk, server, clock):
    client.put("/v1/personas", json=[{"name": "new_customer", "when": {
        "fact": "days_since_first_purchase", "op": "lte", "value": 10}}], headers=admin)
    _start(client, admin, audience={"personas": ["new_customer"]})
    # The shop's order system reports the first purchase of a visitor centric never saw.
    _track(client, server, "v", "first-order", value=10)
    clock.advance(DAY)
    variant = _decide(client, sdk, "v")["decisions"][0]["variant"]
    assert _track(client, sdk, "v", "second-order")["attributed"][0]["variant"] == variant
    clock.advance(11 * DAY)
    assert _decide(client, sdk, "v", experiments=["hero"])["decisions"][0]["reason"] == \
        "not_targeted"
    assert _track(client, sdk, "v", "third-order")["attributed"] == []


def test_a_link_that_outlived_its_profile_is_replaced(app, client, sdk, server, rclient):
    keys = app.extensions["centric"].keys
    _decide(client, sdk, "old-cookie")
    _identify(client, server, "old-cookie", visitor_id="stale-device")
    vk = keys.visitor("visitor_id:old-cookie")
    rclient.delete(vk.profile, vk.linked)  # expired
    assert _identify(client, sdk, "stale-device", customer_id="erin") == "stale-device"
    assert rclient.hget(keys.visitor("visitor_id:stale-device").profile, "alias") is None
    assert rclient.hget(keys.visitor("customer_id:erin").profile, "alias") == \
        "visitor_id:stale-device"


def test_a_merge_keeps_every_counted_event_counted_once(app, client, admin, sdk, rclient):
    _start(client, admin)
    for device in ("laptop", "phone"):
        _decide(client, sdk, device)
    # The phone has more events than its hash keeps: some of them sit in its older set.
    phone_events = [f"phone-{i}" for i in range(INLINE_EVENTS + 3)]
    for event in phone_events:
        assert _track(client, sdk, "phone", event)["accepted"] == 1
    assert _track(client, sdk, "laptop", "laptop-1")["accepted"] == 1
    for device in ("laptop", "phone"):
        _identify(client, sdk, device, customer_id="c-9")
    keys = app.extensions["centric"].keys
    canonical = rclient.hget(keys.visitor("visitor_id:phone").profile, "alias")
    assert canonical == "visitor_id:laptop"
    assert not rclient.exists(keys.visitor("visitor_id:phone").events)  # moved, not left
    assert 0 < rclient.pttl(keys.visitor(canonical).events)
    for device, event in [("phone", phone_events[0]), ("phone", phone_events[-1]),
                          ("laptop", phone_events[1]), ("laptop", "laptop-1")]:
        assert _track(client, sdk, device, event)["duplicates"] == 1
    assert _track(client, sdk, "phone", "after-merge")["accepted"] == 1
