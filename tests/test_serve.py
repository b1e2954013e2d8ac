"""`centric serve` with the embedded Redis: ready, usable, and durable across a restart."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import requests

from server.embedded import listpack_hint, socket_path
from server.keys import Keyspace
from tests.support import ROOT, experiment_body, free_port, wait_until_ready


def _serve(data_dir: Path, port: int,
           **extra_env: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CENTRIC_")}
    env.update(extra_env)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _stderr(data_dir).open("a") as stderr:  # the child keeps its own copy open
        process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--workers",
             "2", "--data-dir", str(data_dir)],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
            start_new_session=True,
        )
    printed: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if ":" in line:
            name, _, value = line.partition(":")
            printed[name.strip()] = value.strip()
        if line.startswith("identify secret"):  # the last line serve prints
            break
    wait_until_ready(f"http://127.0.0.1:{port}", process)
    return process, printed


def _stderr(data_dir: Path) -> Path:
    """Where a served process's logs go."""
    return data_dir.parent / "serve-stderr.log"


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def _cli(data_dir: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args, "--data-dir", str(data_dir)],
        env={k: v for k, v in os.environ.items() if not k.startswith("CENTRIC_")},
        cwd=ROOT, capture_output=True, text=True, check=True).stdout


def _check_ops_commands(base: str, data_dir: Path, printed: dict[str, str]) -> None:
    """The server key, the identify secret, key listing and gunicorn's JSON errors."""
    server = {"Authorization": "Bearer " + printed["server key"]}
    assert printed["server key"].startswith("cbk_")
    assert requests.get(base + "/v1/experiments", headers=server).status_code == 403
    assert "centric identify-secret" in printed["identify secret"]
    secret = _cli(data_dir, "identify-secret")
    assert len(secret.splitlines()) == 1 and secret.strip() not in str(printed)
    # The secret the command prints is the one the server checks signatures with.
    sdk = {"Authorization": "Bearer " + printed["sdk key"]}
    signature = hmac.new(secret.strip().encode(), b"c-42", hashlib.sha256).hexdigest()
    linked = requests.post(base + "/v1/identify", headers=sdk, json={
        "visitor_id": "v", "ids": {"customer_id": "c-42"}, "signature": signature})
    assert linked.status_code == 200, linked.text
    forged = requests.post(base + "/v1/identify", headers=sdk, json={
        "visitor_id": "w", "ids": {"customer_id": "c-43"}, "signature": "0" * 64})
    assert forged.status_code == 403
    listing = _cli(data_dir, "keys", "list")
    for role in ("admin", "server", "sdk"):
        key = printed[f"{role} key"]
        assert key[:10] in listing and key not in listing
    # `centric serve` runs the JSON error worker: gunicorn's own refusals are envelopes too.
    too_long = requests.get(base + "/v1/" + "x" * 5000)
    assert too_long.status_code == 414
    assert too_long.json()["error"]["code"] == "uri_too_long"


