"""The console in Debian's Chromium (Playwright) against a live server on real Redis.

An admin signs in, creates a 3-variant bandit in the editor, starts it and reads its report
after a few hundred visitors; a viewer reads a report and finds no way to change anything;
axe-core finds no serious or critical violation on the pages. Screenshots go to docs/ for
the README.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import redis
import requests

from server import create_app
from server.settings import Settings
from tests.support import ROOT, gunicorn_server
from tests.test_sdk_browser import CHROMIUM_ARGS, _ensure_chromium

DOCS = ROOT / "docs"
RATES = {"control": 0.04, "bold": 0.09, "calm": 0.05}


@contextmanager
def _live_console(redis_url: str) -> Iterator[tuple[str, str, str, str]]:
    """A gunicorn server on its own key prefix.

    Yields (base URL, admin key, viewer key, server key); its Redis keys go afterwards.
    """
    prefix = "con" + uuid.uuid4().hex[:8]
    services = create_app(Settings(redis_url=redis_url, key_prefix=prefix)).extensions["centric"]
    keys = [services.api_keys.create(role, name) for role, name in (
        ("admin", "product owner"), ("viewer", "analyst"), ("server", "backend"))]
    env = {"CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix,
           "CENTRIC_DECIDE_BUDGET_MS": "1000"}
    try:
        with gunicorn_server(env) as base:
            yield base, *keys
    finally:
        client = redis.Redis.from_url(redis_url)
        for k in client.scan_iter(match=f"*{{{prefix}:*", count=1000):
            client.delete(k)


def _traffic(base: str, server_key: str, visitors: int = 300) -> None:
    """Visitors decide through the HTTP API; some buy, at each variant's own rate."""
    server = {"Authorization": f"Bearer {server_key}"}
    rng = np.random.default_rng(3)
    with requests.Session() as http:
        for i in range(visitors):
            channel = "app" if i % 3 == 0 else "web"
            d = http.post(base + "/v1/decide", headers=server, json={
                "visitor_id": f"v{i}", "channel": channel,
                "experiments": ["homepage-hero"]}).json()["decisions"][0]
            if rng.random() < RATES[d["variant"]]:
                http.post(base + "/v1/track", headers=server, json={
                    "visitor_id": f"v{i}", "metric": "purchase", "event_id": f"e{i}"})


def _sign_in(page, base: str, key: str) -> None:
    page.goto(base + "/")
    page.wait_for_url("**/console/sign-in**")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/")


def _accessible(page, axe) -> None:
    serious = [v for v in axe.run(page).response["violations"]
               if v["impact"] in ("serious", "critical")]
    assert not serious, [(v["id"], v["help"], [n["target"] for n in v["nodes"]])
                         for v in serious]


