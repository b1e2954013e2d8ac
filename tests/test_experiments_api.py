"""Admin API for experiments: CRUD, validation, life cycle, locked variants."""

from __future__ import annotations

from tests.support import experiment_body


def test_create_get_list_defaults(client, admin):
    r = client.post("/v1/experiments", json=experiment_body(), headers=admin)
    assert r.status_code == 201
    created = r.json
    assert created["status"] == "draft"
    assert created["bandit"] == {"prior": {"alpha": 1.0, "beta": 1.0}, "floor": 0.01,
                                 "pooling": "auto", "half_life_hours": 2160.0}
    assert created["coverage"] == 1.0 and created["holdout"] == 0.0
    assert created["attribution_window_hours"] == 168.0
    assert len(created["seed"]) == 16 and created["revision"] == 1
    assert client.get("/v1/experiments/hero", headers=admin).json == created
    listed = client.get("/v1/experiments", headers=admin).json["experiments"]
    assert [e["key"] for e in listed] == ["hero"]


def test_duplicate_key_conflicts(client, admin):
    assert client.post("/v1/experiments", json=experiment_body(), headers=admin).status_code == 201
    r = client.post("/v1/experiments", json=experiment_body(), headers=admin)
    assert r.status_code == 409 and "key" in r.json["error"]["fields"]


def test_control_defaults_to_variant_named_control(client, admin):
    body = experiment_body()
    del body["control"]
    assert client.post("/v1/experiments", json=body, headers=admin).json["control"] == "control"


def test_lifecycle_start_pause_stop_with_winner(client, admin, sdk):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    assert client.post("/v1/experiments/hero/pause", headers=admin).status_code == 409
    started = client.post("/v1/experiments/hero/start", headers=admin).json
    assert started["status"] == "running" and started["started_at"] is not None
    assert client.post("/v1/experiments/hero/pause", headers=admin).json["status"] == "paused"
    assert client.post("/v1/experiments/hero/start", headers=admin).json["status"] == "running"
    r = client.post("/v1/experiments/hero/stop", json={"winner": "nope"}, headers=admin)
    assert r.status_code == 400 and "winner" in r.json["error"]["fields"]
    stopped = client.post("/v1/experiments/hero/stop", json={"winner": "benefit"},
                          headers=admin).json
    assert stopped["status"] == "stopped" and stopped["winner"] == "benefit"
    r = client.post("/v1/experiments/hero/start", headers=admin)
    assert r.status_code == 409 and "status" in r.json["error"]["fields"]
    # The shipped winner is served to everyone.
    for visitor in ("a", "b", "c"):
        d = client.post("/v1/decide", json={"visitor_id": visitor, "channel": "web",
                                            "experiments": ["hero"]}, headers=sdk).json
        assert d["decisions"][0]["variant"] == "benefit"
        assert d["decisions"][0]["reason"] == "winner"
        assert d["decisions"][0]["payload"] == {"headline": "Free returns"}


def test_running_variants_are_locked_but_other_fields_change(client, admin):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    client.post("/v1/experiments/hero/start", headers=admin)
    changed = experiment_body()
    changed["variants"][1]["payload"] = {"headline": "Other"}
    r = client.put("/v1/experiments/hero", json=changed, headers=admin)
    assert r.status_code == 409
    assert "pause" in r.json["error"]["message"]
    assert "variants" in r.json["error"]["fields"]
    # The verdict's error rate holds for one rule read at every look: no changing it halfway.
    r = client.put("/v1/experiments/hero", json=experiment_body(decision={"alpha": 0.2}),
                   headers=admin)
    assert r.status_code == 409 and "decision" in r.json["error"]["fields"]
    r = client.put("/v1/experiments/hero", json=experiment_body(name="Renamed"), headers=admin)
    assert r.status_code == 200 and r.json["name"] == "Renamed" and r.json["status"] == "running"
    client.post("/v1/experiments/hero/pause", headers=admin)
    r = client.put("/v1/experiments/hero", json=changed, headers=admin)
    assert r.status_code == 200 and r.json["variants"][1]["payload"] == {"headline": "Other"}
    assert r.json["revision"] == 5


def test_put_key_mismatch_and_unknown(client, admin):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    r = client.put("/v1/experiments/hero", json=experiment_body(key="other"), headers=admin)
    assert r.status_code == 400 and "key" in r.json["error"]["fields"]
    r = client.put("/v1/experiments/nope", json=experiment_body(key="nope"), headers=admin)
    assert r.status_code == 404


def test_delete_only_when_not_running_and_removes_counters(client, admin, sdk, rclient, prefix):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    client.post("/v1/experiments/hero/start", headers=admin)
    client.post("/v1/decide", json={"visitor_id": "v", "channel": "web"}, headers=sdk)
    assert client.delete("/v1/experiments/hero", headers=admin).status_code == 409
    client.post("/v1/experiments/hero/stop", headers=admin)
    assert any(":ct:hero:" in k for k in rclient.scan_iter(match=f"*{prefix}*"))
    assert client.delete("/v1/experiments/hero", headers=admin).status_code == 204
    assert client.get("/v1/experiments/hero", headers=admin).status_code == 404
    assert not any(":ct:hero:" in k for k in rclient.scan_iter(match=f"*{prefix}*"))


def test_recreated_experiment_starts_fresh(client, admin, sdk):
    client.post("/v1/experiments", json=experiment_body(mode="ab"), headers=admin)
    client.post("/v1/experiments/hero/start", headers=admin)
    first = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web"}, headers=sdk)
    assert first.json["decisions"][0]["reason"] == "assigned"
    client.post("/v1/experiments/hero/stop", headers=admin)
    client.delete("/v1/experiments/hero", headers=admin)
    client.post("/v1/experiments", json=experiment_body(mode="ab"), headers=admin)
    client.post("/v1/experiments/hero/start", headers=admin)
    again = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web"}, headers=sdk)
    # A new seed: the old assignment is not sticky for the new experiment.
    assert again.json["decisions"][0]["reason"] == "assigned"
    rows = client.get("/v1/experiments/hero/counters", headers=admin).json["rows"]
    assert sum(r["exposures"] for r in rows) == 1


def test_payload_limit_counts_utf8_bytes(client, admin):
    body = experiment_body(key="wide", variants=[
        {"key": "control", "payload": {"headline": "\u6f22" * 5000}}, {"key": "b"}])
    r = client.post("/v1/experiments", json=body, headers=admin)
    assert r.status_code == 201  # 15,000 bytes of UTF-8: inside 16 KiB
    assert r.json["variants"][0]["payload"]["headline"] == "\u6f22" * 5000
