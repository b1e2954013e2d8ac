"""The API under schemathesis: generated from /openapi.json, run against a live server.

Every operation is fuzzed (coverage, fuzzing and stateful phases) with an admin key: no 5xx,
no response that breaks the documented schema or status codes, no answer slower than 2 s.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
import redis
import requests

from server import create_app
from server.cli import WORKER_CLASS
from server.settings import Settings
from tests.support import experiment_body, gunicorn_server


def test_openapi_document_describes_every_endpoint(client):
    doc = client.get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    paths = set(doc["paths"])
    assert {"/v1/decide", "/v1/track", "/v1/identify", "/v1/expose", "/v1/experiments",
            "/v1/experiments/{key}", "/v1/experiments/{key}/start",
            "/v1/experiments/{key}/pause", "/v1/experiments/{key}/stop",
            "/v1/experiments/{key}/report", "/v1/personas", "/v1/visitors/{visitor_id}",
            "/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/experiments/{key}/counters",
            "/v1/experiments/{key}/report/plots/{name}.{format}"} <= paths
    # Every API route the app serves is in the document (the console's pages are HTML for
    # people, not API).
    rules = {r.rule.replace("<path:visitor_id>", "{visitor_id}").replace("<key>", "{key}")
             .replace("<name>", "{name}").replace("<fmt>", "{format}")
             for r in client.application.url_map.iter_rules()
             if r.endpoint != "static" and not r.endpoint.startswith("console.")
             and r.endpoint != "root"}
    assert rules <= paths, rules - paths
    decide = doc["components"]["schemas"]["DecideRequest"]
    assert decide["additionalProperties"] is False
    assert set(decide["required"]) == {"visitor_id", "channel"}
    assert "\\Z" not in str(doc)


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_schema_violation_or_hang(redis_url, tmp_path):
    prefix = "fz" + uuid.uuid4().hex[:8]
    app = create_app(Settings(redis_url=redis_url, key_prefix=prefix))
    key = app.extensions["centric"].api_keys.create("admin")
    env = {"CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix,
           "CENTRIC_SDK_RATE_LIMIT": "0", "CENTRIC_ACCESS_LOG": "0"}
    # A request line over gunicorn's limit is refused (414) before the app sees it: a correct
    # rejection of the long invalid queries the fuzzer makes up (a parameter as a list of
    # many values), answered as the JSON envelope by the worker `centric serve` runs.
    config = tmp_path / "schemathesis.toml"
    config.write_text('[checks.negative_data_rejection]\nexpected-statuses = ["400", "401", '
                      '"403", "404", "405", "406", "409", "414", "415", "422", "428", "429", '
                      '"5xx"]\n')
    try:
        with gunicorn_server(env, worker_class=WORKER_CLASS) as base:
            requests.post(base + "/v1/experiments", json=experiment_body(),
                          headers={"Authorization": f"Bearer {key}"})
            result = subprocess.run(
                [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
                 base + "/openapi.json",
                 "-H", f"Authorization: Bearer {key}", "--checks", "all",
                 # Cross-field rules (unique variant keys, ...) cannot be said in JSON Schema,
                 # so a schema-valid body may still be refused with 400: that check is off.
                 "--exclude-checks", "positive_data_acceptance",
                 "--max-response-time", "2", "--request-timeout", "5",
                 "-n", "25", "--seed", "20261123"],
                # schemathesis keeps its cache in .schemathesis/ under the working directory:
                # outside the repository, so a test run never changes the tree.
                capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        client = redis.Redis.from_url(redis_url)
        for k in client.scan_iter(match=f"*{{{prefix}:*", count=1000):
            client.delete(k)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
