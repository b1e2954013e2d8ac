"""Load without loss: many clients, a mix of decide, identify and track with retries.

Usage: python bench/load_test.py [--seconds 60] [--clients 16] [--workers 2]

Starts gunicorn on loopback against CENTRIC_REDIS_URL (else 127.0.0.1:6379) under a
throw-away prefix. Every client thread keeps its own log of what the server acknowledged;
10% of tracks are sent again with the same event id (half of them at the same moment from a
second thread). Afterwards the counters in Redis must equal the logs: nothing lost, nothing
counted twice. Prints throughput, error counts and the comparison.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.support import experiment_body, gunicorn_server  # noqa: E402


@dataclass
class Log:
    """What one client saw acknowledged."""

    assigned: set[str] = field(default_factory=set)
    events: dict[str, str] = field(default_factory=dict)  # event id -> visitor
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


def _client(base: str, key: str, n: int, deadline: float, log: Log,
            lock: threading.Lock) -> None:
    s = requests.Session()
    s.headers.update({"Authorization": f"Bearer {key}"})
    rnd = random.Random(n)
    mine: list[str] = []
    sent: list[tuple[str, str]] = []
    i = 0
    while time.monotonic() < deadline:
        i += 1
        roll = rnd.random()
        try:
            if roll < 0.45 or not mine:
                visitor = f"c{n}-v{i}"
                r = s.post(f"{base}/v1/decide", json={"visitor_id": visitor, "channel": "web",
                                                      "experiments": ["load"]}, timeout=10)
                kind = "decide"
                if r.status_code == 200 and r.json()["decisions"][0]["reason"] in (
                        "assigned", "holdout"):
                    mine.append(visitor)
                    with lock:
                        log.assigned.add(visitor)
            elif roll < 0.55:
                visitor = rnd.choice(mine)
                r = s.post(f"{base}/v1/identify", json={
                    "visitor_id": visitor, "ids": {"customer_id": f"cust-{visitor}"}},
                    timeout=10)
                kind = "identify"
            else:
                if sent and rnd.random() < 0.10:
                    visitor, event = rnd.choice(sent)  # a retry with the same event id
                    if rnd.random() < 0.5:  # ... and a second copy at the same moment
                        threading.Thread(target=_track, args=(base, key, visitor, event, log,
                                                              lock)).start()
                else:
                    visitor, event = rnd.choice(mine), uuid.uuid4().hex
                    sent.append((visitor, event))
                _track(base, key, visitor, event, log, lock, s)
                continue
            with lock:
                log.calls[kind] += 1
                if r.status_code != 200:
                    log.errors[f"{kind} {r.status_code}"] += 1
        except requests.RequestException as error:
            with lock:
                log.errors[type(error).__name__] += 1


def _track(base: str, key: str, visitor: str, event: str, log: Log, lock: threading.Lock,
           session: requests.Session | None = None) -> None:
    s = session or requests.Session()
    try:
        r = s.post(f"{base}/v1/track", json={"visitor_id": visitor, "metric": "spend",
                                             "value": 1, "event_id": event},
                   headers={"Authorization": f"Bearer {key}"}, timeout=10)
    except requests.RequestException as error:
        with lock:
            log.errors[type(error).__name__] += 1
        return
    with lock:
        log.calls["track"] += 1
        if r.status_code == 200:
            log.events[event] = visitor
        else:
            log.errors[f"track {r.status_code}"] += 1


def run(redis_url: str, seconds: float, clients: int, workers: int) -> dict[str, object]:
    """Drive the server; return what the clients saw and what Redis counted."""
    prefix = "load" + uuid.uuid4().hex[:6]
    app = create_app(Settings(redis_url=redis_url, key_prefix=prefix))
    services = app.extensions["centric"]
    key = services.api_keys.create("admin")
    env = {"CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix,
           "CENTRIC_SDK_RATE_LIMIT": "0"}
    log, lock = Log(), threading.Lock()
    try:
        with gunicorn_server(env, workers=workers) as base:
            body = experiment_body(key="load", mode="bandit", holdout=0.1,
                                   metric={"name": "spend", "kind": "revenue"})
            requests.post(f"{base}/v1/experiments", json=body,
                          headers={"Authorization": f"Bearer {key}"})
            requests.post(f"{base}/v1/experiments/load/start",
                          headers={"Authorization": f"Bearer {key}"})
            started = time.monotonic()
            threads = [threading.Thread(target=_client, args=(base, key, n, started + seconds,
                                                              log, lock))
                       for n in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(0.5)  # the last concurrent duplicate copies
            elapsed = time.monotonic() - started
        e = services.experiments.get("load")
        counts = services.counters.read(e)
        exposures = sum(counts.exposures.values())
        tallies = list(counts.metrics.values())
        value_sum = sum(t.value_sum for t in tallies)
        converters = sum(t.conversions for t in tallies)
    finally:
        client = redis.Redis.from_url(redis_url)
        for k in client.scan_iter(match=f"*{{{prefix}:*", count=1000):
            client.delete(k)
    total = sum(log.calls.values())
    return {
        "seconds": elapsed, "requests": total, "throughput": total / elapsed,
        "calls": dict(log.calls), "errors": dict(log.errors),
        "assigned_logged": len(log.assigned), "exposures_counted": exposures,
        "events_logged": len(log.events), "value_counted": value_sum,
        "converters_logged": len(set(log.events.values())), "converters_counted": converters,
    }


def main() -> int:
    """Run and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    url = os.environ.get("CENTRIC_REDIS_URL", "redis://127.0.0.1:6379/0")
    result = run(url, args.seconds, args.clients, args.workers)
    for name, value in result.items():
        print(f"{name:20s} {value}")
    lost = result["events_logged"] != result["value_counted"]
    print("LOSS OR DOUBLE COUNT" if lost else "counters equal the clients' logs")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
