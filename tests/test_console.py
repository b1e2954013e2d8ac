"""The console over HTTP: sign-in, sessions, CSRF, roles and headers (real Redis, Flask client).

The browser tests (tests/test_console_browser.py) click through the same pages in Chromium.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from server import create_app
from server.keys import hash_api_key
from tests.support import ROOT, decide, start_experiment

TEMPLATES = ROOT / "server" / "console" / "templates" / "console"


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def _raw(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def _sign_in(client, key: str, next_path: str = ""):
    page = client.get("/console/sign-in")
    return client.post("/console/sign-in", data={"key": key, "next": next_path,
                                                  "csrf_token": _csrf(page.text)})


def test_the_root_sends_a_browser_to_the_console(client):
    r = client.get("/")
    assert r.status_code == 302 and r.headers["Location"] == "/console/"


def _console_paths(app) -> list[tuple[str, str]]:
    """Every console route but sign-in and static files, with sample arguments."""
    sample = {"key": "hero", "action": "pause", "name": "uplift", "ident": "0" * 16}
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("console.") or rule.endpoint in (
                "console.sign_in", "console.static"):
            continue
        path = re.sub(r"<(?:[^>]*:)?(\w+)>", lambda m: sample[m.group(1)], rule.rule)
        out += [(m, path) for m in (rule.methods or set()) - {"HEAD", "OPTIONS"}]
    return out


def test_without_a_session_pages_redirect_and_actions_are_refused(app, client, admin):
    start_experiment(client, admin, name="Secret launch")
    routes = _console_paths(app)
    assert len(routes) >= 7
    for method, path in routes:
        if method == "POST":
            r = client.post(path, data={})
            assert r.status_code == 401, path
            assert "Secret" not in r.text and "hero" not in r.text
            continue
        r = client.get(path)
        assert r.status_code == 302, path
        assert r.headers["Location"].startswith("/console/sign-in?next=")
        assert "hero" not in r.text.replace(r.headers["Location"], "") and "Secret" not in r.text
    assert client.get("/v1/experiments/hero", headers=admin).json["status"] == "running"


def test_sign_in_opens_a_strict_http_only_server_side_session(app, client, admin, rclient,
                                                             prefix):
    key = _raw(admin)
    r = _sign_in(client, key, "/console/experiments/hero")
    assert r.status_code == 302 and r.headers["Location"] == "/console/experiments/hero"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here (see the HTTPS test below)
    assert key not in cookie
    # The session lives in Redis, signed cookie id; the key is in neither.
    sessions = list(rclient.scan_iter(match=f"{{{prefix}:auth}}:session:*"))
    assert len(sessions) == 1 and key not in rclient.get(sessions[0])
    page = client.get("/console/")
    assert page.status_code == 200 and key not in page.text
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"


def test_the_session_cookie_is_secure_over_https(client, admin):
    page = client.get("/console/sign-in", headers={"X-Forwarded-Proto": "https"})
    r = client.post("/console/sign-in", headers={"X-Forwarded-Proto": "https"},
                    data={"key": _raw(admin), "csrf_token": _csrf(page.text)})
    assert r.status_code == 302 and "Secure" in r.headers["Set-Cookie"]


@pytest.mark.parametrize("role", ["sdk", "server", None])
def test_only_admin_and_viewer_keys_sign_in(app, client, role):
    key = app.extensions["centric"].api_keys.create(role) if role else "cak_made_up"
    r = _sign_in(client, key)
    assert r.status_code == 401
    assert ("unknown key" if role is None else f"{role} keys cannot sign in") in r.text
    assert client.get("/console/").status_code == 302


def test_a_form_without_its_csrf_token_is_refused(client, admin):
    r = client.post("/console/sign-in", data={"key": _raw(admin)})
    assert r.status_code == 400 and "expired" in r.text
    assert client.get("/console/").status_code == 302
    _sign_in(client, _raw(admin))
    start_experiment(client, admin)
    forged = client.post("/console/experiments/hero/pause", data={})
    assert forged.status_code == 403
    assert client.get("/v1/experiments/hero", headers=admin).json["status"] == "running"


def test_a_viewer_reads_and_cannot_change_anything(client, admin, viewer, sdk):
    start_experiment(client, admin, mode="bandit")
    for i in range(40):
        decide(client, sdk, f"v{i}", experiments=["hero"])
    _sign_in(client, _raw(viewer))
    page = client.get("/console/experiments/hero")
    assert page.status_code == 200 and "Verdict" in page.text
    assert "/console/experiments/hero/pause" not in page.text  # no action is offered
    assert client.get("/console/experiments/hero/pause").status_code == 403
    forged = client.post("/console/experiments/hero/pause",
                         data={"csrf_token": _csrf(page.text)})
    assert forged.status_code == 403
    assert client.get("/v1/experiments/hero", headers=admin).json["status"] == "running"


def test_an_admin_confirms_what_visitors_will_see_then_ships(client, admin):
    start_experiment(client, admin)
    _sign_in(client, _raw(admin))
    confirm = client.get("/console/experiments/hero/ship")
    assert "Everyone will see the variant you choose" in confirm.text
    r = client.post("/console/experiments/hero/ship",
                    data={"csrf_token": _csrf(confirm.text), "winner": "benefit"})
    assert r.status_code == 302
    e = client.get("/v1/experiments/hero", headers=admin).json
    assert e["status"] == "stopped" and e["winner"] == "benefit"
    entry = client.get("/v1/experiments/hero/audit", headers=admin).json["entries"][0]
    assert entry["action"] == "ship" and entry["actor"].startswith("cak_")
    pause = client.get("/console/experiments/hero")
    assert "Everyone will see the control" not in pause.text


def test_sign_out_ends_the_session_on_the_server(client, admin):
    _sign_in(client, _raw(admin))
    page = client.get("/console/")
    stolen = client.get_cookie("centric_console", path="/console")
    assert stolen is not None
    r = client.post("/console/sign-out", data={"csrf_token": _csrf(page.text)})
    assert r.status_code == 302
    client.set_cookie("centric_console", stolen.value, path="/console")  # replay the old one
    assert client.get("/console/").status_code == 302


def test_a_revoked_key_ends_its_sessions(settings, clock, client, admin):
    _sign_in(client, _raw(admin))
    services = client.application.extensions["centric"]
    info = services.api_keys.find(_raw(admin)[:10])
    services.api_keys.revoke_digest(info.digest)
    services.auth._cache.clear()  # as after the cache interval (CENTRIC_API_KEY_CACHE_SECONDS)
    assert client.get("/console/").status_code == 302


def test_sessions_survive_a_restart(settings, clock, client, admin):
    _sign_in(client, _raw(admin))
    cookie = client.get_cookie("centric_console", path="/console")
    restarted = create_app(settings, clock=clock, rng=np.random.default_rng(1)).test_client()
    restarted.set_cookie("centric_console", cookie.value, path="/console")
    assert restarted.get("/console/").status_code == 200


def test_no_page_runs_inline_script():
    for template in Path(TEMPLATES).glob("*.html"):
        html = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), template.name
        assert not re.search(r"\son[a-z]+=", html), template.name
        assert "style=" not in html, template.name


def _editor_form(client, path: str = "/console/experiments/new", **fields) -> dict:
    page = client.get(path)
    assert page.status_code == 200
    form = {"csrf_token": _csrf(page.text), "key": "hero", "name": "Hero", "mode": "bandit",
            "variants-0-key": "control", "variants-0-payload": '{"headline": "Welcome"}',
            "variants-1-key": "bold", "variants-1-payload": '{"headline": "Free returns"}',
            "variants-2-key": "calm", "control": "control", "metric-name": "purchase",
            "metric-kind": "conversion", "holdout": "0.1"}
    form.update(fields)
    return form


def test_the_editor_creates_an_experiment_and_shows_errors_at_their_fields(client, admin):
    _sign_in(client, _raw(admin))
    # Not JSON at all: the form says so at the payload of the second row.
    r = client.post("/console/experiments/new",
                    data=_editor_form(client, **{"variants-1-payload": '{"headline": '}))
    assert r.status_code == 400
    assert 'id="err-variants-1-payload"' in r.text and "invalid JSON" in r.text
    assert 'aria-invalid="true" aria-describedby="err-variants-1-payload"' in r.text
    # JSON, but the API's schema refuses it: its fields map is what the page shows.
    r = client.post("/console/experiments/new", data=_editor_form(client, key="Bad Key"))
    assert r.status_code == 400 and 'id="err-key"' in r.text and "must match" in r.text
    r = client.post("/console/experiments/new",
                    data=_editor_form(client, **{"variants-2-key": "bold"}))
    assert r.status_code == 400 and 'id="err-variants"' in r.text and "unique" in r.text
    r = client.post("/console/experiments/new", data=_editor_form(client))
    assert r.status_code == 302 and r.headers["Location"] == "/console/experiments/hero"
    e = client.get("/v1/experiments/hero", headers=admin).json
    assert [v["key"] for v in e["variants"]] == ["control", "bold", "calm"]
    assert e["variants"][1]["payload"] == {"headline": "Free returns"}
    assert e["status"] == "draft" and e["holdout"] == 0.1 and e["mode"] == "bandit"


def test_changing_the_variants_of_a_running_experiment_is_explained(client, admin):
    start_experiment(client, admin)
    _sign_in(client, _raw(admin))
    page = client.get("/console/experiments/hero/edit")
    assert page.status_code == 200 and 'value="hero"' in page.text and "readonly" in page.text
    form = _editor_form(client, "/console/experiments/hero/edit", name="Renamed")
    r = client.post("/console/experiments/hero/edit", data=form)
    assert r.status_code == 409
    assert "Pause it" in r.text and "duplicate it" in r.text
    assert "/console/experiments/hero/duplicate" in r.text
    # The name alone may change while it runs.
    current = client.get("/v1/experiments/hero", headers=admin).json
    keep = {f"variants-{i}-key": v["key"] for i, v in enumerate(current["variants"])}
    keep.update({f"variants-{i}-payload": __import__("json").dumps(v["payload"])
                 for i, v in enumerate(current["variants"])})
    keep.update({f"variants-{i}-weight": str(v["weight"])
                 for i, v in enumerate(current["variants"])})
    form = _editor_form(client, "/console/experiments/hero/edit", name="Renamed",
                        **{"variants-2-key": "", "holdout": str(current["holdout"]),
                           "decision": __import__("json").dumps(current["decision"]),
                           **keep})
    r = client.post("/console/experiments/hero/edit", data=form)
    assert r.status_code == 302, r.text
    assert client.get("/v1/experiments/hero", headers=admin).json["name"] == "Renamed"
    copy = client.get("/console/experiments/hero/duplicate")
    assert 'value="hero-copy"' in copy.text and "(copy)" in copy.text


def test_a_viewer_cannot_open_the_editor(client, admin, viewer):
    start_experiment(client, admin)
    _sign_in(client, _raw(viewer))
    for path in ("/console/experiments/new", "/console/experiments/hero/edit",
                 "/console/experiments/hero/duplicate"):
        assert client.get(path).status_code == 403, path
    assert "New experiment" not in client.get("/console/").text


def test_personas_are_edited_with_errors_at_their_part_and_tested_on_a_visitor(
        client, admin, server, sdk):
    _sign_in(client, _raw(admin))
    page = client.get("/console/personas")
    rules = [{"name": "buyer", "when": {"fact": "purchase_count", "op": "gte", "value": 1}},
             {"name": "pro", "when": {"any": [{"fact": "attributes.plan", "op": "eq",
                                               "value": "pro"}]}}]
    bad = [rules[0], {"name": "pro", "when": {"any": [{"fact": "attributes.plan",
                                                       "op": "almost", "value": "pro"}]}}]
    r = client.post("/console/personas", data={"csrf_token": _csrf(page.text),
                                               "personas": json.dumps(bad)})
    assert r.status_code == 400 and "personas.1.when.any.0.op" in r.text
    assert client.get("/v1/personas", headers=admin).json == []
    r = client.post("/console/personas", data={"csrf_token": _csrf(page.text),
                                               "personas": json.dumps(rules)})
    assert r.status_code == 302
    assert client.get("/v1/personas", headers=admin).json == rules
    # A visitor who bought once resolves to 'buyer' by the first rule, with the fact used.
    client.post("/v1/track", headers=server, json={"visitor_id": "ana", "metric": "purchase",
                                                   "value": 20.0, "event_id": "p1"})
    test = client.get("/console/personas?id=ana&id_type=visitor_id&channel=web")
    assert "resolves to <strong>buyer</strong>" in test.text and "by rule 1" in test.text
    assert "purchase_count gte 1" in test.text
    new = client.get("/console/personas?id=nobody")
    assert "a new visitor" in new.text and "<strong>default</strong>" in new.text
    entry = client.get("/v1/audit", headers=admin).json["entries"][0]
    assert entry["target_type"] == "personas" and entry["actor"].startswith("cak_")


def test_a_visitor_is_looked_up_exported_and_erased(client, admin, server):
    client.post("/v1/identify", headers=server, json={
        "visitor_id": "dev-1", "ids": {"customer_id": "c-42"}, "attributes": {"plan": "pro"}})
    _sign_in(client, _raw(admin))
    page = client.get("/console/visitors?id=c-42&id_type=customer_id")
    assert page.status_code == 200 and "known customer" in page.text and "dev-1" in page.text
    assert "pro" in page.text
    export = client.get("/console/visitors/export?id=c-42&id_type=customer_id")
    assert export.headers["Content-Disposition"].startswith("attachment")
    assert json.loads(export.data)["attributes"] == {"plan": "pro"}
    confirm = client.get("/console/visitors/erase?id=dev-1&id_type=visitor_id")
    assert "cannot be recovered" in confirm.text
    r = client.post("/console/visitors/erase", data={"csrf_token": _csrf(confirm.text),
                                                     "id": "dev-1", "id_type": "visitor_id"})
    assert r.status_code == 200 and "Erased" in r.text
    assert client.get("/v1/visitors/c-42?id_type=customer_id", headers=admin).status_code == 404
    assert "Nobody has this id" in client.get("/console/visitors?id=dev-1").text


def test_keys_are_created_once_listed_without_secret_and_revoked(client, admin):
    _sign_in(client, _raw(admin))
    page = client.get("/console/keys")
    assert _raw(admin) not in page.text and _raw(admin)[:10] in page.text
    r = client.post("/console/keys", data={"csrf_token": _csrf(page.text), "role": "viewer",
                                           "name": "analyst"})
    created = re.search(r'id="new-key" readonly value="(cvk_[^"]+)"', r.text).group(1)
    assert client.get("/v1/experiments", headers={"Authorization": f"Bearer {created}"}
                      ).status_code == 200
    listing = client.get("/console/keys")
    assert created not in listing.text and "analyst" in listing.text
    revoke = f"/console/keys/{hash_api_key(created)[:16]}/revoke"
    confirm = client.get(revoke)
    assert "refused within" in confirm.text
    client.post(revoke, data={"csrf_token": _csrf(confirm.text)})
    client.application.extensions["centric"].auth._cache.clear()  # the cache interval passed
    assert client.get("/v1/experiments", headers={"Authorization": f"Bearer {created}"}
                      ).status_code == 401
    actions = [e["action"] for e in client.get("/v1/audit", headers=admin).json["entries"]]
    assert actions[:2] == ["revoke", "create"]
    audit = client.get("/console/audit")
    assert audit.status_code == 200 and "revoke" in audit.text


def test_a_viewer_reads_personas_and_the_log_but_not_people_or_keys(client, admin, viewer):
    _sign_in(client, _raw(viewer))
    personas = client.get("/console/personas")
    assert personas.status_code == 200 and "<textarea" not in personas.text
    assert "Test the rules" not in personas.text
    assert client.get("/console/personas?id=someone").status_code == 200
    assert client.get("/console/audit").status_code == 200
    for path in ("/console/visitors", "/console/visitors/export?id=x", "/console/keys",
                 "/console/visitors/erase?id=x"):
        assert client.get(path).status_code == 403, path
    forged = client.post("/console/personas", data={"csrf_token": _csrf(personas.text),
                                                    "personas": "[]"})
    assert forged.status_code == 403


def test_odd_input_gets_an_answer_naming_the_field_never_a_crash(client, admin):
    _sign_in(client, _raw(admin))
    deep = "[" * 5_000 + "]" * 5_000
    for payload, why in ((deep, "nested too deeply"), ('{"x": NaN}', "NaN is not valid JSON")):
        r = client.post("/console/experiments/new",
                        data=_editor_form(client, **{"variants-1-payload": payload}))
        assert r.status_code == 400 and why in r.text, why
    page = client.get("/console/personas")
    r = client.post("/console/personas", data={"csrf_token": _csrf(page.text),
                                               "personas": deep})
    assert r.status_code == 400 and "nested too deeply" in r.text
    for path in ("/console/experiments/" + "x" * 5000, "/console/experiments/UPPER",
                 "/console/experiments/%C3%A9/edit"):
        assert client.get(path).status_code == 404, path
    r = client.get("/console/visitors?id=" + "x" * 5000)
    assert r.status_code == 400 and "<code>id</code>" in r.text
    assert client.get("/console/sign-in?next=//evil.example").status_code == 200
    page = client.get("/console/sign-in?next=https://evil.example/")
    r = client.post("/console/sign-in", data={"key": _raw(admin), "csrf_token": _csrf(page.text),
                                              "next": "https://evil.example/"})
    assert r.headers["Location"] == "/console/"  # never an open redirect


def test_signing_in_gives_a_new_session_id(client, admin, rclient, prefix):
    page = client.get("/console/sign-in")
    planted = client.get_cookie("centric_console", path="/console").value
    sessions = list(rclient.scan_iter(match=f"{{{prefix}:auth}}:session:*"))
    # The sign-in form's session (its CSRF token) is short-lived.
    assert len(sessions) == 1 and 0 < rclient.ttl(sessions[0]) <= 600
    client.post("/console/sign-in", data={"key": _raw(admin), "csrf_token": _csrf(page.text)})
    signed_in = client.get_cookie("centric_console", path="/console").value
    assert signed_in != planted
    (session_key,) = rclient.scan_iter(match=f"{{{prefix}:auth}}:session:*")
    assert rclient.ttl(session_key) > 600  # a signed-in session lives its full hours
    attacker = client.application.test_client()
    attacker.set_cookie("centric_console", planted, path="/console")
    assert attacker.get("/console/keys").status_code == 302  # the planted id is worth nothing


def test_names_with_dollars_and_odd_segments_never_break_a_figure(client, admin):
    start_experiment(client, admin, name="Promo {$x^$} costs $5")
    _sign_in(client, _raw(admin))
    for name in ("posteriors", "uplift", "allocation", "cumulative", "segments", "daily"):
        assert client.get(f"/console/experiments/hero/plots/{name}.svg").status_code == 200
    r = client.get("/console/experiments/hero/plots/posteriors.svg?persona=$%5Csqrt{$"
                   "&channel=web")
    assert r.status_code == 400 and "persona" in r.text


def test_key_names_and_next_paths_are_checked(client, admin):
    _sign_in(client, _raw(admin))
    page = client.get("/console/keys")
    for name in ("x" * 80, "a\nb", "a\x00b", "\u202e"):
        r = client.post("/console/keys", data={"csrf_token": _csrf(page.text), "role": "viewer",
                                               "name": name})
        assert r.status_code == 400 and 'id="err-name"' in r.text, repr(name)
    client.post("/console/sign-out", data={"csrf_token": _csrf(page.text)})
    page = client.get("/console/sign-in")
    r = client.post("/console/sign-in", data={"key": _raw(admin), "csrf_token": _csrf(page.text),
                                              "next": "/console/\r\nX-Evil: 1"})
    assert r.status_code == 302 and r.headers["Location"] == "/console/"


def test_keys_sharing_a_display_prefix_are_revoked_one_by_one(client, admin, rclient):
    services = client.application.extensions["centric"]
    keys = [services.api_keys.create("viewer", name) for name in ("old-a", "old-b")]
    for key in keys:  # as keys made before display prefixes were kept
        rclient.hdel(services.keys.api_key(hash_api_key(key)), "display")
    _sign_in(client, _raw(admin))
    listing = client.get("/console/keys").text
    links = re.findall(r'href="(/console/keys/[0-9a-f]{16}/revoke)"', listing)
    target = "/console/keys/" + hash_api_key(keys[1])[:16] + "/revoke"
    assert target in links
    confirm = client.get(target)
    assert "old-b" in confirm.text and "old-a" not in confirm.text
    client.post(target, data={"csrf_token": _csrf(confirm.text)})
    names = {k.name for k in services.api_keys.list()}
    assert "old-a" in names and "old-b" not in names


def test_with_redis_down_the_console_answers_503_not_a_crash(settings, clock):
    from tests.support import free_port

    dead = create_app(settings.with_changes(redis_url=f"redis://127.0.0.1:{free_port()}/0"),
                      clock=clock).test_client()
    for method, path in (("GET", "/console/sign-in"), ("GET", "/console/"),
                         ("POST", "/console/sign-in"), ("POST", "/console/experiments/x/pause")):
        r = dead.open(path, method=method, data={"key": "cak_x"})
        assert r.status_code == 503, (method, path, r.status_code)
        assert r.headers["Retry-After"] and "unavailable" in r.text
        assert "Traceback" not in r.text
    assert dead.get("/console/static/console.css").status_code == 200
