"""The edges of HTTP: OPTIONS on every route, readiness without leaks, and gunicorn's own errors.

gunicorn refuses some requests before the app sees them (an over-long request line, headers
too large); under `server.gunicorn_worker.JsonErrorWorker` those answers are JSON envelopes
too. Tested against a real gunicorn on loopback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import requests

from server import create_app
from server.cli import WORKER_CLASS, main
from server.cors import SDK_PATHS
from server.keys import Keyspace
from server.stores.api_keys import ApiKeyStore
from tests.support import IDENTIFY_SECRET, ROOT, free_port, wait_until_ready

SHOP = "https://shop.example"
ENVELOPE_KEYS = {"code", "message", "fields"}


def _concrete(rule: str) -> str:
    """A path that the rule matches: every variable filled in."""
    return re.sub(r"<(?:([^:>]+):)?([^>]+)>", lambda m: _sample(m.group(1), m.group(2)), rule)


def _sample(converter: str | None, name: str) -> str:
    if converter and converter.startswith("any("):
        return converter[4:].split(",")[0].strip()  # the first of the allowed values
    return {"fmt": "svg", "name": "uplift"}.get(name, "x1")


def _allowed_methods(app, path: str) -> set[str]:
    methods: set[str] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint != "static" and _concrete(rule.rule) == path:
            methods |= set(rule.methods or ())
    return methods


@pytest.fixture
def cors_app(settings):
    return create_app(settings.with_changes(cors_origins=SHOP))


def test_sdk_paths_are_exactly_the_sdk_endpoints(cors_app):
    assert SDK_PATHS == {"/v1/decide", "/v1/track", "/v1/identify", "/v1/expose"}
    rules = {r.rule for r in cors_app.url_map.iter_rules()}
    assert SDK_PATHS <= rules, SDK_PATHS - rules


def test_options_on_every_route_is_204_with_allow_and_needs_no_key(cors_app):
    client = cors_app.test_client()
    paths = sorted({_concrete(r.rule) for r in cors_app.url_map.iter_rules()
                    if r.endpoint != "static"})
    assert len(paths) >= 15
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer cak_wrong"},
                        {"Origin": SHOP, "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "authorization,content-type"},
                        {"Origin": "https://evil.example",
                         "Access-Control-Request-Method": "POST"}):
            r = client.options(path, headers={**headers, "X-Request-ID": "pre-1"})
            assert r.status_code == 204, (path, headers, r.status_code, r.data[:200])
            assert r.data == b"" and "Content-Type" not in r.headers, path
            assert {m.strip() for m in r.headers["Allow"].split(",")} == \
                _allowed_methods(cors_app, path), path
            # The usual headers of every answer: request id and the security headers.
            assert r.headers["X-Request-ID"] == "pre-1"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            cors = r.headers.get("Access-Control-Allow-Origin")
            if path in SDK_PATHS and headers.get("Origin") == SHOP:
                assert cors == SHOP, path
                assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
                assert "POST" in r.headers["Access-Control-Allow-Methods"]
            else:
                assert cors is None, (path, headers)


def test_options_on_unknown_paths_is_the_404_envelope(cors_app):
    client = cors_app.test_client()
    # "/" is a route now: it sends a browser to the console.
    for path in ("/v1", "/v1/", "/v1/decide/", "/v1/nope", "/v1/experiments/a/b/c",
                 "/v1/experiments/x/report/plots/nope", "/%00", "/v1/%ff",
                 "/" + "a" * 5000):
        r = client.options(path, headers={"Origin": SHOP})
        assert r.status_code == 404, (path, r.status_code)
        assert r.json["error"]["code"] == "not_found" and set(r.json["error"]) == ENVELOPE_KEYS
        assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_answers_only_sdk_posts_for_allowed_origins(cors_app):
    client = cors_app.test_client()
    admin = {"Authorization": "Bearer " + cors_app.extensions["centric"].api_keys.create(
        "admin")}
    r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web"},
                    headers={**admin, "Origin": SHOP})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == SHOP
    assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]
    for origin in ("https://evil.example", SHOP + "/", SHOP + ".evil", "null", "*"):
        r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web"},
                        headers={**admin, "Origin": origin})
        assert "Access-Control-Allow-Origin" not in r.headers, origin
    r = client.get("/v1/experiments", headers={**admin, "Origin": SHOP})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{port}/0",
                                 "unix:///tmp/centric-no-such-dir-{port}/redis.sock"])
def test_readyz_says_unavailable_without_naming_the_store(settings, url, caplog, monkeypatch):
    port = free_port()
    app = create_app(settings.with_changes(redis_url=url.format(port=port)))
    # JSON logging (configure_logging) stops propagation; caplog listens at the root.
    monkeypatch.setattr(logging.getLogger("centric"), "propagate", True)
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.json == {"status": "unavailable", "redis": "unreachable"}
    assert r.headers["Retry-After"] == "1"
    assert str(port) not in r.get_data(as_text=True)
    # The operator still learns what failed: the detail is in the log.
    assert str(port) in caplog.text


# --- a real gunicorn with the JSON error worker -------------------------------------------


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """Gunicorn with the JSON error worker on a free port; yields (base URL, key prefix)."""
    prefix = "he" + uuid.uuid4().hex[:8]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CENTRIC_")}
    env.update({"CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix,
                "CENTRIC_API_KEY_CACHE_SECONDS": "0.5", "CENTRIC_ACCESS_LOG": "0",
                "CENTRIC_IDENTIFY_SECRET": IDENTIFY_SECRET,
                "CENTRIC_DATA_DIR": str(tmp_path_factory.mktemp("var"))})
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", WORKER_CLASS, "server.wsgi:make_app()",
         "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning"],
        env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
        yield base, prefix
    finally:
        process.terminate()
        process.wait(15)
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"*{{{prefix}:*", count=1000):
            client.delete(key)


def _raw(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; parse the one response gunicorn answers before closing."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _assert_envelope(status: int, headers: dict[str, str], body: bytes, code: str) -> None:
    assert headers["content-type"] == "application/json", (status, headers, body[:200])
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert set(error) == ENVELOPE_KEYS and error["code"] == code, error
    assert len(error["message"]) <= 210


def test_gunicorn_refusals_are_json_envelopes(live):
    base, _ = live
    r = requests.get(base + "/v1/" + "a" * 5000, timeout=5)
    assert r.status_code == 414
    _assert_envelope(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content,
                     "uri_too_long")
    # Just under gunicorn's limit the app answers, with its own envelope.
    r = requests.get(base + "/v1/" + "a" * 4000, timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    cases = [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
         431, "headers_too_large"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
         + b"".join(b"X-H%d: 1\r\n" % i for i in range(150)) + b"\r\n",
         431, "headers_too_large"),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"G\xc3T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400, "bad_request"),
        (b"GET /healthz HTTP/9.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6"
         b"\r\n\r\n", 400, "bad_request"),
        (b"GET /" + b"<script>" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    ]
    for request, status, code in cases:
        got, headers, body = _raw(base, request)
        assert got == status, (request[:60], got, body[:200])
        _assert_envelope(got, headers, body, code)
        assert b"<" not in body  # never an HTML page, never the input echoed raw
    # The worker still serves normal requests afterwards.
    assert requests.get(base + "/healthz", timeout=5).json() == {"status": "ok"}


def test_live_options_and_revocation_within_the_cache_interval(live, redis_url, monkeypatch):
    base, prefix = live
    r = requests.options(base + "/v1/experiments/hero", timeout=5)
    assert r.status_code == 204
    assert {m.strip() for m in r.headers["Allow"].split(",")} == {
        "GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
    monkeypatch.setenv("CENTRIC_REDIS_URL", redis_url)
    monkeypatch.setenv("CENTRIC_KEY_PREFIX", prefix)
    store = ApiKeyStore(redis.Redis.from_url(redis_url, decode_responses=True),
                        Keyspace(prefix))
    auth = {"Authorization": "Bearer " + store.create("sdk", "to-revoke")}
    body = {"visitor_id": "v", "channel": "web"}
    assert requests.post(base + "/v1/decide", json=body, headers=auth,
                         timeout=5).status_code == 200
    assert main(["keys", "revoke", "to-revoke"]) == 0
    revoked_at = time.monotonic()
    while requests.post(base + "/v1/decide", json=body, headers=auth,
                        timeout=5).status_code != 401:
        assert time.monotonic() - revoked_at < 0.5 + 1.0, "revoked key still accepted"
        time.sleep(0.05)
