"""Redis outages: decide stays up, track asks for a retry, everything recovers.

Decide answers with the control within its budget, track, moments and the customer-value
model answer 503 with Retry-After, readiness fails, and when Redis returns everything works
again without a restart.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from server import create_app
from server.embedded import EmbeddedRedis
from server.settings import Settings
from tests.support import experiment_body, slow_redis

BUDGET_MS = 50.0


@pytest.fixture
def private_redis():
    """A redis-server of this test's own, which it may stop, freeze and restart."""
    with tempfile.TemporaryDirectory(prefix="centric-outage-") as tmp:
        server = EmbeddedRedis(Path(tmp))
        server.start()
        yield server
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def _running_hero(settings, seed):
    """An app on `settings` with the experiment 'hero' running; (client, services, admin)."""
    app = create_app(settings, rng=np.random.default_rng(seed))
    services = app.extensions["centric"]
    admin = {"Authorization": "Bearer " + services.api_keys.create("admin")}
    c = app.test_client()
    c.post("/v1/experiments", json=experiment_body(), headers=admin)
    c.post("/v1/experiments/hero/start", headers=admin)
    return c, services, admin


def _outage_settings(private_redis, prefix: str) -> Settings:
    """Short timeouts and cool-down, so an outage is seen, and left, within a second."""
    return Settings(redis_url=private_redis.url, key_prefix=prefix, decide_budget_ms=BUDGET_MS,
                    outage_cooldown=0.3, refresh_interval=0.0, redis_socket_timeout=0.5,
                    redis_connect_timeout=0.5)


def _timed(call):
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


@pytest.mark.slow
def test_outage_and_recovery(private_redis):
    settings = _outage_settings(private_redis, "outage")
    c, _, admin = _running_hero(settings, 3)
    body = {"visitor_id": "v", "channel": "web", "experiments": ["hero"]}
    before = c.post("/v1/decide", json=body, headers=admin).json["decisions"][0]
    assert before["reason"] == "assigned"

    # 1. Redis frozen (SIGSTOP): connections hang. Decide must not.
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            r, elapsed = _timed(lambda: c.post("/v1/decide", json=body, headers=admin))
            assert r.status_code == 200
            d = r.json["decisions"][0]
            assert (d["variant"], d["reason"], d["payload"]) == (
                "control", "fallback", {"headline": "Welcome"})
            # The budget plus the app's own work (a few ms), far below any Redis timeout.
            assert elapsed < BUDGET_MS / 1000 + 0.1, elapsed
        implicit = c.post("/v1/decide", json={"visitor_id": "w", "channel": "web"},
                          headers=admin).json["decisions"]
        assert [(d["experiment"], d["reason"]) for d in implicit] == [("hero", "fallback")]
        r = c.post("/v1/track", json={"visitor_id": "v", "metric": "purchase",
                                      "event_id": "e1"}, headers=admin)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json["error"]["code"] == "store_unavailable"
        assert c.get("/readyz").status_code == 503
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)

    # 2. Redis stopped altogether (connection refused).
    private_redis.stop()
    r, elapsed = _timed(lambda: c.post("/v1/decide", json=body, headers=admin))
    assert r.status_code == 200 and r.json["decisions"][0]["reason"] == "fallback"
    assert c.get("/readyz").status_code == 503

    # 3. Redis back (same data directory): everything recovers, no restart of the app.
    private_redis.start()
    time.sleep(0.35)  # the cool-down after the last failure
    assert c.get("/readyz").status_code == 200
    after = c.post("/v1/decide", json=body, headers=admin).json["decisions"][0]
    assert (after["variant"], after["reason"]) == (before["variant"], "sticky")
    r = c.post("/v1/track", json={"visitor_id": "v", "metric": "purchase", "event_id": "e1"},
               headers=admin)
    assert r.status_code == 200 and r.json["accepted"] == 1  # the retry of the refused event


