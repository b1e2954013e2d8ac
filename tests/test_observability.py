"""/metrics in Prometheus format (all gunicorn workers added up) and JSON request logs."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys

import pytest
import requests

from server.observability import JsonFormatter
from tests.support import ROOT, experiment_body, free_port, gunicorn_server, wait_until_ready


def _sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_request_ids_and_metrics_in_process(client, admin, sdk):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    client.post("/v1/experiments/hero/start", headers=admin)
    r = client.post("/v1/decide", json={"visitor_id": "v", "channel": "web"},
                    headers={**sdk, "X-Request-ID": "req-123"})
    assert r.headers["X-Request-ID"] == "req-123"
    other = client.post("/v1/decide", json={"visitor_id": "w", "channel": "web"}, headers=sdk)
    assert re.fullmatch(r"[0-9a-f]{32}", other.headers["X-Request-ID"])
    text = client.get("/metrics").get_data(as_text=True)
    assert _sum(text, "centric_requests_total", endpoint="/v1/decide", status="200") >= 2
    assert _sum(text, "centric_decisions_total", reason="assigned") >= 2
    assert "centric_request_duration_seconds_bucket" in text


def test_json_log_lines():
    record = logging.LogRecord("centric.access", logging.INFO, __file__, 1, "request", None,
                               None)
    record.request_id, record.status, record.path = "abc", 200, "/v1/decide"
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "abc" and line["status"] == 200
    assert line["level"] == "INFO" and line["message"] == "request"


@pytest.mark.slow
def test_serve_adds_up_metrics_of_all_workers_and_logs_json(tmp_path):
    data_dir = tmp_path / "var"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CENTRIC_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    log_path = tmp_path / "stderr.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--workers", "2",
             "--data-dir", str(data_dir)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
            stderr=log_file, text=True, start_new_session=True)
        try:
            assert process.stdout is not None
            printed = {}
            for line in process.stdout:
                name, _, value = line.partition(":")
                printed[name.strip()] = value.strip()
                if line.startswith("sdk key"):
                    break
            wait_until_ready(base, process)
            sdk = {"Authorization": "Bearer " + printed["sdk key"]}
            for i in range(40):  # new connections: both workers get some
                requests.post(base + "/v1/decide", json={"visitor_id": f"v{i}",
                                                         "channel": "web"}, headers=sdk)
            seen = [_sum(requests.get(base + "/metrics").text, "centric_requests_total",
                         endpoint="/v1/decide", status="200") for _ in range(4)]
            assert seen == [40.0] * 4  # whichever worker answers, it reports them all
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()
             if line.startswith("{")]
    decides = [x for x in lines if x.get("path") == "/v1/decide"]
    assert len(decides) == 40 and all(x["status"] == 200 and x["request_id"] for x in decides)


def test_own_gunicorn_writes_one_json_access_line_per_request(redis_url, prefix, tmp_path):
    logs = (tmp_path / "stderr").open("w+")
    env = {"CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix}
    with gunicorn_server(env, workers=1, stderr=logs) as base:
        r = requests.get(base + "/healthz", headers={"X-Request-ID": "trace-me-42"}, timeout=5)
        assert r.status_code == 200
    logs.seek(0)
    lines = [json.loads(line) for line in logs if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "trace-me-42"]
    assert len(mine) == 1
    assert mine[0]["path"] == "/healthz" and mine[0]["status"] == 200
    assert mine[0]["logger"] == "centric.access" and mine[0]["duration_ms"] >= 0
