"""Helpers shared by tests: a controllable clock, experiment bodies, a live gunicorn server."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
IDENTIFY_SECRET = "test-identify-secret"


def sign(value: str, secret: str = IDENTIFY_SECRET, id_type: str = "customer_id",
         visitor_id: str = "", expires: int | None = None) -> str:
    """What a shop's backend computes at login: hex HMAC-SHA256 of the customer id.

    Written out here rather than imported, so the tests check the documented recipe: the
    customer id itself, ``email_sha256:<hash>`` for an e-mail hash, and for a bound
    signature the visitor id and the expiry on lines of their own.
    """
    text = value if id_type == "customer_id" else f"{id_type}:{value}"
    if expires is not None:
        text = f"{text}\n{visitor_id}\n{expires}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


class FakeClock:
    """Wall clock under test control (epoch seconds)."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def experiment_body(key: str = "hero", **overrides: Any) -> dict[str, Any]:
    """A valid experiment definition, as the README shows one."""
    body: dict[str, Any] = {
        "key": key,
        "name": "Homepage hero",
        "hypothesis": "A concrete benefit beats a slogan",
        "mode": "bandit",
        "variants": [
            {"key": "control", "weight": 1, "payload": {"headline": "Welcome"}},
            {"key": "benefit", "weight": 1, "payload": {"headline": "Free returns"}},
        ],
        "control": "control",
        "metric": {"name": "purchase", "kind": "conversion"},
    }
    body.update(overrides)
    return body


def start_experiment(client: Any, admin: dict[str, str], **overrides: Any) -> None:
    """Create and start an experiment through the admin API."""
    body = experiment_body(**overrides)
    assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
    assert client.post(f"/v1/experiments/{body['key']}/start", headers=admin).status_code == 200


def decide(client: Any, sdk: dict[str, str], visitor: str, channel: str = "web",
           **extra: Any) -> Any:
    """POST /v1/decide and return the JSON answer (asserting a 200)."""
    r = client.post("/v1/decide", json={"visitor_id": visitor, "channel": channel, **extra},
                    headers=sdk)
    assert r.status_code == 200, r.json
    return r.json


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_ready(base_url: str, process: subprocess.Popen[Any], timeout: float = 30,
                     path: str = "/readyz") -> None:
    """Poll `path` until 200, failing early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if requests.get(base_url + path, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{base_url} not ready after {timeout}s")


@contextmanager
def gunicorn_server(env: dict[str, str], workers: int = 2, worker_class: str | None = None,
                    app: str = "server.wsgi:make_app()", threads: int = 1,
                    ready_path: str = "/readyz", stderr: Any = None) -> Iterator[str]:
    """Run `gunicorn 'server.wsgi:make_app()'` (or another app) on a free loopback port.

    Yields its base URL once `ready_path` answers. `stderr` (a file) takes its logs.
    """
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}",
           "--workers", str(workers), "--log-level", "warning"]
    if worker_class is not None:
        cmd += ["-k", worker_class]
    if threads > 1:
        cmd += ["--threads", str(threads)]
    process = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stderr=stderr)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process, path=ready_path)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def slow_redis(unix_path: str, delay: float) -> Iterator[str]:
    """A TCP proxy to a Redis unix socket that holds every reply back `delay` seconds.

    A slow Redis (overloaded, swapping, far away) still answers, just late: unlike a dead or
    paused one it never trips a timeout by itself. Yields a redis:// URL.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def pump(source: socket.socket, sink: socket.socket, wait: float) -> None:
        try:
            while not stop.is_set():
                chunk = source.recv(65536)
                if not chunk:
                    break
                if wait:
                    time.sleep(wait)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(unix_path)
            threading.Thread(target=pump, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, delay), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run the centric CLI in this process; return (exit status, stdout, stderr)."""
    from server.cli import main

    capsys.readouterr()
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse errors
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err
