"""API keys: roles, hashing at rest, and the CLI that prints a key alone on one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis

from server.keys import hash_api_key
from tests.support import ROOT, experiment_body, sign, start_experiment

# Every endpoint and who may call it: "sdk" endpoints take sdk, server and admin keys;
# "read" (admin reads without a visitor's data) admin and viewer keys; "admin" only admin
# keys; "open" needs no key. test_every_route_is_in_the_matrix keeps this list complete.
MATRIX = [
    ("POST", "/v1/decide", "sdk"), ("POST", "/v1/track", "sdk"),
    ("POST", "/v1/identify", "sdk"), ("POST", "/v1/expose", "sdk"),
    ("GET", "/v1/experiments", "read"), ("POST", "/v1/experiments", "admin"),
    ("GET", "/v1/experiments/hero", "read"), ("PUT", "/v1/experiments/hero", "admin"),
    ("DELETE", "/v1/experiments/hero", "admin"),
    ("POST", "/v1/experiments/hero/start", "admin"),
    ("POST", "/v1/experiments/hero/pause", "admin"),
    ("POST", "/v1/experiments/hero/stop", "admin"),
    ("GET", "/v1/experiments/hero/counters", "read"),
    ("GET", "/v1/experiments/hero/report", "read"),
    ("GET", "/v1/experiments/hero/report?format=csv", "read"),
    ("GET", "/v1/experiments/hero/report/plots/uplift.svg", "read"),
    ("GET", "/v1/experiments/hero/audit", "read"),
    ("GET", "/v1/personas", "read"), ("PUT", "/v1/personas", "admin"),
    # A person's profile is personal data: an analyst's viewer key may not export it.
    ("GET", "/v1/visitors/someone", "admin"), ("DELETE", "/v1/visitors/someone", "admin"),
    ("GET", "/v1/audit", "read"),
    ("GET", "/v1/models/clv", "read"), ("POST", "/v1/models/clv/fit", "admin"),
    # Moments name customers and their predictions: admin only; their member list serves the
    # shop's back-end mailing job, so a server key may read it (never an SDK key).
    ("GET", "/v1/moments", "admin"), ("PUT", "/v1/moments", "admin"),
    ("POST", "/v1/moments/sweep", "admin"),
    ("GET", "/v1/moments/second/members", "trusted"),
    ("GET", "/healthz", "open"), ("GET", "/readyz", "open"), ("GET", "/metrics", "open"),
    ("GET", "/openapi.json", "open"),
]
ROLES = ("sdk", "server", "viewer", "admin", "none")
MAY = {"sdk": {"sdk", "server", "admin"}, "read": {"viewer", "admin"}, "admin": {"admin"},
       "trusted": {"server", "admin"}, "open": set(ROLES)}
SDK_ENDPOINTS = [(m, p) for m, p, kind in MATRIX if kind == "sdk"]
ADMIN_ENDPOINTS = [(m, p) for m, p, kind in MATRIX if kind in ("read", "admin")]
TRUSTED_ENDPOINTS = [(m, p) for m, p, kind in MATRIX if kind == "trusted"]
OPEN_ENDPOINTS = [("GET", "/healthz"), ("GET", "/readyz")]


@pytest.mark.parametrize(("method", "path"), SDK_ENDPOINTS + ADMIN_ENDPOINTS + TRUSTED_ENDPOINTS)
def test_missing_and_unknown_keys_are_401(client, method, path):
    for headers in ({}, {"Authorization": "Bearer csk_not-a-key"}, {"Authorization": "Basic x"}):
        r = client.open(path, method=method, headers=headers, json={})
        assert r.status_code == 401
        assert r.json["error"]["code"] == "unauthorized"
        assert "authorization" in r.json["error"]["fields"]


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_sdk_and_server_keys_cannot_call_admin_endpoints(client, sdk, server, method, path):
    for headers in (sdk, server):
        r = client.open(path, method=method, headers=headers, json=experiment_body())
        assert r.status_code == 403
        assert r.json["error"]["code"] == "forbidden"


SDK_BODIES = {"/v1/decide": {"visitor_id": "v", "channel": "web"},
              "/v1/track": {"visitor_id": "v", "metric": "m", "event_id": "e"},
              "/v1/identify": {"visitor_id": "v", "ids": {"customer_id": "c"},
                               "signature": sign("c")},
              "/v1/expose": {"visitor_id": "v", "decisions": [{"experiment": "hero",
                                                               "decision_id": "0" * 32}]}}


@pytest.mark.parametrize(("method", "path"), SDK_ENDPOINTS)
def test_sdk_server_and_admin_keys_may_decide_identify_track_and_expose(
        client, sdk, server, admin, method, path):
    for headers in (sdk, server, admin):
        r = client.open(path, method=method, headers=headers, json=SDK_BODIES[path])
        assert r.status_code == 200, r.json


@pytest.mark.parametrize(("method", "path"), SDK_ENDPOINTS)
def test_only_server_and_admin_keys_act_by_other_id_types(client, sdk, server, admin, method,
                                                          path):
    body = {**SDK_BODIES[path], "id_type": "customer_id"}
    assert client.open(path, method=method, headers=sdk, json=body).status_code == 403
    for headers in (server, admin):
        r = client.open(path, method=method, headers=headers, json=body)
        assert r.status_code == 200, r.json


def test_admin_keys_reach_every_admin_endpoint(client, admin):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    expected = {"POST /v1/experiments": 409, "GET /v1/visitors/someone": 404,
                "DELETE /v1/visitors/someone": 404, "DELETE /v1/experiments/hero": 204,
                "GET /v1/models/clv": 404,  # nothing fitted yet
                "POST /v1/models/clv/fit": 409}  # no customers to fit to
    ordered = sorted(ADMIN_ENDPOINTS, key=lambda e: e == ("DELETE", "/v1/experiments/hero"))
    for method, path in ordered:
        name = f"{method} {path}"
        body = (experiment_body() if name in ("POST /v1/experiments", "PUT /v1/experiments/hero")
                else [] if path in ("/v1/personas", "/v1/moments")
                else {} if method == "POST" else None)
        r = client.open(path, method=method, headers=admin, json=body)
        assert r.status_code == expected.get(name, 200), (name, r.status_code, r.data[:200])


PERSONAS = [{"name": "pro", "when": {"fact": "attributes.plan", "op": "eq", "value": "pro"}}]


def _body(method: str, path: str):
    """A valid body for each endpoint: a refusal must be about the key, not the input."""
    if path in SDK_BODIES:
        return SDK_BODIES[path]
    if path in ("/v1/experiments", "/v1/experiments/hero") and method in ("POST", "PUT"):
        return experiment_body(name="Changed") if method == "PUT" else experiment_body("new")
    if path == "/v1/personas" and method == "PUT":
        return PERSONAS
    if path == "/v1/moments" and method == "PUT":
        return [{"name": "second", "when": {"fact": "purchase_count", "op": "eq", "value": 1}}]
    if path.endswith("/stop"):
        return {"winner": "benefit"}
    return {} if method == "POST" else None


@pytest.fixture
def keys(sdk, server, viewer, admin):
    """Headers for every role, "none" without a key."""
    return {"sdk": sdk, "server": server, "viewer": viewer, "admin": admin, "none": {}}


def test_every_route_is_in_the_matrix(app):
    adapter = app.url_map.bind("localhost")
    listed = {(adapter.match(path.partition("?")[0], method=method)[0], method)
              for method, path, _ in MATRIX}
    # The console's pages take a session, not a key: tests/test_console.py pins them.
    served = {(rule.endpoint, method) for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" and not rule.endpoint.startswith("console.")
              and rule.endpoint != "root"
              for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}}
    assert served == listed, served ^ listed


@pytest.mark.parametrize(("method", "path", "kind"), MATRIX)
def test_role_matrix(client, keys, method, path, kind):
    client.post("/v1/experiments", json=experiment_body(), headers=keys["admin"])
    # Refused roles first: a permitted call (a delete) may change what the next one sees.
    for role in sorted(ROLES, key=lambda r: r in MAY[kind]):
        r = client.open(path, method=method, headers=keys[role], json=_body(method, path))
        if role in MAY[kind]:
            assert r.status_code not in (401, 403), (role, r.status_code, r.data[:200])
        elif role == "none":
            assert r.status_code == 401 and r.json["error"]["code"] == "unauthorized"
        else:
            assert r.status_code == 403, (role, r.status_code, r.data[:200])
            assert r.json["error"]["code"] == "forbidden", role
            assert r.json["error"]["fields"] == {
                "authorization": f"{role} keys may not call this endpoint"}


def test_a_viewer_changes_nothing(client, admin, viewer, redis_url, prefix):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    client.post("/v1/experiments/hero/start", headers=admin)
    client.put("/v1/personas", json=PERSONAS, headers=admin)
    client.post("/v1/decide", json={"visitor_id": "someone", "channel": "web"}, headers=admin)
    raw = redis.Redis.from_url(redis_url)

    def state() -> dict[bytes, bytes]:
        # Everything but the key records, whose last use every request stamps.
        return {key: raw.dump(key) for key in raw.scan_iter(match=f"*{{{prefix}:*")
                if b":auth}" not in key}

    before = state()
    assert len(before) > 5
    for method, path, kind in MATRIX:
        r = client.open(path, method=method, headers=viewer, json=_body(method, path))
        if "viewer" in MAY[kind]:
            # The only read that finds nothing here: no customer-value model is fitted.
            ok = 404 if path == "/v1/models/clv" else 200
            assert method == "GET" and r.status_code == ok, (method, path, r.status_code)
        else:
            assert r.status_code == 403, (method, path, r.status_code)
    assert state() == before
    entries = client.get("/v1/audit", headers=viewer).json["entries"]
    assert [e["action"] for e in entries] == ["replace", "start", "create"]


def test_a_viewer_reads_what_an_admin_reads(client, admin, viewer):
    start_experiment(client, admin)
    client.put("/v1/personas", json=PERSONAS, headers=admin)
    for i in range(5):
        client.post("/v1/decide", json={"visitor_id": f"v{i}", "channel": "web"}, headers=admin)
    for method, path, kind in MATRIX:
        if kind == "read":
            as_admin = client.open(path, method=method, headers=admin)
            as_viewer = client.open(path, method=method, headers=viewer)
            ok = 404 if path == "/v1/models/clv" else 200  # no model is fitted here
            assert as_admin.status_code == as_viewer.status_code == ok, path
            assert as_viewer.mimetype == as_admin.mimetype, path
            if "/plots/" not in path:  # a figure's sampled curves differ from one call to the next
                assert as_viewer.data == as_admin.data, path


@pytest.mark.parametrize(("method", "path"), OPEN_ENDPOINTS)
def test_health_needs_no_key(client, method, path):
    assert client.open(path, method=method).status_code == 200


def test_security_headers_and_no_cross_origin_for_admin(app, client, admin, settings):
    r = client.get("/v1/experiments", headers={**admin, "Origin": "https://evil.example"})
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Cache-Control"] == "no-store"
    assert "Access-Control-Allow-Origin" not in r.headers
    from server import create_app

    allowed = create_app(settings.with_changes(cors_origins="https://shop.example")).test_client()
    pre = allowed.options("/v1/decide", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
    other = allowed.options("/v1/decide", headers={"Origin": "https://evil.example",
                                                   "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers
    admin_pre = allowed.options("/v1/experiments", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in admin_pre.headers


def test_rate_limit_per_sdk_key(settings):
    from server import create_app

    app = create_app(settings.with_changes(sdk_rate_limit=1.0, sdk_rate_burst=5))
    keys = app.extensions["centric"].api_keys
    greedy = {"Authorization": "Bearer " + keys.create("sdk")}
    polite = {"Authorization": "Bearer " + keys.create("sdk")}
    admin = {"Authorization": "Bearer " + keys.create("admin")}
    c = app.test_client()
    body = SDK_BODIES["/v1/decide"]
    statuses = [c.post("/v1/decide", json=body, headers=greedy).status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
    limited = c.post("/v1/decide", json=body, headers=greedy)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert limited.json["error"]["code"] == "rate_limited"
    assert c.post("/v1/decide", json=body, headers=polite).status_code == 200
    assert c.post("/v1/decide", json=body, headers=admin).status_code == 200


def test_keys_are_stored_hashed(app, rclient, prefix):
    raw = app.extensions["centric"].api_keys.create("admin", name="ops")
    assert raw.startswith("cak_") and len(raw) > 40
    stored = sorted(rclient.scan_iter(match=f"*{prefix}*"))
    record_key = f"{{{prefix}:auth}}:key:{hash_api_key(raw)}"
    assert stored == [record_key, f"{{{prefix}:auth}}:keys"]  # the record and the key index
    record = rclient.hgetall(record_key)
    assert record["role"] == "admin" and record["name"] == "ops"
    assert raw not in str(record) and raw not in str(rclient.smembers(stored[1]))


def test_cli_prints_only_the_key_and_it_works(redis_url, prefix, client):
    env = {**os.environ, "CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix}
    out = subprocess.run([sys.executable, "-m", "server.cli", "keys", "create", "--role", "sdk"],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("csk_")
    r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web"},
                    headers={"Authorization": "Bearer " + lines[0]})
    assert r.status_code == 200


def test_a_flood_of_unknown_keys_never_evicts_the_keys_an_outage_relies_on():
    import redis as redis_lib

    from server.errors import Unauthorized
    from server.services.auth import Authenticator

    good = hash_api_key("csk_good")

    class Store:
        down = False

        def role_of_digest(self, digest):
            if self.down:
                raise redis_lib.ConnectionError("down")
            return "sdk" if digest == good else None

    store, now = Store(), [0.0]
    auth = Authenticator(store, ttl=1.0, monotonic=lambda: now[0])  # type: ignore[arg-type]
    assert auth.require("Bearer csk_good", "sdk") == "sdk"
    for i in range(12_000):
        with pytest.raises(Unauthorized):
            auth.require(f"Bearer csk_made-up-{i}", "sdk")
    now[0] += 5.0  # past the cache interval, and Redis goes away
    store.down = True
    assert auth.require("Bearer csk_good", "sdk") == "sdk"
