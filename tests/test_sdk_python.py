"""Python SDK: unit tests, end-to-end tests, the README and e-mail examples.

Unit tests use an injected transport; end-to-end tests run against a real gunicorn server
on real Redis.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests
from centric_sdk import (
    AuthenticationError,
    CentricError,
    Client,
    ConfigurationError,
    InvalidRequest,
    MomentPage,
    Response,
    TransportError,
    UrllibTransport,
    sign_customer_id,
    sign_email_sha256,
)

from server import create_app
from server.settings import Settings
from tests.support import ROOT, experiment_body, free_port, gunicorn_server


class Recorder:
    """A scripted transport: answers from a list (the last one repeats), records what was sent.

    An answer is an exception to raise, or (status, JSON payload or raw bytes[, headers]).
    """

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent = []

    def send(self, method, url, headers, body, timeout):
        self.sent.append({"method": method, "url": url, "headers": headers,
                          "body": None if body is None else json.loads(body),
                          "timeout": timeout})
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        status, payload, *rest = answer
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return Response(status, raw, rest[0] if rest else {})

    def paths(self):
        """The URL paths called, in order."""
        return [call["url"].removeprefix("http://centric.test") for call in self.sent]


OK_TRACK = (200, {"accepted": 1, "duplicates": 0, "attributed": []})
OK_EXPOSE = (200, {"exposed": 1, "duplicates": 0, "ignored": 0})
DECIDED = (200, {"visitor_id": "v", "persona": "default", "decisions": [
    {"experiment": "hero", "variant": "b", "payload": {"h": "Hi"}, "reason": "assigned",
     "decision_id": "d1", "propensity": 0.5}]})


def quick(transport, **options):
    """A client on a scripted transport that retries without real waiting."""
    options = {"backoff": 0.001, "flush_interval": 0.01, **options}
    return Client("http://centric.test", "cbk_test", transport=transport, **options)


PAGE = (200, {"moment": "second", "count": 7, "has_more": True, "next_cursor": "12",
              "members": [{"customer_id": "c-1", "entry": 1, "decision": None}]})


def test_moment_members_gets_one_page_and_reads_it():
    t = Recorder(PAGE)
    c = Client("http://centric.test", "cbk_1", transport=t, timeout=0.2)
    page = c.moment_members("second purchase", cursor="5", limit=10)
    assert t.sent[0]["method"] == "GET" and t.sent[0]["body"] is None
    assert t.sent[0]["url"] == ("http://centric.test/v1/moments/second%20purchase/members"
                                "?cursor=5&limit=10")
    assert page == MomentPage("second", ({"customer_id": "c-1", "entry": 1, "decision": None},),
                              "12", True, 7)


@pytest.mark.parametrize(("answer", "error"), [
    ((403, {"error": {"code": "forbidden", "message": "no", "fields": {}}}),
     AuthenticationError),
    ((503, {}, {"Retry-After": "1"}), TransportError),
    ((200, {"moment": "second"}), TransportError),  # not a page
    (ConnectionError("refused"), TransportError),
])
def test_moment_members_raises_instead_of_falling_back(answer, error):
    c = Client("http://centric.test", "cbk_1", transport=Recorder(answer))
    with pytest.raises(error):
        c.moment_members("second")


def test_decide_sends_one_request_and_reads_typed_decisions():
    t = Recorder((200, {"visitor_id": "v", "persona": "vip", "decisions": [
        {"experiment": "hero", "variant": "b", "payload": {"h": "Hi"}, "reason": "assigned",
         "decision_id": "d1", "propensity": 0.5}]}))
    c = Client("http://centric.test/", "csk_1", transport=t, timeout=0.2)
    d = c.decide("v", channel="app", experiments=["hero", "other"], attributes={"plan": "pro"})
    assert t.sent[0]["url"] == "http://centric.test/v1/decide"
    assert t.sent[0]["headers"]["Authorization"] == "Bearer csk_1"
    assert t.sent[0]["body"] == {"visitor_id": "v", "channel": "app",
                                 "experiments": ["hero", "other"], "attributes": {"plan": "pro"}}
    assert t.sent[0]["timeout"] == 0.2
    assert (d.variant("hero"), d.payload("hero"), d.reason("hero")) == ("b", {"h": "Hi"},
                                                                       "assigned")
    assert d.persona == "vip" and d.fallback is False
    assert d.variant("other") == "control" and d.reason("other") == "not_targeted"


FAILURES = [TimeoutError("slow"), ConnectionRefusedError("down"), (503, {}),
            (502, {"not": "json"}), (500, b"<html>oops</html>"), (429, {}),
            (200, b"not json"), (200, {"decisions": [{"experiment": "hero"}]}),
            (302, {}, {"Location": "http://elsewhere.test/"}),
            (400, {"error": {"code": "invalid", "message": "bad", "fields": {"channel": "x"}}}),
            (401, {"error": {"code": "unauthorized"}}),
            (403, {"error": {"code": "forbidden", "fields": {"id_type": "not for sdk keys"}}}),
            (404, b"<html>not found</html>")]


@pytest.mark.parametrize("failure", FAILURES, ids=repr)
def test_decide_falls_back_logs_a_warning_and_never_raises(failure, caplog):
    c = Client("http://centric.test", "k", transport=Recorder(failure),
               defaults={"hero": "classic"})
    with caplog.at_level("WARNING", logger="centric_sdk"):
        d = c.decide("v", experiments=["hero", "banner"])
    assert d.fallback is True
    assert [(x.experiment, x.variant, x.reason) for x in d.items] == [
        ("hero", "classic", "fallback"), ("banner", "control", "fallback")]
    assert d.variant("hero") == "classic" and d.payload("hero", {"x": 1}) == {"x": 1}
    assert d.reason("hero") == "fallback"
    assert [r.levelname for r in caplog.records if r.name == "centric_sdk"] == ["WARNING"]


@pytest.mark.parametrize(("failure", "error"), [
    (TimeoutError("slow"), TransportError), ((503, {}), TransportError),
    ((429, {}), TransportError), ((302, {}), TransportError), ((200, b"[]"), TransportError),
    ((400, {"error": {"code": "invalid", "fields": {"channel": "x"}}}), InvalidRequest),
    ((404, b"<html>not found</html>"), InvalidRequest),
    ((401, {"error": {}}), AuthenticationError), ((403, {"error": {}}), AuthenticationError)],
    ids=repr)
def test_decide_with_raise_errors_raises_from_the_documented_tree(failure, error):
    strict = Client("http://centric.test", "k", transport=Recorder(failure), raise_errors=True)
    with pytest.raises(error) as info:
        strict.decide("v", experiments=["hero"])
    if isinstance(info.value, InvalidRequest):
        assert not isinstance(info.value, TransportError)
        assert info.value.status == failure[0]


def test_programming_errors_raise_from_a_documented_tree():
    with pytest.raises(ConfigurationError):
        Client("centric.test", "k")
    with pytest.raises(ConfigurationError):
        Client("http://centric.test", "")
    c = Client("http://centric.test", "k", transport=Recorder(DECIDED))
    with pytest.raises(ConfigurationError):
        c.decide("")
    with pytest.raises(ConfigurationError):
        c.decide("v", id_type="Customer ID")
    with pytest.raises(ConfigurationError):
        c.decide("v", attributes={"when": object()})
    with pytest.raises(ConfigurationError):
        c.track("v", "purchase", float("nan"))
    with pytest.raises(ConfigurationError):
        c.expose("v", [("hero", "")])
    assert c.transport.sent == []  # nothing bad went out
    strict = Client("http://centric.test", "k", transport=Recorder(
        (400, {"error": {"code": "invalid", "message": "bad", "fields": {"channel": "x"}}})),
        raise_errors=True)
    with pytest.raises(InvalidRequest) as info:
        strict.decide("v", channel="Web Site")
    assert info.value.status == 400 and info.value.code == "invalid"
    assert info.value.fields == {"channel": "x"}
    assert issubclass(AuthenticationError, InvalidRequest)
    assert issubclass(ConfigurationError, CentricError) and issubclass(TransportError, CentricError)
    assert not issubclass(TransportError, InvalidRequest)


def test_variant_default_wins_only_when_the_server_gave_no_decision():
    t = Recorder((200, {"visitor_id": "v", "persona": "default", "decisions": [
        {"experiment": "hero", "variant": "b", "payload": {"h": "Hi"}, "reason": "assigned",
         "decision_id": "d1", "propensity": 0.5},
        {"experiment": "promo", "variant": "control", "payload": None,
         "reason": "not_targeted", "decision_id": "d2", "propensity": None},
        # the server's own fallback (its store failed): the experiment's control
        {"experiment": "banner", "variant": "plain", "payload": {"b": 0}, "reason": "fallback",
         "decision_id": "d3", "propensity": None}]}))
    c = Client("http://centric.test", "k", transport=t,
               defaults={"hero": "classic", "promo": "classic", "gone": "classic"})
    d = c.decide("v", experiments=["hero", "promo", "banner", "gone", "other"])
    # a real decision beats both the call's default and the configured one
    assert d.variant("hero", "mine") == "b" and d.variant("hero") == "b"
    assert d.variant("promo", "mine") == "control"
    # no decision for the experiment: the call's default, else the configured one, else control
    assert d.variant("gone", "mine") == "mine" and d.variant("gone") == "classic"
    assert d.variant("other", "mine") == "mine" and d.variant("other") == "control"
    # the server fell back: the call's default, else the server's control (as in the JS SDK)
    c.defaults["banner"] = "classic"
    d = c.decide("v", experiments=["hero", "promo", "banner", "gone", "other"])
    assert d.variant("banner", "mine") == "mine" and d.variant("banner") == "plain"
    assert d.payload("banner", {"b": 1}) == {"b": 0}  # the control's payload
    assert d.payload("hero", {"h": "default"}) == {"h": "Hi"}
    # the SDK fell back: the call's default beats the configured one
    down = Client("http://centric.test", "k", transport=Recorder(TimeoutError()),
                  defaults={"hero": "classic"})
    f = down.decide("v", experiments=["hero"], defaults={"banner": "wide"})
    assert f.variant("hero", "mine") == "mine" and f.variant("hero") == "classic"
    assert f.variant("banner") == "wide" and f.variant("banner", "narrow") == "narrow"
    assert f.variant("other") == "control"


def test_id_type_expose_and_signature_go_in_the_body_only_when_given():
    t = Recorder(DECIDED)
    c = quick(t)
    c.decide("v", experiments=["hero"])
    c.decide("c-42", experiments=["hero"], id_type="customer_id", expose=False)
    assert "id_type" not in t.sent[0]["body"] and "expose" not in t.sent[0]["body"]
    assert t.sent[1]["body"]["id_type"] == "customer_id"
    assert t.sent[1]["body"]["expose"] is False
    t.answers = [(200, {"visitor_id": "v-canonical"})]
    assert c.identify("v", {"customer_id": "c-42"}, signature="ab12") == "v-canonical"
    assert c.identify("d-1", {"customer_id": "c-42"}, id_type="device_id") == "v-canonical"
    assert t.sent[2]["body"] == {"visitor_id": "v", "ids": {"customer_id": "c-42"},
                                 "signature": "ab12"}
    assert t.sent[3]["body"] == {"visitor_id": "d-1", "ids": {"customer_id": "c-42"},
                                 "id_type": "device_id"}
    t.answers = [OK_TRACK]
    c.track("c-42", "purchase", 10, event_id="o-1", id_type="customer_id")
    c.track("v", "purchase", 10, event_id="o-2")
    assert c.flush(timeout=5)
    c.close()
    events = {e["event_id"]: e for call in t.sent[4:] for e in call["body"]["events"]}
    assert events["o-1"]["id_type"] == "customer_id" and "id_type" not in events["o-2"]
    assert t.sent[0]["headers"]["Authorization"] == "Bearer cbk_test"


def test_sign_customer_id_is_the_hmac_the_server_checks():
    from server import identify_secret

    # RFC 4231-style known answer for HMAC-SHA256
    assert sign_customer_id("key", "The quick brown fox jumps over the lazy dog") == (
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8")
    assert sign_customer_id("s3cret", "c-42") == identify_secret.sign("s3cret", "c-42")
    assert identify_secret.verify("s3cret", "c-42", sign_customer_id("s3cret", "c-42"))
    with pytest.raises(ConfigurationError):
        sign_customer_id("", "c-42")
    with pytest.raises(ConfigurationError):
        sign_customer_id("s3cret", "")
    # An e-mail hash is signed with its type, a bound signature with visitor id and expiry.
    email = "a" * 64
    assert identify_secret.verify("s3cret", email, sign_email_sha256("s3cret", email),
                                  "email_sha256")
    assert not identify_secret.verify("s3cret", email, sign_customer_id("s3cret", email),
                                      "email_sha256")
    bound = sign_customer_id("s3cret", "c-42", visitor_id="v-1", expires=1_800_000_000)
    assert identify_secret.verify("s3cret", "c-42", bound, "customer_id", "v-1", 1_800_000_000)
    assert not identify_secret.verify("s3cret", "c-42", bound, "customer_id", "v-2",
                                      1_800_000_000)
    with pytest.raises(ConfigurationError):
        sign_customer_id("s3cret", "c-42", visitor_id="v-1")


def test_identify_raises_on_4xx_but_not_on_transport_failures():
    c = Client("http://centric.test", "csk_1", transport=Recorder(
        (403, {"error": {"code": "forbidden", "message": "sign it",
                         "fields": {"signature": "required to link a customer_id"}}})))
    with pytest.raises(AuthenticationError) as info:
        c.identify("v", {"customer_id": "c-42"})
    assert info.value.status == 403 and "signature" in info.value.fields
    bad = Client("http://centric.test", "k", transport=Recorder(
        (400, {"error": {"code": "invalid", "fields": {"ids.device_id": "too long"}}})))
    with pytest.raises(InvalidRequest):
        bad.identify("v", {"device_id": "x" * 1000})
    for failure in (TimeoutError(), (503, {}, {"Retry-After": "1"}), (200, {})):
        down = Client("http://centric.test", "k", transport=Recorder(failure))
        assert down.identify("v", {"customer_id": "c-42"}) == "v"
        strict = Client("http://centric.test", "k", transport=Recorder(failure),
                        raise_errors=True)
        with pytest.raises(TransportError):
            strict.identify("v", {"customer_id": "c-42"})


def test_track_batches_in_the_background():
    t = Recorder(OK_TRACK)
    with Client("http://centric.test", "k", transport=t, batch_size=100,
                flush_interval=0.05) as c:
        ids = [c.track("v", "purchase", 1.0) for _ in range(250)]
        assert c.flush(timeout=5)
    sent = [e["event_id"] for call in t.sent for e in call["body"]["events"]]
    assert sorted(sent) == sorted(ids) and len(set(ids)) == 250
    assert max(len(call["body"]["events"]) for call in t.sent) <= 100
    assert all(call["url"].endswith("/v1/track") for call in t.sent)


def test_track_retries_with_backoff_then_succeeds_once():
    t = Recorder(ConnectionResetError("reset"), (503, {}), OK_TRACK)
    with Client("http://centric.test", "k", transport=t, backoff=0.01,
                flush_interval=0.01) as c:
        event = c.track("v", "purchase", event_id="order-1")
        assert c.flush(timeout=5)
    assert [call["body"]["events"][0]["event_id"] for call in t.sent] == [event] * 3
    assert c.dropped == 0


def test_track_gives_up_after_max_retries_and_drops_malformed_events():
    c = Client("http://centric.test", "k", transport=Recorder(TimeoutError()),
               max_retries=2, backoff=0.001, flush_interval=0.01)
    c.track("v", "purchase")
    assert c.flush(timeout=5)
    assert c.dropped == 1
    c.close()
    bad = Client("http://centric.test", "k", transport=Recorder((400, {"error": {}})),
                 flush_interval=0.01)
    bad.track("v", "Bad Metric")
    assert bad.flush(timeout=5) and bad.dropped == 1
    bad.close()


def test_a_full_queue_drops_instead_of_blocking():
    gate = threading.Event()

    class Slow(Recorder):
        def send(self, *args):
            gate.wait(5)
            return super().send(*args)

    c = Client("http://centric.test", "k", transport=Slow(OK_TRACK), queue_size=5,
               batch_size=1, flush_interval=0.01)
    started = time.monotonic()
    for _ in range(50):
        c.track("v", "purchase")
    assert time.monotonic() - started < 1.0
    assert c.dropped >= 40
    gate.set()
    c.close()


def _events(transport):
    return [e for call in transport.sent if call["url"].endswith("/v1/track")
            for e in call["body"]["events"]]


def test_retries_wait_at_least_the_servers_retry_after_on_429_and_503():
    t = Recorder((429, {}, {"Retry-After": "7"}), (503, {}, {"retry-after": "3"}),
                 (503, {}), OK_TRACK)
    c = quick(t, backoff=0.01)
    waits = []
    c._sleep = waits.append  # record the pause instead of taking it
    c.track("v", "purchase", event_id="order-1")
    assert c.flush(timeout=5)
    c.close()
    # Retry-After beats the shorter backoff; without one the exponential backoff applies
    assert waits == [7.0, 3.0, 0.04]
    assert [e["event_id"] for e in _events(t)] == ["order-1"] * 4 and c.dropped == 0


def test_retry_after_is_capped_and_understood_as_seconds_or_an_http_date():
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    t = Recorder((503, {}, {"Retry-After": "86400"}), (429, {}, {"Retry-After": future}),
                 (503, {}, {"Retry-After": "soon"}), OK_TRACK)
    c = quick(t, backoff=0.01, max_retry_after=60)
    waits = []
    c._sleep = waits.append
    c.track("v", "purchase")
    assert c.flush(timeout=5)
    c.close()
    assert waits[0] == 60  # a day is capped
    assert 20 < waits[1] <= 31  # an HTTP date counts from now
    assert waits[2] == 0.04  # an unreadable value falls back to the backoff
    strict = Client("http://centric.test", "k", raise_errors=True,
                    transport=Recorder((503, {}, {"Retry-After": "5"})))
    with pytest.raises(TransportError) as info:
        strict.decide("v")
    assert (info.value.status, info.value.retry_after) == (503, 5.0)


def test_closing_gives_up_on_a_server_that_keeps_refusing_instead_of_hammering_it():
    t = Recorder((503, {}, {"Retry-After": "60"}))
    c = quick(t, max_retries=8)
    c.track("v", "purchase")
    c.close(timeout=0.2)  # the worker is waiting out Retry-After when close() gives up
    assert len(t.sent) == 2  # the first try and one last one, not eight quick retries
    assert c.dropped == 1 and c.flush(timeout=0)
    assert c._worker is not None and not c._worker.is_alive()


class RejectsBadMetrics(Recorder):
    """Answers a batch like the server: invalid events rejected by index, the rest accepted."""

    def send(self, method, url, headers, body, timeout):
        events = json.loads(body)["events"]
        rejected = [{"index": i, "fields": {"metric": "unknown metric"}}
                    for i, e in enumerate(events) if e["metric"] == "Bad Metric"]
        self.answers = [(200, {"accepted": len(events) - len(rejected), "duplicates": 0,
                               "attributed": [], "rejected": rejected})]
        return super().send(method, url, headers, body, timeout)


def test_a_partially_rejected_batch_drops_only_the_rejected_events(caplog):
    t = RejectsBadMetrics()
    c = quick(t)
    for event in ("e-0", "e-1", "e-2"):
        c.track("v", "purchase" if event != "e-1" else "Bad Metric", event_id=event)
    assert c.flush(timeout=5)
    c.close()
    # each event went out once: the valid ones are done, the rejected one is dropped
    assert sorted(e["event_id"] for e in _events(t)) == ["e-0", "e-1", "e-2"]
    assert c.dropped == 1
    assert any("e-1" in r.getMessage() and "unknown metric" in r.getMessage()
               for r in caplog.records if r.levelname == "ERROR")


@pytest.mark.parametrize("refusal", [(400, {"error": {"fields": {"events.0.metric": "bad"}}}),
                                     (401, {"error": {"code": "unauthorized"}}),
                                     (403, {"error": {"code": "forbidden"}}),
                                     (413, b"too large")], ids=repr)
def test_track_events_refused_with_4xx_are_dropped_and_counted_not_retried(refusal):
    t = Recorder(refusal)
    c = quick(t)
    c.track("v", "purchase", event_id="e-1")
    c.track("v", "purchase", event_id="e-2")
    assert c.flush(timeout=5)
    c.close()
    assert c.dropped == 2 and sorted(e["event_id"] for e in _events(t)) == ["e-1", "e-2"]


def test_track_sends_the_events_age_at_send_time_unless_given_a_timestamp():
    now = [1000.0]
    t = Recorder((503, {}), (503, {}), OK_TRACK)
    c = quick(t)
    c._monotonic = lambda: now[0]

    def wait(seconds):
        now[0] += 30.5  # the retry goes out 30.5 s later by the monotonic clock

    c._sleep = wait
    c.track("v", "purchase", 5, event_id="aged")
    assert c.flush(timeout=5)
    c.track("v", "purchase", 5, event_id="dated", timestamp=1_790_000_000.5)
    assert c.flush(timeout=5)
    c.close()
    aged = [e for e in _events(t) if e["event_id"] == "aged"]
    assert [e["age"] for e in aged] == [0.0, 30.5, 61.0]
    assert all("timestamp" not in e for e in aged)
    dated = [e for e in _events(t) if e["event_id"] == "dated"]
    assert dated == [{"visitor_id": "v", "metric": "purchase", "event_id": "dated",
                      "timestamp": 1_790_000_000.5, "value": 5.0}]


def test_expose_confirms_only_decisions_that_were_shown_in_the_background():
    t = Recorder((200, {"visitor_id": "v", "persona": "default", "decisions": [
        {"experiment": e, "variant": "b", "payload": None, "reason": reason,
         "decision_id": f"d-{e}", "propensity": 0.5}
        for e, reason in [("a", "assigned"), ("b", "sticky"), ("c", "holdout"),
                          ("d", "winner"), ("e", "not_targeted"), ("f", "not_running"),
                          ("g", "fallback")]]}), OK_EXPOSE)
    c = quick(t)
    decisions = c.decide("c-42", experiments=list("abcdefg"), id_type="customer_id",
                         expose=False)
    assert c.expose("c-42", decisions, id_type="customer_id") == 3
    assert c.expose("c-42", [("x", "d-x"), ("x", "d-x")] + [(f"y{i}", f"d{i}")
                                                          for i in range(60)]) == 61
    assert c.expose("c-42", Client("http://centric.test", "k", transport=Recorder(
        TimeoutError())).decide("c-42", experiments=["a"])) == 0  # a fallback needs none
    assert c.flush(timeout=5)
    c.close()
    exposes = [call["body"] for call in t.sent if call["url"].endswith("/v1/expose")]
    assert exposes[0] == {"visitor_id": "c-42", "id_type": "customer_id", "decisions": [
        {"experiment": "a", "decision_id": "d-a"}, {"experiment": "b", "decision_id": "d-b"},
        {"experiment": "c", "decision_id": "d-c"}]}
    assert [len(b["decisions"]) for b in exposes[1:]] == [50, 11]  # 1-50 per call
    assert all("id_type" not in b for b in exposes[1:])
    assert c.dropped == 0


def test_expose_retries_like_track_and_drops_what_the_server_refuses():
    t = Recorder((429, {}, {"Retry-After": "2"}), OK_EXPOSE,
                 (400, {"error": {"fields": {"decisions.0.decision_id": "bad"}}}))
    c = quick(t)
    waits = []
    c._sleep = waits.append
    c.expose("v", [("hero", "d1")])
    assert c.flush(timeout=5)
    assert waits == [2.0] and c.dropped == 0
    c.expose("v", [("hero", "nope")])
    assert c.flush(timeout=5)
    c.close()
    assert c.dropped == 1 and t.paths() == ["/v1/expose"] * 3


@pytest.fixture
def email_example():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import email_subject_lines
    finally:
        sys.path.pop(0)
    return email_subject_lines


def test_email_example_decides_and_tracks_by_customer_id(email_example):
    t = Recorder((200, {"visitor_id": "cust-1", "persona": "default", "decisions": [
        {"experiment": "newsletter-subject", "variant": "benefit", "reason": "assigned",
         "payload": {"subject": "Free returns, always"}, "decision_id": "d1",
         "propensity": 0.5}]}), OK_TRACK)
    c = quick(t)
    assert email_example.send_campaign(c, ["cust-1"]) == {"cust-1": "Free returns, always"}
    email_example.on_open(c, "cust-1", "m-1")
    email_example.on_purchase(c, "cust-1", "o-1", 49.9)
    assert c.flush(timeout=5)
    c.close()
    assert t.sent[0]["body"] == {"visitor_id": "cust-1", "channel": "email",
                                 "id_type": "customer_id",
                                 "experiments": ["newsletter-subject"]}
    assert [(e["metric"], e["event_id"], e["id_type"]) for e in _events(t)] == [
        ("email_open", "open-m-1", "customer_id"), ("purchase", "order-o-1", "customer_id")]


def test_the_sdk_imports_nothing_from_the_server_and_builds_on_its_own(tmp_path):
    code = ("import sys, centric_sdk; bad = {'server', 'bandits', 'experiments', 'flask', "
            "'redis', 'numpy'} & {m.split('.')[0] for m in sys.modules}; print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout.strip()
    assert out == "[]"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT / "sdk")], check=True, capture_output=True)
    assert list(tmp_path.glob("centric_sdk-*.whl"))


# -- end to end against a real server -------------------------------------------------------


@pytest.fixture(scope="module")
def live(redis_url):
    prefix = "sdk" + uuid.uuid4().hex[:8]
    secret = "test-identify-secret-" + uuid.uuid4().hex
    app = create_app(Settings(redis_url=redis_url, key_prefix=prefix, identify_secret=secret))
    services = app.extensions["centric"]
    admin = {"Authorization": "Bearer " + services.api_keys.create("admin")}
    keys = {role + "_key": services.api_keys.create(role) for role in ("sdk", "server")}
    with gunicorn_server({"CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix,
                          "CENTRIC_IDENTIFY_SECRET": secret}) as base:
        for key in ("homepage-hero", "newsletter-subject"):
            body = experiment_body(key=key, variants=[
                {"key": "control", "payload": {"headline": "Welcome", "subject": "Our news"}},
                {"key": "benefit", "payload": {"headline": "Free returns",
                                               "subject": "Free returns, always"}}])
            requests.post(base + "/v1/experiments", json=body, headers=admin)
            requests.post(base + f"/v1/experiments/{key}/start", headers=admin)
        yield {"base": base, "admin": admin, "secret": secret, **keys}
    client = redis.Redis.from_url(redis_url)
    for k in client.scan_iter(match=f"*{{{prefix}:*", count=1000):
        client.delete(k)


def _cells(live, key="homepage-hero"):
    rows = requests.get(live["base"] + f"/v1/experiments/{key}/counters",
                        headers=live["admin"]).json()["rows"]
    return {r["variant"]: r for r in rows if r["group"] == "policy"}


def _totals(live, key="homepage-hero"):
    cells = _cells(live, key).values()
    return (sum(r["exposures"] for r in cells),
            sum(r["metrics"]["purchase"]["conversions"] for r in cells))


def test_end_to_end_decide_sticky_and_a_signed_identify(live):
    with Client(live["base"], live["sdk_key"], timeout=2.0) as c, \
            Client(live["base"], live["server_key"], timeout=2.0) as shop:
        first = c.decide("py-visitor-1", experiments=["homepage-hero"])
        assert first.reason("homepage-hero") == "assigned" and not first.fallback
        again = c.decide("py-visitor-1", experiments=["homepage-hero"])
        assert again.reason("homepage-hero") == "sticky"
        assert again.variant("homepage-hero") == first.variant("homepage-hero")
        # the public key may link a customer only with the shop backend's signature
        with pytest.raises(AuthenticationError) as info:
            c.identify("py-visitor-1", {"customer_id": "py-cust-1"})
        assert info.value.status == 403 and "signature" in info.value.fields
        signature = sign_customer_id(live["secret"], "py-cust-1")
        assert c.identify("py-visitor-1", {"customer_id": "py-cust-1"},
                          signature=signature) == "py-visitor-1"
        # the shop's backend now finds the same person by customer number
        via_customer = shop.decide("py-cust-1", id_type="customer_id",
                                   experiments=["homepage-hero"])
        assert via_customer.reason("homepage-hero") == "sticky"
        assert via_customer.variant("homepage-hero") == first.variant("homepage-hero")


def test_end_to_end_typed_ids_need_a_server_key_and_decide_still_never_raises(live, caplog):
    with Client(live["base"], live["sdk_key"], timeout=2.0) as c:
        d = c.decide("py-cust-2", id_type="customer_id", experiments=["homepage-hero"])
    assert d.fallback and d.variant("homepage-hero") == "control"
    assert any("id_type" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    strict = Client(live["base"], live["sdk_key"], timeout=2.0, raise_errors=True)
    with pytest.raises(AuthenticationError) as info:
        strict.decide("py-cust-2", id_type="customer_id", experiments=["homepage-hero"])
    assert info.value.status == 403 and "id_type" in info.value.fields
    with Client(live["base"], live["server_key"], timeout=2.0, raise_errors=True) as shop:
        served = shop.decide("py-cust-2", id_type="customer_id", experiments=["homepage-hero"])
        assert served.reason("homepage-hero") == "assigned"
        assert shop.identify("py-cust-2", {"email_sha256": "a" * 64},
                             id_type="customer_id") == "py-cust-2"


def test_end_to_end_expose_false_counts_only_once_confirmed(live):
    with Client(live["base"], live["server_key"], timeout=2.0, raise_errors=True) as shop:
        before = _totals(live)[0]
        later = shop.decide("py-render-later", experiments=["homepage-hero"], expose=False)
        assert later.reason("homepage-hero") == "assigned"
        assert _totals(live)[0] == before  # stored, not yet counted
        assert shop.expose("py-render-later", later) == 1
        assert shop.flush(timeout=10)
        assert _totals(live)[0] == before + 1
        shop.expose("py-render-later", [("homepage-hero", later.get("homepage-hero")
                                         .decision_id)])  # confirming twice counts once
        assert shop.flush(timeout=10) and shop.dropped == 0
        assert _totals(live)[0] == before + 1
        sticky = shop.decide("py-render-later", experiments=["homepage-hero"])
        assert sticky.variant("homepage-hero") == later.variant("homepage-hero")


class HoldFirstTrack(UrllibTransport):
    """Holds the first /v1/track call until released, so what is queued meanwhile is one batch."""

    def __init__(self):
        self.release = threading.Event()
        self.answers = []
        self.calls = 0

    def send(self, method, url, headers, body, timeout):
        if url.endswith("/v1/track"):
            self.calls += 1
            if self.calls == 1:
                self.release.wait(10)
        answer = super().send(method, url, headers, body, timeout)
        if url.endswith("/v1/track"):
            self.answers.append(json.loads(answer.body))
        return answer


def test_end_to_end_a_partially_valid_batch_keeps_the_valid_events(live):
    transport = HoldFirstTrack()
    with Client(live["base"], live["server_key"], timeout=2.0, transport=transport,
                flush_interval=0.05) as shop:
        shop.decide("py-batch", experiments=["homepage-hero"])
        _, conversions = _totals(live)
        shop.track("py-batch", "email_open", event_id="py-batch-open")  # held
        deadline = time.monotonic() + 10
        while transport.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # until the first event is on its way (and held)
        shop.track("py-batch", "purchase", 20, event_id="py-batch-order")
        shop.track("py-batch", "Not A Metric!", event_id="py-batch-bad")
        transport.release.set()
        assert shop.flush(timeout=10)
    assert transport.answers[1]["rejected"][0]["index"] == 1
    assert shop.dropped == 1
    assert _totals(live)[1] == conversions + 1


def test_end_to_end_age_keeps_a_queued_events_true_time(live):
    with Client(live["base"], live["server_key"], timeout=2.0) as shop:
        shop.decide("py-aged", experiments=["homepage-hero"])
        _, conversions = _totals(live)
        real, readings = shop._monotonic, []

        def an_hour_later():  # queued now, sent (by this clock) an hour later
            readings.append(real() + (3600 if readings else 0))
            return readings[-1]

        shop._monotonic = an_hour_later
        shop.track("py-aged", "purchase", 10, event_id="py-aged-early")
        assert shop.flush(timeout=10) and shop.dropped == 0
        # the server dates it an hour ago: before the visitor's assignment, so not credited
        assert _totals(live)[1] == conversions
        shop._monotonic = real
        shop.track("py-aged", "purchase", 10, event_id="py-aged-now")
        assert shop.flush(timeout=10)
        assert _totals(live)[1] == conversions + 1


class LoseFirstResponse:
    """The server gets the request, but the first answer is lost on the way back."""

    def __init__(self):
        self.inner = UrllibTransport()
        self.calls = 0

    def send(self, method, url, headers, body, timeout):
        answer = self.inner.send(method, url, headers, body, timeout)
        self.calls += 1
        if self.calls == 1 and url.endswith("/v1/track"):
            raise TimeoutError("response lost")
        return answer


def test_end_to_end_track_retry_after_a_lost_response_counts_once(live):
    transport = LoseFirstResponse()
    with Client(live["base"], live["sdk_key"], timeout=2.0, transport=transport,
                backoff=0.05, flush_interval=0.05) as c:
        variant = c.decide("py-buyer", experiments=["homepage-hero"]).variant("homepage-hero")
        before = _cells(live)[variant]["metrics"]["purchase"]["conversions"]
        transport.calls = 0
        c.track("py-buyer", "purchase", 49.9, event_id="py-order-1")
        assert c.flush(timeout=10) and c.dropped == 0
    assert transport.calls >= 2  # the lost answer made the SDK send again
    assert _cells(live)[variant]["metrics"]["purchase"]["conversions"] == before + 1


def test_fallback_within_the_timeout_when_the_server_is_stopped_or_hangs(redis_url):
    timeout = 0.3
    # A stopped server: nothing listens on the port any more.
    with gunicorn_server({"CENTRIC_REDIS_URL": redis_url, "CENTRIC_IDENTIFY_SECRET": "unused",
                          "CENTRIC_KEY_PREFIX": "stopped" + uuid.uuid4().hex[:6]}) as base:
        pass
    # A hung server: it accepts connections and never answers.
    hung = socket.socket()
    hung.bind(("127.0.0.1", free_port()))
    hung.listen(16)
    hung_base = f"http://127.0.0.1:{hung.getsockname()[1]}"
    try:
        for url in (base, hung_base):
            c = Client(url, "csk_any", timeout=timeout)
            started = time.monotonic()
            d = c.decide("v", experiments=["homepage-hero"])
            elapsed = time.monotonic() - started
            assert d.variant("homepage-hero") == "control" and d.fallback
            assert elapsed < timeout + 0.05, f"{url}: {elapsed:.3f}s"
    finally:
        hung.close()


def _readme_block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"<!-- example: {name} -->")
    body = text[start:].split("```", 2)[1]
    return body.split("\n", 1)[1]


def test_readme_python_example_runs(live):
    namespace = {"BASE_URL": live["base"], "SDK_KEY": live["sdk_key"],
                 "SERVER_KEY": live["server_key"], "IDENTIFY_SECRET": live["secret"]}
    exec(compile(_readme_block("python-sdk"), "README.md", "exec"), namespace)
    assert namespace["headline"] in ("Welcome", "Free returns")


def test_email_example_runs_against_the_server(live, email_example):
    exposures, conversions = _totals(live, "newsletter-subject")
    with Client(live["base"], live["server_key"], timeout=2.0, raise_errors=True) as c:
        sent = email_example.send_campaign(c, ["mail-1", "mail-2", "mail-3"])
        assert set(sent.values()) <= {"Our news", "Free returns, always"}
        email_example.on_open(c, "mail-1", "m-1")
        email_example.on_open(c, "mail-1", "m-1")  # a second open of the same message
        email_example.on_purchase(c, "mail-1", "o-1", 49.9)
        assert c.flush(timeout=10) and c.dropped == 0
    assert _totals(live, "newsletter-subject") == (exposures + 3, conversions + 1)
    rows = requests.get(live["base"] + "/v1/experiments/newsletter-subject/counters",
                        headers=live["admin"]).json()["rows"]
    assert {r["channel"] for r in rows} == {"email"}
    assert Path(email_example.__file__).name == "email_subject_lines.py"


def test_email_example_runs_as_a_script(live):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "email_subject_lines.py"),
                          live["base"], live["server_key"]], capture_output=True, text=True,
                         check=True, timeout=60)
    assert len(out.stdout.splitlines()) == 3 and out.stderr == ""  # no fallback warnings


def test_expose_skips_decisions_the_server_no_longer_waits_for():
    t = Recorder((200, {"visitor_id": "v", "persona": "default", "decisions": [
        {"experiment": e, "variant": "b", "payload": None, "reason": "sticky",
         "decision_id": f"d-{e}", "propensity": 0.5, "pending": pending}
        for e, pending in [("a", False), ("b", True)]]}), OK_EXPOSE)
    c = quick(t)
    assert c.expose("v", c.decide("v", experiments=["a", "b"], expose=False)) == 1
    c.close()


def test_a_backlog_goes_out_in_queue_order_so_confirmations_precede_purchases():
    import threading

    t = Recorder((503, {}, {"Retry-After": "1"}), OK_EXPOSE, OK_TRACK)
    c = quick(t)
    queued = threading.Event()
    c._sleep = lambda seconds: queued.wait(5)  # hold the retry until the backlog exists
    c.expose("v", [("hero", "d1")])
    c.track("v", "purchase", 10.0, event_id="o-1")
    c.track("v", "purchase", 5.0, event_id="o-2")
    queued.set()
    assert c.flush(timeout=5)
    c.close()
    after_retry = t.paths()[1:]
    assert after_retry == ["/v1/expose", "/v1/track"], t.paths()
    assert [e["event_id"] for e in t.sent[-1]["body"]["events"]] == ["o-1", "o-2"]
