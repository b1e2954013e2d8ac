"""Customer value and moments at scale: fit, sweep and member listing for 100,000 customers.

Usage: python bench/moments_bench.py [--customers 120000]

Runs in-process (Flask's test client) against CENTRIC_REDIS_URL (else 127.0.0.1:6379) under a
throw-away prefix. It imports a purchase history through POST /v1/track (batches of 500,
server key, past timestamps): most customers bought once, some again. Then it times:

1. the customer-value fit (reading every buyer, fitting both models, scoring everyone);
2. a moment sweep ("one purchase so far", so most customers are members);
3. paging through every member, 1,000 per page, without a message experiment;
4. pages of 100 members with a message experiment (every member decided through decide).

While 1-4 run, another process PINGs Redis every 5 ms: the slowest PING and the slowest
single command Redis logged (SLOWLOG, threshold 0 for the run) tell whether anything held
Redis up. The Redis must not serve other traffic meanwhile.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.support import experiment_body  # noqa: E402

DAY = 86400.0
BATCH = 500


def _ping(url: str, ready: Any, stop: Any, worst: Any) -> None:
    client = redis.Redis.from_url(url)
    client.ping()
    ready.set()
    while not stop.wait(0.005):
        start = time.perf_counter()
        client.ping()
        worst.value = max(worst.value, time.perf_counter() - start)


class Pinger:
    """PINGs Redis from a process of its own (free of this one's GIL); keeps the slowest."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.context = multiprocessing.get_context("spawn")
        self.worst = 0.0

    def __enter__(self) -> Pinger:
        self.stop, ready = self.context.Event(), self.context.Event()
        self.value = self.context.Value("d", 0.0)
        self.process = self.context.Process(target=_ping, args=(
            self.url, ready, self.stop, self.value), daemon=True)
        self.process.start()
        ready.wait(60)  # timing starts once the pinger runs
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join()
        self.worst = float(self.value.value)


def slowest_command(client: redis.Redis) -> tuple[float, str]:
    """The slowest command in the slow log since the last reset (µs, name)."""
    entries = [e for e in client.slowlog_get(1_000_000)
               if not bytes(e.get("command", b"")).upper().startswith(b"SLOWLOG")]
    if not entries:
        return 0.0, ""
    worst = max(entries, key=lambda e: e["duration"])
    command = worst.get("command", b"")
    name = command.split()[0].decode() if isinstance(command, bytes) and command else "?"
    return float(worst["duration"]), name


def timed(label: str, pinger: Pinger, client: redis.Redis, work: Callable[[], Any]) -> Any:
    """Run work, print its time, the slowest PING and the slowest Redis command meanwhile."""
    client.slowlog_reset()
    with pinger:
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
    micros, name = slowest_command(client)
    print(f"{label:<44} {seconds:8.2f} s   slowest PING {pinger.worst * 1000:6.1f} ms   "
          f"slowest command {micros / 1000:6.1f} ms ({name})", flush=True)
    return result


def main() -> int:
    """Seed, then time the fit, the sweep and the listing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=120_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    url = os.environ.get("CENTRIC_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = "mb" + uuid.uuid4().hex[:8]
    app = create_app(Settings(redis_url=url, key_prefix=prefix))
    services = app.extensions["centric"]
    client = redis.Redis.from_url(url)
    old_slowlog: dict[Any, Any] = client.config_get("slowlog-*")
    admin = {"Authorization": "Bearer " + services.api_keys.create("admin")}
    c: Any = app.test_client()  # its responses' .json is typed Optional; these are JSON
    rng = np.random.default_rng(args.seed)
    try:
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 1_000_000)
        start = time.perf_counter()
        now = time.time()
        events: list[dict[str, Any]] = []
        sent = 0
        for i in range(args.customers):
            first = float(rng.uniform(15, 365))
            repeats = int(rng.poisson(0.3))
            days = [first, *sorted(rng.uniform(0, first, size=repeats), reverse=True)]
            events += [{"visitor_id": f"c{i:07d}", "id_type": "customer_id",
                        "metric": "purchase", "value": round(float(rng.gamma(3, 15)), 2),
                        "event_id": f"o{i}-{n}", "timestamp": now - d * DAY}
                       for n, d in enumerate(days)]
            while len(events) >= BATCH or (events and i == args.customers - 1):
                batch, events = events[:BATCH], events[BATCH:]
                r = c.post("/v1/track", json={"events": batch}, headers=admin)
                assert r.status_code == 200 and r.json["accepted"] == len(batch), r.json
                sent += len(batch)
        print(f"seeded {args.customers:,} customers, {sent:,} purchases in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        pinger = Pinger(url)
        model = timed("customer-value fit (read, fit, score all)", pinger, client,
                      lambda: c.post("/v1/models/clv/fit", headers=admin))
        assert model.status_code == 200, model.json
        print("  fitted:", model.json["bgnbd"], model.json["gamma_gamma"])
        keys = services.keys
        pipe = client.pipeline(transaction=False)
        sample = [f"customer_id:c{i:07d}" for i in range(0, args.customers,
                                                          max(1, args.customers // 2000))]
        for node in sample:
            pipe.memory_usage(keys.visitor(node).profile, samples=0)
        profile_bytes = sum(b or 0 for b in pipe.execute()) / len(sample)
        index_bytes = sum(client.memory_usage(keys.buyers(s), samples=0) or 0
                          for s in range(16)) / args.customers
        print(f"  Redis per customer: profile hash {profile_bytes:.0f} B (with predictions), "
              f"buyers index {index_bytes:.0f} B")
        body = experiment_body(key="nudge", mode="ab")
        assert c.post("/v1/experiments", json=body, headers=admin).status_code == 201
        assert c.post("/v1/experiments/nudge/start", headers=admin).status_code == 200
        assert c.put("/v1/moments", headers=admin, json=[
            {"name": "once", "when": {"fact": "purchase_count", "op": "eq", "value": 1}},
            {"name": "nudge", "experiment": "nudge",
             "when": {"fact": "purchase_count", "op": "eq", "value": 1}}]).status_code == 200
        swept = timed("moment sweep (2 moments)", pinger, client,
                      lambda: c.post("/v1/moments/sweep", headers=admin).json)
        members = swept["entered"]["once"]
        print(f"  {swept['customers']:,} customers, {members:,} members per moment")

        def list_all() -> int:
            cursor, more, seen = "0", True, 0
            while more:
                page = c.get(f"/v1/moments/once/members?cursor={cursor}&limit=1000",
                             headers=admin).json
                seen += len(page["members"])
                cursor, more = page["next_cursor"], page["has_more"]
            return seen

        seen = timed(f"list all {members:,} members, 1,000 per page", pinger, client, list_all)
        assert seen == members, (seen, members)

        def decided_pages() -> int:
            cursor, seen = "0", 0
            for _ in range(10):
                page = c.get(f"/v1/moments/nudge/members?cursor={cursor}&limit=100",
                             headers=admin).json
                seen += len(page["members"])
                cursor = page["next_cursor"]
            return seen

        t0 = time.perf_counter()
        decided = timed("10 pages of 100 members, each decided", pinger, client,
                        decided_pages)
        per_member = (time.perf_counter() - t0) / max(decided, 1) * 1000
        print(f"  {per_member:.2f} ms per member with its decision")
    finally:
        for name, value in old_slowlog.items():
            client.config_set(name, value)
        for k in client.scan_iter(match=f"*{{{prefix}:*", count=1000):
            client.delete(k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
