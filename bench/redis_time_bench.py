"""Redis time per decide and per track, a visitor with huge attributes, one access log line.

Usage: python bench/redis_time_bench.py [--calls 3000]

Runs in-process (Flask's test client) against CENTRIC_REDIS_URL (else 127.0.0.1:6379) under a
throw-away prefix, and reads the script's time from Redis' own INFO commandstats (reset
before each figure), so the figures are Redis CPU per call, not round trips:

1. decide for new visitors with 5 running experiments (bandit and A/B, 4 variants), 3 persona
   rules and two attributes in the body;
2. track of one purchase for each of those visitors (5 open assignments each);
3. decide for a visitor holding 200 attributes of about 4 KB each, next to one holding none;
4. the cost of one JSON access log line, timed in-process.

The Redis must not serve other traffic meanwhile: commandstats count every client's calls.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from decide_bench import Deployment  # noqa: E402

from server.observability import access_log, configure_logging  # noqa: E402


def script_us(client: redis.Redis) -> float:
    """Mean µs of Redis time per script call since the last reset."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return float(stats.get("usec_per_call", 0.0))


def access_line_us(lines: int = 20_000) -> float:
    """µs to write one access log line as workers do (JSON, to a file)."""
    configure_logging("INFO")
    with tempfile.TemporaryFile("w") as sink:
        handler = logging.getLogger("centric.access").handlers[0]
        handler.setStream(sink)  # type: ignore[attr-defined]
        extra = {"request_id": "0" * 32, "method": "POST", "path": "/v1/decide",
                 "endpoint": "/v1/decide", "status": 200, "duration_ms": 1.23}
        start = time.perf_counter()
        for _ in range(lines):
            access_log.info("request", extra=extra)
        return (time.perf_counter() - start) / lines * 1e6


def main() -> int:
    """Print every figure."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    url = os.environ.get("CENTRIC_REDIS_URL", "redis://127.0.0.1:6379/0")
    store = redis.Redis.from_url(url, decode_responses=True)
    deployment = Deployment(url, 5, 3)
    try:
        client = deployment.app.test_client()
        sdk = {"Authorization": "Bearer " + deployment.sdk_key}

        def decide(visitor: str, **body: object) -> None:
            r = client.post("/v1/decide", json={"visitor_id": visitor, "channel": "web",
                                                **body}, headers=sdk)
            assert r.status_code == 200, r.json

        for i in range(300):  # warm: definitions, fits, segments admitted
            decide(f"warm{i}", attributes={"tier": "t1", "country": "de"})
        store.config_resetstat()
        for i in range(args.calls):
            decide(f"v{i}", attributes={"tier": f"t{i % 12}", "country": "de"})
        print(f"decide, new visitor, 5 experiments: {script_us(store):6.0f} µs of Redis time")
        store.config_resetstat()
        for i in range(args.calls):
            r = client.post("/v1/track", json={"visitor_id": f"v{i}", "metric": "purchase",
                                               "value": 12.5, "event_id": f"e{i}"}, headers=sdk)
            assert r.status_code == 200, r.json
        print(f"track, 5 open assignments:          {script_us(store):6.0f} µs of Redis time")

        big = ["x" * 80] * 45  # a list attribute just under the 4,096-character cap
        for batch in range(10):  # 200 attributes, within the body size limit per call
            decide("heavy", attributes={f"a{batch * 20 + i}": big for i in range(20)})
        decide("light")
        heavy = deployment.app.extensions["centric"].keys.visitor("visitor_id:heavy").profile
        size = store.memory_usage(heavy) or 0
        for name in ("heavy", "light"):
            store.config_resetstat()
            for _ in range(200):
                decide(name)
            label = (f"decide, visitor with 200 attributes ({size / 1024:.0f} KB)"
                     if name == "heavy" else "decide, the same visitor without attributes")
            print(f"{label + ':':45s} {script_us(store):6.0f} µs of Redis time")
    finally:
        deployment.drop()
    print(f"one JSON access log line: {access_line_us():.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
