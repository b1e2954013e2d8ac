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
    Client,
    ConfigurationError,
    InvalidRequest,
    Response,
    TransportError,
    UrllibTransport,
)

from server import create_app
from server.settings import Settings
from tests.support import ROOT, experiment_body, free_port, gunicorn_server


class Recorder:
    """A scripted transport: answers from a list, records what was sent."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent = []

    def send(self, method, url, headers, body, timeout):
        self.sent.append({"url": url, "headers": headers, "body": json.loads(body),
                          "timeout": timeout})
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        status, payload = answer
        return Response(status, json.dumps(payload).encode())


OK_TRACK = (200, {"accepted": 1, "duplicates": 0, "attributed": []})


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


@pytest.mark.parametrize("failure", [TimeoutError("slow"), ConnectionRefusedError("down"),
                                     (503, {}), (502, {"not": "json"}), (429, {})])
def test_decide_falls_back_and_never_raises(failure):
    c = Client("http://centric.test", "k", transport=Recorder(failure),
               defaults={"hero": "classic"})
    d = c.decide("v", experiments=["hero", "banner"])
    assert d.fallback is True
    assert [(x.experiment, x.variant, x.reason) for x in d.items] == [
        ("hero", "classic", "fallback"), ("banner", "control", "fallback")]
    assert d.variant("hero") == "classic" and d.payload("hero", {"x": 1}) == {"x": 1}
    strict = Client("http://centric.test", "k", transport=Recorder(failure), raise_errors=True)
    with pytest.raises(TransportError):
        strict.decide("v", experiments=["hero"])


def test_programming_errors_raise_from_a_documented_tree():
    with pytest.raises(ConfigurationError):
        Client("centric.test", "k")
    with pytest.raises(ConfigurationError):
        Client("http://centric.test", "")
    c = Client("http://centric.test", "k", transport=Recorder(
        (400, {"error": {"code": "invalid", "message": "bad", "fields": {"channel": "x"}}})))
    with pytest.raises(ConfigurationError):
        c.decide("")
    with pytest.raises(InvalidRequest) as info:
        c.decide("v", channel="Web Site")
    assert info.value.status == 400 and info.value.fields == {"channel": "x"}
    denied = Client("http://centric.test", "k", transport=Recorder((401, {"error": {}})))
    with pytest.raises(AuthenticationError):
        denied.decide("v")
    assert issubclass(AuthenticationError, InvalidRequest)


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
    app = create_app(Settings(redis_url=redis_url, key_prefix=prefix))
    services = app.extensions["centric"]
    admin = {"Authorization": "Bearer " + services.api_keys.create("admin")}
    sdk_key = services.api_keys.create("sdk")
    with gunicorn_server({"CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix}) as base:
        for key in ("homepage-hero", "newsletter-subject"):
            body = experiment_body(key=key, variants=[
                {"key": "control", "payload": {"headline": "Welcome", "subject": "Our news"}},
                {"key": "benefit", "payload": {"headline": "Free returns",
                                               "subject": "Free returns, always"}}])
            requests.post(base + "/v1/experiments", json=body, headers=admin)
            requests.post(base + f"/v1/experiments/{key}/start", headers=admin)
        yield {"base": base, "sdk_key": sdk_key, "admin": admin}
    client = redis.Redis.from_url(redis_url)
    for k in client.scan_iter(match=f"*{{{prefix}:*", count=1000):
        client.delete(k)


def _cells(live, key="homepage-hero"):
    rows = requests.get(live["base"] + f"/v1/experiments/{key}/counters",
                        headers=live["admin"]).json()["rows"]
    return {r["variant"]: r for r in rows if r["group"] == "policy"}


def test_end_to_end_decide_sticky_and_identify(live):
    with Client(live["base"], live["sdk_key"], timeout=2.0) as c:
        first = c.decide("py-visitor-1", experiments=["homepage-hero"])
        assert first.reason("homepage-hero") == "assigned" and not first.fallback
        again = c.decide("py-visitor-1", experiments=["homepage-hero"])
        assert again.reason("homepage-hero") == "sticky"
        assert again.variant("homepage-hero") == first.variant("homepage-hero")
        assert c.identify("py-visitor-1", {"customer_id": "py-cust-1"}) == "py-visitor-1"
        via_customer = c.decide("py-cust-1", experiments=["homepage-hero"])
        assert via_customer.variant("homepage-hero") == first.variant("homepage-hero")


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
        transport.calls = 0
        c.track("py-buyer", "purchase", 49.9, event_id="py-order-1")
        assert c.flush(timeout=10)
    assert transport.calls >= 2  # the lost answer made the SDK send again
    cell = _cells(live)[variant]
    assert cell["metrics"]["purchase"]["conversions"] == 1


def test_fallback_within_the_timeout_when_the_server_is_stopped_or_hangs(redis_url):
    timeout = 0.3
    # A stopped server: nothing listens on the port any more.
    with gunicorn_server({"CENTRIC_REDIS_URL": redis_url,
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
    namespace = {"BASE_URL": live["base"], "SDK_KEY": live["sdk_key"]}
    exec(compile(_readme_block("python-sdk"), "README.md", "exec"), namespace)
    assert namespace["headline"] in ("Welcome", "Free returns")


def test_email_example_runs_against_the_server(live):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import email_subject_lines as example
    finally:
        sys.path.pop(0)
    with Client(live["base"], live["sdk_key"], timeout=2.0) as c:
        sent = example.send_campaign(c, ["mail-1", "mail-2", "mail-3"])
        assert set(sent.values()) <= {"Our news", "Free returns, always"}
        example.on_open(c, "mail-1", "m-1")
        example.on_open(c, "mail-1", "m-1")  # a second open of the same message
        example.on_purchase(c, "mail-1", "o-1", 49.9)
        assert c.flush(timeout=10)
    cells = _cells(live, "newsletter-subject")
    assert sum(r["exposures"] for r in cells.values()) == 3
    assert sum(r["metrics"]["purchase"]["conversions"] for r in cells.values()) == 1
    rows = requests.get(live["base"] + "/v1/experiments/newsletter-subject/counters",
                        headers=live["admin"]).json()["rows"]
    assert {r["channel"] for r in rows} == {"email"}
    assert Path(example.__file__).name == "email_subject_lines.py"
