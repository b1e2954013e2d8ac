"""The audit log: every change recorded once, refused changes never, paged, capped, pinned."""

from __future__ import annotations

import numpy as np
import pytest

from server import create_app
from server.keys import Keyspace
from server.stores import audit as audit_store
from server.stores.audit import AuditEntry, decode, encode
from tests.support import experiment_body

START = 1_790_000_000_000  # the FakeClock's start, in ms


@pytest.fixture
def ops(app):
    """An admin key named "ops", and how the audit log names it."""
    raw = app.extensions["centric"].api_keys.create("admin", "ops")
    return {"Authorization": "Bearer " + raw}, f"ops ({raw[:10]})"


def _log(client, headers, path="/v1/audit", **query):
    r = client.get(path, headers=headers, query_string=query)
    assert r.status_code == 200, r.json
    return r.json


def _rows(page):
    return [(e["at"], e["actor"], e["action"], e["target_type"], e["target"], e["details"])
            for e in page["entries"]]


def test_the_stored_format_is_pinned(rclient, prefix, client, admin):
    entry = AuditEntry(at=1_790_000_000_123, actor="ops (cak_AbCdEf)", action="replace",
                       target_type="experiment", target="hero",
                       details={"revision": 2, "changed": ["name"]})
    assert encode(entry) == {
        "at": "1790000000123", "actor": "ops (cak_AbCdEf)", "action": "replace",
        "target_type": "experiment", "target": "hero",
        "details": '{"changed":["name"],"revision":2}'}
    assert decode(encode(entry)) == entry
    # A damaged entry still reads (as empty parts) rather than hiding the rest of the log.
    assert decode({"at": "soon", "details": "{oops"}) == AuditEntry(0, "", "", "", "", {})
    # What the Lua scripts write is exactly the codec's format.
    assert client.post("/v1/experiments", json=experiment_body(), headers=admin).status_code == 201
    [(_, fields)] = rclient.xrange(Keyspace(prefix).audit_log)
    assert fields == encode(AuditEntry(
        at=START, actor=admin["Authorization"][7:17], action="create",
        target_type="experiment", target="hero",
        details={"revision": 1, "mode": "bandit", "variants": ["control", "benefit"]}))


def test_every_experiment_change_is_recorded_once(client, clock, ops):
    headers, actor = ops
    steps = [
        ("POST", "/v1/experiments", experiment_body(), 201),
        ("PUT", "/v1/experiments/hero",
         experiment_body(name="Renamed", hypothesis="Benefits sell"), 200),
        ("POST", "/v1/experiments/hero/start", None, 200),
        ("POST", "/v1/experiments/hero/pause", None, 200),
        ("POST", "/v1/experiments/hero/start", None, 200),
        ("POST", "/v1/experiments/hero/stop", {"winner": "benefit"}, 200),
        ("POST", "/v1/experiments", experiment_body("side"), 201),
        ("POST", "/v1/experiments/side/start", None, 200),
        ("POST", "/v1/experiments/side/stop", None, 200),
        ("DELETE", "/v1/experiments/side", None, 204),
    ]
    for i, (method, path, body, status) in enumerate(steps):
        clock.now = START / 1000 + i
        r = client.open(path, method=method, json=body, headers=headers)
        assert r.status_code == status, (path, r.json)
    variants = ["control", "benefit"]
    expected = [
        ("create", "hero", {"revision": 1, "mode": "bandit", "variants": variants}),
        ("replace", "hero", {"revision": 2, "changed": ["hypothesis", "name"]}),
        ("start", "hero", {"revision": 3, "from": "draft", "to": "running"}),
        ("pause", "hero", {"revision": 4, "from": "running", "to": "paused"}),
        ("start", "hero", {"revision": 5, "from": "paused", "to": "running"}),
        ("ship", "hero", {"revision": 6, "from": "running", "to": "stopped",
                          "winner": "benefit"}),
        ("create", "side", {"revision": 1, "mode": "bandit", "variants": variants}),
        ("start", "side", {"revision": 2, "from": "draft", "to": "running"}),
        ("stop", "side", {"revision": 3, "from": "running", "to": "stopped"}),
        ("delete", "side", {"revision": 3, "status": "stopped"}),
    ]
    rows = [(START + 1000 * i, actor, action, "experiment", target, details)
            for i, (action, target, details) in enumerate(expected)]
    page = _log(client, headers)
    assert _rows(page) == rows[::-1] and page["next"] is None
    # One experiment's history, newest first; a deleted one's too.
    assert _rows(_log(client, headers, "/v1/experiments/hero/audit")) == rows[5::-1]
    assert _rows(_log(client, headers, "/v1/experiments/side/audit")) == rows[:5:-1]
    assert _log(client, headers, "/v1/experiments/never/audit") == {"entries": [], "next": None}


