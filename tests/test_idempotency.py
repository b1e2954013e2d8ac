"""Outcomes count once, under concurrency, against a real gunicorn server.

8 threads, 2 workers, 20% repeats of their own and of each other's event ids, some of them
sent by several threads at the same moment.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict

import pytest
import requests

from tests.support import experiment_body, gunicorn_server

THREADS = 8
PER_THREAD = 2000
VISITORS = 200


@pytest.mark.slow
def test_concurrent_repeats_count_once(redis_url, prefix, app, admin):
    services = app.extensions["centric"]
    with gunicorn_server({"CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix}) as base:
        session = requests.Session()
        session.headers.update(admin)
        body = experiment_body(key="idem", mode="ab", metric={"name": "spend", "kind": "revenue"})
        assert session.post(base + "/v1/experiments", json=body).status_code == 201
        session.post(base + "/v1/experiments/idem/start")
        visitors = [f"visitor-{i}" for i in range(VISITORS)]
        for v in visitors:
            r = session.post(base + "/v1/decide", json={"visitor_id": v, "channel": "web"})
            assert r.json()["decisions"][0]["reason"] == "assigned"

        # Events every thread sends, in its own order: the same event from several workers at once.
        contested = [(random.choice(visitors), f"shared-{i}") for i in range(PER_THREAD // 10)]
        acknowledged: list[tuple[str, str]] = []
        lock = threading.Lock()
        errors: list[str] = []
        accepted = [0]

        def worker(n: int) -> None:
            rnd = random.Random(n)
            s = requests.Session()
            s.headers.update(admin)
            own: list[tuple[str, str]] = []
            plan = [("fresh", None)] * (PER_THREAD - 2 * len(contested)) + [
                ("contested", e) for e in rnd.sample(contested, len(contested))] + [
                ("repeat", None)] * len(contested)
            rnd.shuffle(plan)
            for kind, event in plan:
                if kind == "fresh" or (kind == "repeat" and not own):
                    event = (rnd.choice(visitors), f"t{n}-{len(own)}")
                    own.append(event)
                elif kind == "repeat":
                    event = rnd.choice(own)
                visitor, event_id = event
                r = s.post(base + "/v1/track", json={"visitor_id": visitor, "metric": "spend",
                                                     "value": 1, "event_id": event_id})
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text}")
                    continue
                with lock:
                    acknowledged.append(event)
                    accepted[0] += r.json()["accepted"]

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert errors == []
    assert len(acknowledged) == THREADS * PER_THREAD
    distinct = set(acknowledged)
    # Exactly one of the sends of each event was told "accepted"; the others "duplicate".
    assert accepted[0] == len(distinct)
    per_visitor: dict[str, int] = defaultdict(int)
    for visitor, _ in distinct:
        per_visitor[visitor] += 1
    experiment = services.experiments.get("idem")
    counts = services.counters.read(experiment)
    tallies = [counts.tally("spend", "p", "default", "web", v) for v in experiment.variant_keys]
    assert sum(t.value_sum for t in tallies) == len(distinct)
    assert sum(t.conversions for t in tallies) == len(per_visitor)
    assert sum(t.value_sq_sum for t in tallies) == sum(n * n for n in per_visitor.values())
    assert sum(t.exposures for t in tallies) == VISITORS