@pytest.mark.slow
def test_serve_embedded_redis_survives_restart(tmp_path):
    data_dir = tmp_path / "var"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process, printed = _serve(data_dir, port)
    try:
        assert printed["centric listening on http"] == f"//127.0.0.1:{port}"
        assert printed["console"].startswith(f"http://127.0.0.1:{port}/console/")
        assert requests.get(base + "/", allow_redirects=False).headers["Location"] == "/console/"
        admin = {"Authorization": "Bearer " + printed["admin key"]}
        sdk = {"Authorization": "Bearer " + printed["sdk key"]}
        assert requests.get(base + "/readyz").json() == {"status": "ready"}
        assert requests.post(base + "/v1/experiments", json=experiment_body(),
                             headers=admin).status_code == 201
        requests.post(base + "/v1/experiments/hero/start", headers=admin)
        first = requests.post(base + "/v1/decide", json={"visitor_id": "v", "channel": "web"},
                              headers=sdk).json()["decisions"][0]
        r = requests.post(base + "/v1/track", json={"visitor_id": "v", "metric": "purchase",
                                                    "event_id": "e1"}, headers=sdk).json()
        assert r["accepted"] == 1
        # The CLI finds the running embedded Redis and prints just a working key.
        out = subprocess.run(
            [sys.executable, "-m", "server.cli", "keys", "create", "--role", "admin",
             "--data-dir", str(data_dir)],
            env={k: v for k, v in os.environ.items() if not k.startswith("CENTRIC_")},
            cwd=ROOT, capture_output=True, text=True, check=True).stdout
        assert len(out.splitlines()) == 1
        extra = {"Authorization": "Bearer " + out.strip()}
        assert requests.get(base + "/v1/experiments", headers=extra).status_code == 200
        # Assignment records stay in the compact hash encoding.
        store = redis.Redis(unix_socket_path=str(socket_path(data_dir)), decode_responses=True)
        assert store.config_get("hash-max-ziplist-value") == {"hash-max-ziplist-value": "256"}
        assert listpack_hint(store) is None
        visitor = Keyspace("centric").visitor("visitor_id:v").profile
        assert store.object("encoding", visitor) in ("ziplist", "listpack")  # Redis 6 or 7
        # The background jobs process runs its first sweep right after start.
        swept = Keyspace("centric").job_ran("sweep")
        deadline = time.monotonic() + 30
        while store.get(swept) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert store.get(swept) is not None
        _check_ops_commands(base, data_dir, printed)
    finally:
        _stop(process)
    assert process.returncode == 0
    assert (data_dir / "centric.aof").exists() or (data_dir / "appendonlydir").exists()
    assert not (data_dir / "redis.sock").exists()  # the embedded Redis stopped with the server
    logs = _stderr(data_dir).read_text()
    assert "gunicorn" in logs and "background jobs started" in logs
    assert "Traceback" not in logs and "Logging error" not in logs, logs[-3000:]

    process, printed_again = _serve(data_dir, port)
    try:
        assert printed_again["admin key"] == printed["admin key"]
        assert requests.get(base + "/v1/experiments/hero", headers=admin).json()[
            "status"] == "running"
        again = requests.post(base + "/v1/decide", json={"visitor_id": "v", "channel": "web"},
                              headers=sdk).json()["decisions"][0]
        assert (again["variant"], again["reason"]) == (first["variant"], "sticky")
        rows = requests.get(base + "/v1/experiments/hero/counters", headers=admin).json()["rows"]
        assert sum(r["exposures"] for r in rows) == 1
        assert sum(r["metrics"]["purchase"]["conversions"] for r in rows) == 1
        dup = requests.post(base + "/v1/track", json={"visitor_id": "v", "metric": "purchase",
                                                      "event_id": "e1"}, headers=sdk).json()
        assert dup["duplicates"] == 1
        assert requests.get(base + "/v1/experiments", headers=extra).status_code == 200
        # The embedded redis-server dies (OOM killer, a stray kill): serve starts it again.
        pid = int((data_dir / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = requests.post(base + "/v1/decide", json={"visitor_id": "v", "channel": "web"},
                              headers=sdk)
            # Meanwhile: the control, or a retry where this worker never checked the key.
            assert r.status_code in (200, 503), r.text
            reason = r.json()["decisions"][0]["reason"] if r.status_code == 200 else None
            assert reason in ("sticky", "fallback", None)
            if requests.get(base + "/readyz").status_code == 200 and reason == "sticky":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the embedded Redis did not come back")
        assert int((data_dir / "redis.pid").read_text()) != pid
    finally:
        _stop(process)


@pytest.mark.slow
def test_acknowledged_outcomes_survive_sigkill_of_server_and_redis(tmp_path):
    data_dir = tmp_path / "var"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process, printed = _serve(data_dir, port, CENTRIC_APPENDFSYNC="always")
    admin = {"Authorization": "Bearer " + printed["admin key"]}
    acknowledged = 0
    try:
        requests.post(base + "/v1/experiments", json=experiment_body(), headers=admin)
        requests.post(base + "/v1/experiments/hero/start", headers=admin)
        session = requests.Session()
        session.headers.update(admin)
        for i in range(150):
            session.post(base + "/v1/decide", json={"visitor_id": f"v{i}", "channel": "web"})
            r = session.post(base + "/v1/track", json={"visitor_id": f"v{i}",
                                                       "metric": "purchase",
                                                       "event_id": f"order-{i}"})
            if r.status_code == 200 and r.json()["accepted"] == 1:
                acknowledged += 1
    finally:
        # No goodbye: the server, its workers and Redis die at once.
        redis_pid = int((data_dir / "redis.pid").read_text())
        os.killpg(process.pid, signal.SIGKILL)
        os.kill(redis_pid, signal.SIGKILL)
        process.wait(10)
    assert acknowledged == 150
    (data_dir / "redis.sock").unlink(missing_ok=True)
    process, _ = _serve(data_dir, port)
    try:
        rows = requests.get(base + "/v1/experiments/hero/counters", headers=admin).json()["rows"]
        assert sum(r["metrics"]["purchase"]["conversions"] for r in rows) == acknowledged
        assert sum(r["exposures"] for r in rows) == 150
    finally:
        _stop(process)


def test_serve_warns_about_a_redis_that_unpacks_small_hashes(rclient):
    before = rclient.config_get("hash-max-ziplist-value")["hash-max-ziplist-value"]
    try:
        rclient.config_set("hash-max-ziplist-value", 64)
        assert "hash-max-listpack-value 64" in (listpack_hint(rclient) or "")
        rclient.config_set("hash-max-ziplist-value", 256)
        assert listpack_hint(rclient) is None
    finally:
        rclient.config_set("hash-max-ziplist-value", before)