@pytest.mark.slow
def test_decide_answers_through_an_outage_longer_than_every_cache(private_redis):
    budget_ms = 100.0
    settings = Settings(redis_url=private_redis.url, key_prefix="long-outage",
                        decide_budget_ms=budget_ms, outage_cooldown=0.3, refresh_interval=0.0,
                        api_key_cache_seconds=0.5, redis_socket_timeout=1.0)
    c, services, _ = _running_hero(settings, 5)
    sdk = {"Authorization": "Bearer " + services.api_keys.create("sdk")}
    late = {"Authorization": "Bearer " + services.api_keys.create("sdk")}  # never used yet
    body = {"visitor_id": "v", "channel": "web", "experiments": ["hero"]}
    assert c.post("/v1/decide", json=body, headers=sdk).json["decisions"][0]["reason"] == \
        "assigned"
    limit = budget_ms / 1000 + 0.04  # one budget, not one per Redis call, plus the app's work

    def fallback_within_budget() -> None:
        r, elapsed = _timed(lambda: c.post("/v1/decide", json=body, headers=sdk))
        assert r.status_code == 200, r.json
        assert r.json["decisions"][0]["reason"] == "fallback"
        assert elapsed < limit, elapsed

    # 1. Paused Redis, longer than the key cache: the key check is bounded by the budget too.
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            fallback_within_budget()
            time.sleep(0.35)  # past the breaker's cool-down: every call tries Redis again
        # Track waits on the paused Redis once (its socket timeout), then answers at once
        # for a while, so a sync worker is not held by every track in the queue.
        event = {"visitor_id": "v", "metric": "purchase", "event_id": "e0"}
        first, waited = _timed(lambda: c.post("/v1/track", json=event, headers=sdk))
        assert first.status_code == 503 and waited >= 0.9
        for _ in range(5):
            r, elapsed = _timed(lambda: c.post("/v1/track", json=event, headers=sdk))
            assert r.status_code == 503 and elapsed < 0.05, elapsed
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)
    time.sleep(0.35)
    assert c.get("/readyz").status_code == 200  # readiness is probed through any breaker
    assert c.post("/v1/decide", json=body, headers=sdk).json["decisions"][0]["reason"] == \
        "sticky"

    # 2. Redis gone for longer than 10 s: decide keeps answering, track asks for a retry.
    private_redis.stop()
    started = time.monotonic()
    while time.monotonic() - started < 10.5:
        fallback_within_budget()
        r, elapsed = _timed(lambda: c.post("/v1/track", json={
            "visitor_id": "v", "metric": "purchase", "event_id": "e1"}, headers=sdk))
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        time.sleep(0.5)
    # A key this worker never verified cannot be checked now: a retry, not a fallback.
    r = c.post("/v1/decide", json=body, headers=late)
    assert r.status_code == 503 and "Retry-After" in r.headers

    # 3. Back: everything recovers without a restart.
    private_redis.start()
    time.sleep(0.35)
    after = c.post("/v1/decide", json=body, headers=sdk).json["decisions"][0]
    assert after["reason"] == "sticky"
    assert c.post("/v1/decide", json=body, headers=late).status_code == 200


def test_a_slow_redis_costs_a_decide_one_budget_not_one_per_call(private_redis):
    budget_ms, delay = 100.0, 0.06
    path = private_redis.url[len("unix://"):]
    with slow_redis(path, delay) as url:
        # Every cache is expired on every call: the key check, the snapshot refresh and the
        # decide script each wait on the slow Redis, 60 ms apiece.
        settings = Settings(redis_url=url, key_prefix="slow", decide_budget_ms=budget_ms,
                            refresh_interval=0.0, api_key_cache_seconds=0.0,
                            outage_cooldown=0.0)
        c, _, admin = _running_hero(settings, 9)
        body = {"visitor_id": "v", "channel": "web", "experiments": ["hero"]}
        for _ in range(4):
            r, elapsed = _timed(lambda: c.post("/v1/decide", json=body, headers=admin))
            assert r.status_code in (200, 503), r.json
            assert elapsed < budget_ms / 1000 + 0.04, elapsed


