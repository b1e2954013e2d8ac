"""API keys: roles, hashing at rest, and the CLI that prints a key alone on one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from server.keys import hash_api_key
from tests.support import ROOT, experiment_body

SDK_ENDPOINTS = [("POST", "/v1/decide"), ("POST", "/v1/track")]
ADMIN_ENDPOINTS = [
    ("GET", "/v1/experiments"), ("POST", "/v1/experiments"), ("GET", "/v1/experiments/hero"),
    ("PUT", "/v1/experiments/hero"), ("DELETE", "/v1/experiments/hero"),
    ("POST", "/v1/experiments/hero/start"), ("POST", "/v1/experiments/hero/pause"),
    ("POST", "/v1/experiments/hero/stop"), ("GET", "/v1/experiments/hero/counters"),
]


@pytest.mark.parametrize(("method", "path"), SDK_ENDPOINTS + ADMIN_ENDPOINTS)
def test_missing_and_unknown_keys_are_401(client, method, path):
    for headers in ({}, {"Authorization": "Bearer csk_not-a-key"}, {"Authorization": "Basic x"}):
        r = client.open(path, method=method, headers=headers, json={})
        assert r.status_code == 401
        assert r.json["error"]["code"] == "unauthorized"
        assert "authorization" in r.json["error"]["fields"]


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
def test_sdk_keys_cannot_call_admin_endpoints(client, sdk, method, path):
    r = client.open(path, method=method, headers=sdk, json=experiment_body())
    assert r.status_code == 403
    assert r.json["error"]["code"] == "forbidden"


@pytest.mark.parametrize(("method", "path"), SDK_ENDPOINTS)
def test_sdk_and_admin_keys_may_decide_and_track(client, sdk, admin, method, path):
    body = {"visitor_id": "v", "channel": "web", "metric": "m", "event_id": "e"}
    if path.endswith("decide"):
        body = {"visitor_id": "v", "channel": "web"}
    else:
        body = {"visitor_id": "v", "metric": "m", "event_id": "e"}
    for headers in (sdk, admin):
        assert client.open(path, method=method, headers=headers, json=body).status_code == 200


def test_keys_are_stored_hashed(app, rclient, prefix):
    raw = app.extensions["centric"].api_keys.create("admin", name="ops")
    assert raw.startswith("cak_") and len(raw) > 40
    stored = [k for k in rclient.scan_iter(match=f"*{prefix}*")]
    assert stored == [f"{{{prefix}:auth}}:key:{hash_api_key(raw)}"]
    record = rclient.hgetall(stored[0])
    assert record["role"] == "admin" and record["name"] == "ops"
    assert raw not in str(record)


def test_cli_prints_only_the_key_and_it_works(redis_url, prefix, client):
    env = {**os.environ, "CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix}
    out = subprocess.run([sys.executable, "-m", "server.cli", "keys", "create", "--role", "sdk"],
                         env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("csk_")
    r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web"},
                    headers={"Authorization": "Bearer " + lines[0]})
    assert r.status_code == 200