@pytest.mark.slow
def test_an_admin_creates_starts_and_reads_an_experiment(redis_url):
    from axe_playwright_python.sync_playwright import Axe
    from playwright.sync_api import sync_playwright

    executable = _ensure_chromium()
    DOCS.mkdir(exist_ok=True)
    axe = Axe()
    with _live_console(redis_url) as (base, admin_key, _viewer, server_key), \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.goto(base + "/console/sign-in")
        _accessible(page, axe)
        page.get_by_label("API key").fill("cak_not_a_key")
        page.get_by_role("button", name="Sign in").click()
        assert "unknown key" in page.inner_text("#key-error")

        _sign_in(page, base, admin_key)
        assert admin_key not in page.content()
        assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts never see it
        assert page.evaluate("JSON.stringify(localStorage)") == "{}"
        assert admin_key not in page.evaluate("JSON.stringify(sessionStorage)")

        # A 3-variant bandit through the editor; one payload is not JSON.
        page.get_by_role("link", name="New experiment").click()
        page.fill("#key", "homepage-hero")
        page.fill("#name", "Homepage hero")
        page.fill("#hypothesis", "A concrete benefit beats a slogan")
        page.select_option("#mode", "bandit")
        for row, key in enumerate(RATES):
            page.fill(f"#variants-{row}-key", key)
        page.fill("#variants-0-payload", '{"headline": "Welcome"}')
        page.fill("#variants-1-payload", '{"headline": "Free returns"')  # the brace is missing
        page.fill("#variants-2-payload", '{"headline": "Relax"}')
        page.fill("#control", "control")
        page.fill("#holdout", "0.1")
        # The page checks as you type; the server checks again when saving.
        assert page.get_attribute("#variants-1-payload", "aria-invalid") == "true"
        assert page.get_attribute("#variants-0-payload", "aria-invalid") is None
        _accessible(page, axe)
        page.get_by_role("button", name="Create draft").click()
        assert "invalid JSON" in page.inner_text("#err-variants-1-payload")
        assert page.get_attribute("#variants-1-payload", "aria-describedby") == \
            "err-variants-1-payload"
        page.screenshot(path=str(DOCS / "console-editor.png"), full_page=True)
        page.fill("#variants-1-payload", '{"headline": "Free returns"}')
        page.get_by_role("button", name="Create draft").click()
        page.wait_for_selector("#verdict-title")
        assert "draft" in page.inner_text(".meta")
        page.get_by_role("link", name="Start").click()
        assert "assigned a variant" in page.inner_text(".consequence")
        page.get_by_role("button", name="Yes, start").click()
        page.wait_for_selector("#verdict-title")
        assert "running" in page.inner_text(".meta")

        _traffic(base, server_key)
        page.get_by_role("link", name="Experiments", exact=True).click()
        row = page.get_by_role("row", name="homepage-hero")
        assert "running" in row.inner_text() and "bandit" in row.inner_text()
        assert "300" in row.inner_text()
        _accessible(page, axe)
        page.screenshot(path=str(DOCS / "console-experiments.png"), full_page=True)

        page.get_by_role("link", name="homepage-hero").click()
        page.wait_for_selector("#verdict-title")
        assert page.inner_text("#verdict-title").startswith("Verdict:")
        assert page.locator("#variants tbody tr").count() == 3
        assert page.locator("#segments tbody tr").count() == 2  # web and app
        # Every figure rendered (a broken image has no natural width). Polled from here:
        # the console's CSP forbids the eval that page.wait_for_function would need.
        for _ in range(100):
            if page.evaluate("() => [...document.images].every(i => i.complete)"):
                break
            page.wait_for_timeout(100)
        widths = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) >= 5 and all(w > 0 for w in widths)  # 4 figures and the heat map
        page.get_by_role("button", name="Show only the relative uplift").click()
        assert page.locator("#variants th.abs").is_hidden()
        assert page.get_by_role("link", name="Pause").is_visible()
        _accessible(page, axe)
        page.screenshot(path=str(DOCS / "console-report.png"), full_page=True)

        page.get_by_role("link", name="Pause").click()
        assert "Everyone will see the control 'control'" in page.inner_text(".consequence")
        _accessible(page, axe)
        page.get_by_role("button", name="Yes, pause").click()
        page.wait_for_selector("#verdict-title")
        assert "paused" in page.inner_text(".meta")

        # Personas: save ordered rules, then test them on a visitor who came through the app.
        page.get_by_role("link", name="Personas").click()
        page.fill("#personas", json.dumps([{"name": "app_user", "when": {
            "fact": "channel", "op": "eq", "value": "app"}}]))
        page.get_by_role("button", name="Save the rules").click()
        page.fill("#test-id", "v3")
        page.fill("#test-channel", "app")
        page.get_by_role("button", name="Test").click()
        assert "resolves to app_user" in page.inner_text("#persona-result")
        _accessible(page, axe)
        page.screenshot(path=str(DOCS / "console-personas.png"), full_page=True)
        page.get_by_role("link", name="Visitors").click()
        page.fill("#v-id", "v3")
        page.get_by_role("button", name="Look up").click()
        assert "homepage-hero" in page.inner_text("main")
        _accessible(page, axe)
        for name in ("API keys", "Audit log"):
            page.get_by_role("link", name=name).click()
            _accessible(page, axe)
        assert "pause" in page.inner_text("main")  # the audit log has the pause above

        browser.close()


@pytest.mark.slow
def test_a_viewer_reads_the_report_and_can_change_nothing(redis_url):
    from playwright.sync_api import sync_playwright

    executable = _ensure_chromium()
    with _live_console(redis_url) as (base, admin_key, viewer_key, server_key), \
            sync_playwright() as pw:
        admin = {"Authorization": f"Bearer {admin_key}"}
        body = {"key": "homepage-hero", "name": "Homepage hero", "mode": "bandit",
                "variants": [{"key": k} for k in RATES], "metric": {"name": "purchase"}}
        assert requests.post(base + "/v1/experiments", json=body, headers=admin).ok
        assert requests.post(base + "/v1/experiments/homepage-hero/start", headers=admin).ok
        _traffic(base, server_key, visitors=60)
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 768})
        viewer = context.new_page()
        _sign_in(viewer, base, viewer_key)
        assert viewer.locator("text=New experiment").count() == 0
        for hidden in ("Visitors", "API keys"):
            assert viewer.get_by_role("link", name=hidden).count() == 0
        viewer.goto(base + "/console/experiments/homepage-hero")
        viewer.wait_for_selector("#verdict-title")
        assert viewer.locator("#variants tbody tr").count() == 3
        assert viewer.locator(".actions").count() == 0  # nothing to click that changes state
        assert viewer.locator("form[method=post]").count() == 1  # only signing out
        viewer.goto(base + "/console/personas")
        assert viewer.locator("textarea").count() == 0  # the rules, read-only
        token = viewer.get_attribute("input[name=csrf_token]", "value")
        # Forged POSTs with the viewer's valid session and CSRF token are refused (sent
        # from outside: the console's CSP lets no page script connect anywhere).
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        for path, data in (("/console/experiments/homepage-hero/pause", {}),
                           ("/console/experiments/homepage-hero/edit", {"name": "x"}),
                           ("/console/personas", {"personas": "[]"}),
                           ("/console/keys", {"role": "admin", "name": "mine"})):
            forged = requests.post(base + path, data={"csrf_token": token, **data},
                                   cookies=cookies, allow_redirects=False)
            assert forged.status_code == 403, path
        state = requests.get(base + "/v1/experiments/homepage-hero", headers=admin).json()
        assert state["status"] == "running" and state["name"] == "Homepage hero"
        viewer.get_by_role("button", name="Sign out").click()
        viewer.wait_for_url("**/console/sign-in")
        viewer.goto(base + "/console/experiments/homepage-hero")
        viewer.wait_for_url("**/console/sign-in**")
        browser.close()
