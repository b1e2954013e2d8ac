"""Huge and odd strings in every field of every endpoint: a quick 4xx, never a hang.

Every string (and every object key) of a valid body of each endpoint is replaced in turn by
a 1 MB string. The app under test accepts bodies of 4 MB, so the strings really reach the
validators instead of stopping at the body limit; the time is measured around the request
inside the server process (the Flask test client), so it is server time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from werkzeug.test import EnvironBuilder

from server import create_app
from tests.support import experiment_body

HUGE = 1024 * 1024
LIMIT_SECONDS = 0.1

BODIES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/decide", {"visitor_id": "v", "channel": "web", "experiments": ["hero"],
                            "persona": "vip", "id_type": "visitor_id",
                            "attributes": {"plan": "pro", "tags": ["a"]}}),
    ("POST", "/v1/track", {"visitor_id": "v", "metric": "purchase", "event_id": "e",
                           "timestamp": "2026-01-01T00:00:00+00:00", "id_type": "visitor_id"}),
    ("POST", "/v1/track", {"events": [{"visitor_id": "v", "metric": "purchase",
                                       "event_id": "e"}]}),
    ("POST", "/v1/identify", {"visitor_id": "v", "ids": {"customer_id": "c"},
                              "attributes": {"plan": "pro"}, "signature": "a" * 64,
                              "id_type": "visitor_id"}),
    ("POST", "/v1/expose", {"visitor_id": "v", "id_type": "visitor_id",
                            "decisions": [{"experiment": "hero", "decision_id": "a" * 32}]}),
    ("POST", "/v1/experiments", {**experiment_body(key="other"),
                                 "guardrails": [{"name": "refund", "harmful": "increase"}],
                                 "audience": {"personas": ["vip"], "channels": ["web"],
                                              "rules": [{"fact": "attributes.plan",
                                                         "op": "eq", "value": "pro"}]}}),
    ("PUT", "/v1/experiments/hero", experiment_body()),
    ("POST", "/v1/experiments/hero/stop", {"winner": "benefit"}),
    ("PUT", "/v1/personas", [{"name": "vip", "when": {"fact": "attributes.tier",
                                                      "op": "eq", "value": "gold"}}]),
    ("POST", "/v1/experiments", experiment_body(key="third", metric={
        "name": "purchase", "kind": "repeat", "within_days": 30})),
    ("PUT", "/v1/moments", [{"name": "second", "description": "after the first order",
                             "when": {"fact": "predicted_clv_365d", "op": "gte", "value": 9},
                             "channel": "email", "experiment": "hero",
                             "followup_experiment": "hero", "cooldown_days": 7}]),
]
PATHS = [
    ("GET", "/v1/experiments/{}"), ("DELETE", "/v1/experiments/{}"),
    ("POST", "/v1/experiments/{}/start"), ("GET", "/v1/experiments/{}/report"),
    ("GET", "/v1/experiments/hero/report?format={}"),
    ("GET", "/v1/experiments/hero/report/plots/{}.svg"),
    ("GET", "/v1/experiments/hero/report/plots/uplift.svg?persona={}&channel=web"),
    ("GET", "/v1/visitors/{}"), ("DELETE", "/v1/visitors/{}"),
    ("GET", "/v1/visitors/v?id_type={}"),
    ("GET", "/v1/moments/{}/members"), ("GET", "/v1/moments/second/members?cursor={}"),
    ("GET", "/v1/moments/second/members?limit={}"),
]


def _variants(value: Any, huge: str) -> Iterator[Any]:
    """Copies of `value` with one string (or one object key) replaced by `huge`."""
    if isinstance(value, str):
        yield huge
    elif isinstance(value, list):
        for i, item in enumerate(value):
            for replaced in _variants(item, huge):
                yield [*value[:i], replaced, *value[i + 1:]]
    elif isinstance(value, dict):
        for key, item in value.items():
            yield {huge: item, **{k: v for k, v in value.items() if k != key}}
            for replaced in _variants(item, huge):
                yield {**value, key: replaced}


@pytest.fixture
def big_app(settings, clock):
    app = create_app(settings.with_changes(max_body_bytes=4 * HUGE), clock=clock,
                     rng=np.random.default_rng(1))
    store = app.extensions["centric"].api_keys
    admin = {"Authorization": "Bearer " + store.create("admin")}
    client = app.test_client()
    assert client.post("/v1/experiments", json=experiment_body(),
                       headers=admin).status_code == 201
    return client, admin


def _quick_4xx(client, method, path, admin, **kwargs):
    """Build the request first (client work), then time only the app answering it."""
    app = client.application
    best, status, body = float("inf"), "", b""
    for _ in range(2):  # the faster of two: a noisy neighbour is not the server's time
        environ = EnvironBuilder(path=path, method=method, headers=admin,
                                 **kwargs).get_environ()
        answer: dict[str, str] = {}

        def start_response(line, headers, exc_info=None, answer=answer):
            answer["status"] = line

        started = time.perf_counter()
        body = b"".join(app(environ, start_response))
        best = min(best, time.perf_counter() - started)
        status = answer["status"]
    assert status[:1] == "4", (method, path[:80], status)
    assert "error" in json.loads(body)
    assert best < LIMIT_SECONDS, (method, path[:80], best)


def test_a_megabyte_in_every_body_field_is_a_quick_4xx(big_app):
    client, admin = big_app
    huge = "x" * HUGE
    cases = 0
    for method, path, body in BODIES:
        for variant in _variants(body, huge):
            _quick_4xx(client, method, path, admin, json=variant)
            cases += 1
    assert cases > 60


def test_a_megabyte_in_every_path_and_query_field_is_a_quick_4xx(big_app):
    client, admin = big_app
    huge = "x" * HUGE
    for method, template in PATHS:
        _quick_4xx(client, method, template.format(huge), admin)


def test_a_megabyte_body_under_the_default_limit_is_a_413(client, admin):
    r = client.post("/v1/decide", json={"visitor_id": "x" * HUGE, "channel": "web"},
                    headers=admin)
    assert r.status_code == 413 and "body" in r.json["error"]["fields"]


def test_an_over_long_url_is_a_json_414(client, admin):
    r = client.get("/v1/visitors/" + "x" * 9000, headers=admin)
    assert r.status_code == 414 and r.json["error"]["code"] == "uri_too_long"
