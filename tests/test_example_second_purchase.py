"""examples/second_purchase.py runs against a real server (a short version of the README's)."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid

import redis
import requests

from server.app import create_app
from server.settings import Settings
from tests.support import ROOT, gunicorn_server


def test_the_second_purchase_example_runs_the_whole_loop(redis_url):
    prefix = "ex" + uuid.uuid4().hex[:8]
    app = create_app(Settings(redis_url=redis_url, key_prefix=prefix))
    keys = app.extensions["centric"].api_keys
    admin_key, server_key = keys.create("admin"), keys.create("server")
    admin = {"Authorization": f"Bearer {admin_key}"}
    days, per_day = 3, 60
    try:
        with gunicorn_server({"CENTRIC_REDIS_URL": redis_url,
                              "CENTRIC_KEY_PREFIX": prefix}) as base:
            out = subprocess.run(
                [sys.executable, str(ROOT / "examples" / "second_purchase.py"), base,
                 admin_key, server_key, "--days", str(days), "--customers-per-day",
                 str(per_day), "--pause", "0"],
                capture_output=True, text=True, timeout=300, cwd=ROOT)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.splitlines()
            sent = days * per_day // 2  # the 'centric' cohort, each entry once
            assert lines[0] == f"{days} days, {days * per_day} new customers, {sent} messages " \
                               "sent by the daily job"
            rows = {line[:38].strip(): line[38:].split() for line in lines[2:5]}
            assert set(rows) == {"holdout (no message)", "same message for everyone (voucher)",
                                 "centric (bandit per persona)"}
            assert int(rows["holdout (no message)"][0]) + int(
                rows["centric (bandit per persona)"][0]) == sent
            assert int(rows["same message for everyone (voucher)"][0]) == sent
            for row in rows.values():
                assert re.fullmatch(r"\d+\.\d%", row[1]) and float(row[2]) > 0
            assert any(line.startswith("centric's report, policy vs holdout") for line in lines)
            # Every message the job sent was decided once and counted once.
            report = requests.get(f"{base}/v1/experiments/second-nudge/report",
                                  headers=admin).json()
            assert sum(v["exposures"] for v in report["variants"]) == sent
            members = requests.get(f"{base}/v1/moments/second-purchase/members",
                                   headers=admin, params={"limit": 1000}).json()
            assert members["count"] <= sent and not members["has_more"]
            assert all(m["entry"] == 1 for m in members["members"])
    finally:
        client = redis.Redis.from_url(redis_url)
        for k in client.scan_iter(match=f"*{{{prefix}:*", count=1000):
            client.delete(k)