def test_persona_replacements_say_what_changed(client, ops):
    headers, actor = ops
    pro = {"name": "pro", "when": {"fact": "attributes.plan", "op": "eq", "value": "pro"}}
    vip = {"name": "vip", "when": {"fact": "attributes.ltv", "op": "gte", "value": 1000}}
    pro_team = {**pro, "when": {"fact": "attributes.plan", "op": "in", "value": ["pro", "team"]}}
    new = {"name": "new", "when": {"fact": "attributes.visits", "op": "lt", "value": 2}}
    for body in ([pro, vip], [vip, pro_team, new], [vip, pro_team, new], []):
        assert client.put("/v1/personas", json=body, headers=headers).status_code == 200
    details = [e["details"] for e in _log(client, headers)["entries"]][::-1]
    assert details == [
        {"count": 2, "added": ["pro", "vip"], "removed": [], "changed": [], "reordered": False},
        {"count": 3, "added": ["new"], "removed": [], "changed": ["pro"], "reordered": True},
        {"count": 3, "added": [], "removed": [], "changed": [], "reordered": False},
        {"count": 0, "added": [], "removed": ["vip", "pro", "new"], "changed": [],
         "reordered": False},
    ]
    entries = _log(client, headers)["entries"]
    assert {(e["actor"], e["action"], e["target_type"], e["target"]) for e in entries} == {
        (actor, "replace", "personas", "personas")}


def test_the_actor_of_an_unnamed_key_is_its_display_prefix(client, admin):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    [entry] = _log(client, admin)["entries"]
    assert entry["actor"] == admin["Authorization"][len("Bearer "):][:10]


def test_a_refused_change_records_nothing(app, client, admin, viewer, rclient, prefix):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    client.post("/v1/experiments/hero/start", headers=admin)
    before = _log(client, admin)
    assert len(before["entries"]) == 2
    locked = experiment_body()
    locked["variants"][1]["payload"] = {"headline": "Other"}
    refusals = [
        ("POST", "/v1/experiments", experiment_body(), admin, 409),
        ("POST", "/v1/experiments/hero/start", None, admin, 409),
        ("PUT", "/v1/experiments/hero", locked, admin, 409),
        ("DELETE", "/v1/experiments/hero", None, admin, 409),
        ("POST", "/v1/experiments/hero/stop", {"winner": "nope"}, admin, 400),
        ("PUT", "/v1/experiments/hero", experiment_body(key="other"), admin, 400),
        ("PUT", "/v1/experiments/nope", experiment_body(key="nope"), admin, 404),
        ("POST", "/v1/experiments/nope/start", None, admin, 404),
        ("POST", "/v1/experiments", {"key": "bad"}, admin, 400),
        ("PUT", "/v1/personas", [{"name": "x", "when": {"op": "nope"}}], admin, 400),
        ("POST", "/v1/experiments/hero/pause", None, viewer, 403),
        ("PUT", "/v1/personas", [], viewer, 403),
    ]
    for method, path, body, headers, status in refusals:
        r = client.open(path, method=method, json=body, headers=headers)
        assert r.status_code == status, (method, path, r.status_code, r.json)
    assert _log(client, admin) == before
    # A write that lost a race (a stale revision) records nothing either.
    services = app.extensions["centric"]
    current = services.experiments.get("hero")
    entry = AuditEntry(0, "racer", "replace", "experiment", "hero", {})
    assert not services.experiments.store.put(current.with_changes(revision=9), 1, entry)
    assert rclient.xlen(Keyspace(prefix).audit_log) == 2


def test_a_change_whose_entry_cannot_be_written_is_not_made(client, admin, rclient, prefix):
    keys = Keyspace(prefix)
    rclient.set(keys.audit_log, "not a stream")  # every XADD to it fails (WRONGTYPE)
    r = client.post("/v1/experiments", json=experiment_body(), headers=admin)
    assert r.status_code == 503 and r.json["error"]["code"] == "store_unavailable"
    assert not rclient.exists(keys.experiment("hero"), keys.experiments_index,
                              keys.config_version)
    r = client.put("/v1/personas", json=[], headers=admin)
    assert r.status_code == 503
    assert not rclient.exists(keys.personas, keys.config_version)


def test_a_key_change_stands_when_its_entry_cannot_be_written(app, rclient, prefix, caplog):
    services = app.extensions["centric"]
    rclient.set(Keyspace(prefix).audit_log, "not a stream")
    raw = services.key_admin.create("viewer", "analyst", "tests")
    assert services.api_keys.role_of(raw) == "viewer"
    assert "audit log could not record it" in caplog.text and raw not in caplog.text
    info = services.api_keys.find("analyst")
    assert info is not None and services.key_admin.revoke(info, "tests")
    assert services.api_keys.role_of(raw) is None


