"""Malformed requests across endpoints: each a 4xx with the JSON envelope naming the field."""

from __future__ import annotations

import json

import pytest

from tests.support import experiment_body

DEEP = "[" * 5000 + "]" * 5000


def _exp(**overrides):
    return experiment_body(key="bad", **overrides)


def _variants(*keys):
    return [{"key": k} for k in keys]


# (name, method, path, body (dict -> JSON, str/bytes -> raw), content type, status, field)
CASES = [
    ("decide not json", "POST", "/v1/decide", "{nope", "application/json", 400, "body"),
    ("decide not utf8", "POST", "/v1/decide", b"\xff\xfe{}", "application/json", 400, "body"),
    ("decide wrong content type", "POST", "/v1/decide", "visitor_id=v", "text/plain", 415,
     "content-type"),
    ("decide array body", "POST", "/v1/decide", [1, 2], None, 400, "body"),
    ("decide deep nesting", "POST", "/v1/decide", DEEP, "application/json", 400, "body"),
    ("decide missing visitor", "POST", "/v1/decide", {"channel": "web"}, None, 400, "visitor_id"),
    ("decide visitor not string", "POST", "/v1/decide", {"visitor_id": 5, "channel": "web"},
     None, 400, "visitor_id"),
    ("decide empty visitor", "POST", "/v1/decide", {"visitor_id": "", "channel": "web"}, None,
     400, "visitor_id"),
    ("decide control char visitor", "POST", "/v1/decide",
     {"visitor_id": "a\nb", "channel": "web"}, None, 400, "visitor_id"),
    ("decide missing channel", "POST", "/v1/decide", {"visitor_id": "v"}, None, 400, "channel"),
    ("decide bad channel", "POST", "/v1/decide", {"visitor_id": "v", "channel": "Web Site"},
     None, 400, "channel"),
    ("decide experiments not list", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "experiments": "hero"}, None, 400, "experiments"),
    ("decide unknown experiment", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "experiments": ["ghost"]}, None, 404,
     "experiments.0"),
    ("decide attributes not object", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "attributes": [1]}, None, 400, "attributes"),
    ("decide attribute nested object", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "attributes": {"a": {"b": 1}}}, None, 400,
     "attributes.a"),
    ("decide unknown field", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "colour": "red"}, None, 400, "colour"),
    ("decide NaN literal", "POST", "/v1/decide",
     '{"visitor_id": "v", "channel": "web", "attributes": {"x": NaN}}', "application/json",
     400, "body"),
    ("decide huge integer", "POST", "/v1/decide",
     '{"visitor_id": "v", "channel": "web", "attributes": {"x": ' + "9" * 5000 + "}}",
     "application/json", 400, "body"),
    ("decide overflowing float", "POST", "/v1/decide",
     '{"visitor_id": "v", "channel": "web", "attributes": {"x": 1e999}}', "application/json",
     400, "attributes.x"),
    ("decide oversize body", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "attributes": {"x": "y" * 300_000}}, None, 413, "body"),
    ("track missing event id", "POST", "/v1/track", {"visitor_id": "v", "metric": "buy"}, None,
     400, "event_id"),
    ("track value is string", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "buy", "event_id": "e", "value": "12"}, None, 400, "value"),
    ("track value is boolean", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "buy", "event_id": "e", "value": True}, None, 400, "value"),
    ("track value too large", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "buy", "event_id": "e", "value": 1e300}, None, 400, "value"),
    ("track bad timestamp", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "buy", "event_id": "e", "timestamp": "yesterday"}, None, 400,
     "timestamp"),
    ("track naive timestamp", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "buy", "event_id": "e", "timestamp": "2026-01-01T00:00:00"},
     None, 400, "timestamp"),
    ("track bad metric name", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "Buy Now", "event_id": "e"}, None, 400, "metric"),
    ("track empty batch", "POST", "/v1/track", {"events": []}, None, 400, "events"),
    ("track batch every item bad", "POST", "/v1/track",
     {"events": [{"visitor_id": "v", "metric": "Buy", "event_id": "e"}, {"visitor_id": "v"}]},
     None, 400, "events.1.metric"),
    ("track iso timestamp year 1", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "buy", "event_id": "e",
      "timestamp": "0001-01-01T00:00:00+00:00"}, None, 400, "timestamp"),
    ("track iso timestamp year 9999", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "buy", "event_id": "e",
      "timestamp": "9999-12-31T23:59:59+00:00"}, None, 400, "timestamp"),
    ("track timestamp and age", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "buy", "event_id": "e", "timestamp": 1_700_000_000,
      "age": 3}, None, 400, "age"),
    ("track negative age", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "buy", "event_id": "e", "age": -1}, None, 400, "age"),
    ("track negative purchase", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "purchase", "event_id": "e", "value": -5}, None, 400,
     "value"),
    ("decide expose not boolean", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "expose": "no"}, None, 400, "expose"),
    ("decide expose as a number", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "expose": 0}, None, 400, "expose"),
    ("decide latin-1 body", "POST", "/v1/decide", '{"visitor_id": "v", "channel": "web"}',
     "application/json; charset=latin-1", 415, "content-type"),
    ("decide bad id type", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "id_type": "Customer ID"}, None, 400, "id_type"),
    ("expose no decisions", "POST", "/v1/expose", {"visitor_id": "v", "decisions": []}, None,
     400, "decisions"),
    ("expose bad decision id", "POST", "/v1/expose",
     {"visitor_id": "v", "decisions": [{"experiment": "hero", "decision_id": "x"}]}, None, 400,
     "decisions.0.decision_id"),
    ("identify bad signature", "POST", "/v1/identify",
     {"visitor_id": "v", "ids": {"customer_id": "1"}, "signature": "zz"}, None, 400,
     "signature"),
    ("track batch too large", "POST", "/v1/track",
     {"events": [{"visitor_id": "v", "metric": "buy", "event_id": f"e{i}"} for i in range(501)]},
     None, 400, "events"),
    ("create unknown field", "POST", "/v1/experiments", _exp(colour="red"), None, 400, "colour"),
    ("create server field", "POST", "/v1/experiments", _exp(status="running"), None, 400,
     "status"),
    ("create bad key", "POST", "/v1/experiments", experiment_body(key="Bad Key"), None, 400,
     "key"),
    ("create one variant", "POST", "/v1/experiments", _exp(variants=_variants("control")), None,
     400, "variants"),
    ("create 21 variants", "POST", "/v1/experiments",
     _exp(variants=_variants("control", *[f"v{i}" for i in range(20)])), None, 400, "variants"),
    ("create duplicate variants", "POST", "/v1/experiments",
     _exp(variants=_variants("control", "b", "b")), None, 400, "variants"),
    ("create control not a variant", "POST", "/v1/experiments", _exp(control="zzz"), None, 400,
     "control"),
    ("create no control", "POST", "/v1/experiments",
     {**{k: v for k, v in _exp(variants=_variants("a", "b")).items() if k != "control"}},
     None, 400, "control"),
    ("create zero weight", "POST", "/v1/experiments",
     _exp(variants=[{"key": "control", "weight": 0}, {"key": "b"}]), None, 400,
     "variants.0.weight"),
    ("create payload too big", "POST", "/v1/experiments",
     _exp(variants=[{"key": "control", "payload": {"x": "y" * 17000}}, {"key": "b"}]), None,
     400, "variants.0.payload"),
    ("create bad mode", "POST", "/v1/experiments", _exp(mode="mab"), None, 400, "mode"),
    ("create bad metric kind", "POST", "/v1/experiments",
     _exp(metric={"name": "buy", "kind": "clicks"}), None, 400, "metric.kind"),
    ("create coverage above 1", "POST", "/v1/experiments", _exp(coverage=1.5), None, 400,
     "coverage"),
    ("create negative holdout", "POST", "/v1/experiments", _exp(holdout=-0.1), None, 400,
     "holdout"),
    ("create floor too big", "POST", "/v1/experiments",
     _exp(variants=_variants("control", "b", "c"), bandit={"floor": 0.4}), None, 400,
     "bandit.floor"),
    ("create bad prior", "POST", "/v1/experiments", _exp(bandit={"prior": {"alpha": 0}}), None,
     400, "bandit.prior.alpha"),
    ("create bad rule op", "POST", "/v1/experiments",
     _exp(audience={"rules": [{"fact": "attributes.a", "op": "like", "value": 1}]}), None, 400,
     "audience.rules.0.op"),
    ("create bad nested rule", "POST", "/v1/experiments",
     _exp(audience={"rules": [{"any": [{"fact": "attributes.a", "op": "gt", "value": "x"}]}]}),
     None, 400, "audience.rules.0.any.0.value"),
    ("create bad persona", "POST", "/v1/experiments", _exp(audience={"personas": ["New!"]}),
     None, 400, "audience.personas.0"),
    ("create window zero", "POST", "/v1/experiments", _exp(attribution_window_hours=0), None,
     400, "attribution_window_hours"),
    ("stop unknown field", "POST", "/v1/experiments/hero/stop", {"champion": "b"}, None, 400,
     "champion"),
    ("get unknown experiment", "GET", "/v1/experiments/ghost", None, None, 404, "key"),
    ("unknown route", "GET", "/v1/nothing", None, None, 404, None),
    ("wrong method", "DELETE", "/v1/decide", None, None, 405, None),
    ("decide lone surrogate visitor", "POST", "/v1/decide",
     '{"visitor_id": "a\\ud800", "channel": "web"}', "application/json", 400, "body"),
    ("decide lone surrogate attribute", "POST", "/v1/decide",
     '{"visitor_id": "v", "channel": "web", "attributes": {"n": "\\udfff"}}',
     "application/json", 400, "body"),
    ("create lone surrogate name", "POST", "/v1/experiments",
     json.dumps(_exp(name="x")).replace('"x"', '"\\ud83d"'), "application/json", 400, "body"),
    ("track trailing newline event id", "POST", "/v1/track",
     {"visitor_id": "v", "metric": "buy", "event_id": "e1\n"}, None, 400, "event_id"),
    ("decide trailing newline channel", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web\n"}, None, 400, "channel"),
    ("create trailing newline key", "POST", "/v1/experiments", experiment_body(key="nl\n"), None,
     400, "key"),
    ("create trailing newline fact", "POST", "/v1/experiments",
     _exp(audience={"rules": [{"fact": "channel\n", "op": "eq", "value": "web"}]}), None, 400,
     "audience.rules.0.fact"),
    ("create huge weight", "POST", "/v1/experiments",
     _exp(variants=[{"key": "control", "weight": 1e308}, {"key": "b", "weight": 1e308}]), None,
     400, "variants.0.weight"),
    ("create wide unicode payload", "POST", "/v1/experiments",
     _exp(variants=[{"key": "control", "payload": "\u6f22" * 6000}, {"key": "b"}]), None, 400,
     "variants.0.payload"),
    ("decide attribute name unicode", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "attributes": {"\u540d\u524d": 1}}, None, 400,
     "attributes.\u540d\u524d"),
    ("decide attribute huge integer", "POST", "/v1/decide",
     '{"visitor_id": "v", "channel": "web", "attributes": {"n": ' + "7" * 400 + "}}",
     "application/json", 400, "attributes.n"),
    ("track timestamp huge integer", "POST", "/v1/track",
     '{"visitor_id": "v", "metric": "buy", "event_id": "e", "timestamp": ' + "9" * 400 + "}",
     "application/json", 400, "timestamp"),
    ("create rule huge integer", "POST", "/v1/experiments",
     json.dumps(_exp(audience={"rules": [{"fact": "attributes.a", "op": "gt", "value": 1}]}))
     .replace('"value": 1}', '"value": ' + "8" * 400 + "}"), "application/json", 400,
     "audience.rules.0.value"),
    ("personas rule huge integer", "PUT", "/v1/personas",
     '[{"name": "big", "when": {"fact": "lifetime_value", "op": "gt", "value": '
     + "8" * 400 + "}}]", "application/json", 400, "personas.0.when.value"),
    ("identify raw email", "POST", "/v1/identify",
     {"visitor_id": "v", "ids": {"email": "a@b.co"}}, None, 400, "ids.email"),
    ("decide attribute list too long", "POST", "/v1/decide",
     {"visitor_id": "v", "channel": "web", "attributes": {"tags": ["x" * 1000] * 5}}, None, 400,
     "attributes.tags"),
    ("track oversize batch body", "POST", "/v1/track",
     {"events": [{"visitor_id": "v" * 250, "metric": "buy", "event_id": "e" * 120}] * 900},
     None, 413, "body"),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "ctype", "status", "field"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_request(client, admin, name, method, path, body, ctype, status, field):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    kwargs = {"headers": admin}
    if isinstance(body, str | bytes):
        kwargs["data"] = body
        kwargs["content_type"] = ctype
    elif body is not None:
        kwargs["data"] = json.dumps(body)
        kwargs["content_type"] = ctype or "application/json"
    r = client.open(path, method=method, **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)[:500]
    assert r.mimetype == "application/json"
    error = r.json["error"]
    assert set(error) == {"code", "message", "fields"}
    assert isinstance(error["message"], str) and error["message"]
    if field is not None:
        assert field in error["fields"], error

