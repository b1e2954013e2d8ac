"""Redis outages: decide stays up, track asks for a retry, everything recovers.

Decide answers with the control within its budget, track answers 503 with Retry-After,
readiness fails, and when Redis returns everything works again without a restart.
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
from tests.support import experiment_body

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


def _timed(call):
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


@pytest.mark.slow
def test_outage_and_recovery(private_redis):
    settings = Settings(redis_url=private_redis.url, key_prefix="outage",
                        decide_budget_ms=BUDGET_MS, outage_cooldown=0.3, refresh_interval=0.0,
                        redis_socket_timeout=0.5, redis_connect_timeout=0.5)
    app = create_app(settings, rng=np.random.default_rng(3))
    services = app.extensions["centric"]
    admin = {"Authorization": "Bearer " + services.api_keys.create("admin")}
    c = app.test_client()
    c.post("/v1/experiments", json=experiment_body(), headers=admin)
    c.post("/v1/experiments/hero/start", headers=admin)
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