def test_the_key_service_records_creation_and_revocation(app, client, admin, clock):
    services = app.extensions["centric"]
    raw = services.key_admin.create("viewer", "analyst", "someone")
    info = services.api_keys.find(raw)
    assert info is not None
    assert services.key_admin.revoke(info, "someone")
    assert not services.key_admin.revoke(info, "someone")  # already gone: nothing recorded
    details = {"role": "viewer", "name": "analyst"}
    assert _rows(_log(client, admin)) == [
        (START, "someone", "revoke", "api_key", raw[:10], details),
        (START, "someone", "create", "api_key", raw[:10], details)]


def test_pages_chain_newest_first(client, admin, clock, monkeypatch):
    steps = [("/v1/experiments", experiment_body("a")), ("/v1/experiments", experiment_body("b"))]
    steps += [(f"/v1/experiments/{key}/{action}", None)
              for action, key in [("start", "a"), ("start", "b"), ("pause", "a"), ("pause", "b"),
                                  ("start", "a")]]
    for path, body in steps:
        clock.advance(1)
        assert client.post(path, json=body, headers=admin).status_code in (200, 201), path
    everything = _log(client, admin)["entries"]
    assert len(everything) == 7 and [e["at"] for e in everything] == sorted(
        (e["at"] for e in everything), reverse=True)
    pages, before = [], None
    while True:
        page = _log(client, admin, limit=3, **({"before": before} if before else {}))
        pages.append(page["entries"])
        before = page["next"]
        if before is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [e for p in pages for e in p] == everything
    # Exactly `limit` left: no next page announced.
    assert _log(client, admin, limit=7)["next"] is None
    assert _log(client, admin, limit=6)["next"] is not None
    # One experiment's history pages the same, also when it is read in small chunks.
    only_a = [e for e in everything if e["target"] == "a"]
    for chunk in (500, 1):
        monkeypatch.setattr(audit_store, "_SCAN_CHUNK", chunk)
        first = _log(client, admin, "/v1/experiments/a/audit", limit=2)
        rest = _log(client, admin, "/v1/experiments/a/audit", limit=2, before=first["next"])
        assert first["entries"] + rest["entries"] == only_a and rest["next"] is None
    assert _log(client, admin, before="0-0") == {"entries": [], "next": None}


def test_the_cap_holds(settings, clock, rclient, prefix):
    app = create_app(settings.with_changes(audit_maxlen=5), clock=clock,
                     rng=np.random.default_rng(1))
    c = app.test_client()
    admin = {"Authorization": "Bearer " + app.extensions["centric"].api_keys.create("admin")}
    for i in range(8):
        clock.advance(1)
        assert c.post("/v1/experiments", json=experiment_body(f"e{i}"),
                      headers=admin).status_code == 201
    assert rclient.xlen(Keyspace(prefix).audit_log) == 5
    page = _log(c, admin, limit=500)
    assert [e["target"] for e in page["entries"]] == ["e7", "e6", "e5", "e4", "e3"]
    assert page["next"] is None


@pytest.mark.parametrize("path", ["/v1/audit", "/v1/experiments/hero/audit"])
def test_bad_query_parameters_are_400_naming_the_field(client, viewer, path):
    for query, field in [("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"),
                         ("limit=1.5", "limit"), ("limit=", "limit"), ("before=x", "before"),
                         ("before=1-2-3", "before"), ("before=", "before"),
                         (f"before={2**64}-0", "before"), ("before=%D9%A1-0", "before")]:
        r = client.get(f"{path}?{query}", headers=viewer)
        assert r.status_code == 400, (query, r.status_code)
        assert r.json["error"]["code"] == "invalid" and field in r.json["error"]["fields"], query
    # Other parameters are ignored, as on every other endpoint.
    assert client.get(f"{path}?cache=1", headers=viewer).status_code == 200


def test_only_admin_and_viewer_keys_read_the_log(client, admin, viewer, sdk, server):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    for path in ("/v1/audit", "/v1/experiments/hero/audit"):
        assert client.get(path, headers=viewer).json == client.get(path, headers=admin).json
        for headers in (sdk, server):
            r = client.get(path, headers=headers)
            assert r.status_code == 403 and r.json["error"]["code"] == "forbidden"
        assert client.get(path).status_code == 401
    assert client.get("/v1/experiments/Bad%20Key/audit", headers=viewer).status_code == 404