def test_a_full_embedded_redis_refuses_writes_and_nothing_breaks():
    with tempfile.TemporaryDirectory(prefix="centric-full-") as tmp:
        server = EmbeddedRedis(Path(tmp), maxmemory="4mb")
        url = server.start()
        try:
            c, services, admin = _running_hero(Settings(
                redis_url=url, key_prefix="full", refresh_interval=0.0,
                decide_budget_ms=1000.0), 4)
            reasons = set()
            for i in range(120):  # about 100 KB a visitor: far more than 4 MB in all
                attrs = {f"a{j}": "x" * 1000 for j in range(100)}
                r = c.post("/v1/decide", json={"visitor_id": f"v{i}", "channel": "web",
                                               "attributes": attrs}, headers=admin)
                assert r.status_code == 200, r.json
                reasons |= {d["reason"] for d in r.json["decisions"]}
            assert reasons == {"assigned", "fallback"}  # full: the controls, not an error
            # Writes that still fit go through; one that does not is refused, never a 5xx.
            for i in range(120):
                r = c.post("/v1/identify", json={"visitor_id": f"v{i}", "ids": {
                    "device_id": f"d{i}"}, "attributes": {f"b{j}": "y" * 1000
                                                          for j in range(50)}}, headers=admin)
                assert r.status_code in (200, 400, 503), r.json
                if r.status_code == 503:
                    assert "Retry-After" in r.headers
                    break
            else:
                raise AssertionError("identify never hit the memory cap")
            info = services.redis.config_get("maxmemory-policy")
            assert info["maxmemory-policy"] == "noeviction"
        finally:
            server.stop()


def test_the_store_breaker_opens_on_a_key_check_and_only_real_answers_close_it():
    # Nothing listens on port 1: every Redis call is refused at once.
    settings = Settings(redis_url="redis://127.0.0.1:1/0", key_prefix="dead",
                        outage_cooldown=5.0, redis_connect_timeout=0.2)
    app = create_app(settings, rng=np.random.default_rng(6))
    breaker = app.extensions["centric"].store_breaker
    c = app.test_client()
    key = {"Authorization": "Bearer csk_never-seen"}
    event = {"visitor_id": "v", "metric": "purchase", "event_id": "e"}
    r = c.post("/v1/track", json=event, headers=key)
    assert r.status_code == 503 and breaker.open  # the key check itself found Redis down
    # A preflight, a refused body and an unknown path never reached Redis: still open.
    assert c.options("/v1/track").status_code == 204
    assert c.post("/v1/track", data="x", headers=key).status_code == 503
    assert c.get("/v1/no-such-thing").status_code == 404
    assert breaker.open
    r, elapsed = _timed(lambda: c.post("/v1/track", json=event, headers=key))
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1 and elapsed < 0.05


@pytest.mark.slow
def test_moments_and_the_value_model_ask_for_a_retry_through_an_outage(private_redis):
    settings = _outage_settings(private_redis, "outage-moments")
    c, services, admin = _running_hero(settings, 5)
    server = {"Authorization": "Bearer " + services.api_keys.create("server")}
    moment = {"name": "second", "experiment": "hero",
              "when": {"all": [{"fact": "purchase_count", "op": "eq", "value": 1}]}}
    assert c.put("/v1/moments", json=[moment], headers=admin).status_code == 200
    calls = {
        "members": lambda: c.get("/v1/moments/second/members", headers=server),
        "sweep": lambda: c.post("/v1/moments/sweep", headers=admin),
        "moments": lambda: c.get("/v1/moments", headers=admin),
        "model": lambda: c.get("/v1/models/clv", headers=admin),
        "fit": lambda: c.post("/v1/models/clv/fit", headers=admin),
    }
    healthy = {name: call().status_code for name, call in calls.items()}
    # No model yet: GET answers 404 and a fit of nobody 409; the others 200.
    assert healthy == {"members": 200, "sweep": 200, "moments": 200, "model": 404,
                       "fit": 409}, healthy

    def refused() -> None:
        for name, call in calls.items():
            r, elapsed = _timed(call)
            assert r.status_code == 503, (name, r.status_code, r.get_data(as_text=True))
            assert r.json["error"]["code"] == "store_unavailable", (name, r.json)
            assert r.headers["Retry-After"] == "1", name
            # At most one socket timeout, never a hung worker.
            assert elapsed < settings.redis_socket_timeout + 0.5, (name, elapsed)

    os.kill(private_redis.process.pid, signal.SIGSTOP)  # frozen: connections hang
    try:
        refused()
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)
    private_redis.stop()  # gone: connections refused
    refused()
    private_redis.start()
    time.sleep(0.35)  # the cool-down after the last failure
    assert {name: call().status_code for name, call in calls.items()} == healthy
