"""Fixtures: a real Redis, an app per test under its own key prefix, and API keys.

Redis is CENTRIC_TEST_REDIS_URL if set, else one answering on 127.0.0.1:6379, else an
embedded redis-server started for the session.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from server import create_app
from server.embedded import EmbeddedRedis
from server.settings import Settings
from tests.support import IDENTIFY_SECRET, FakeClock

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the Redis every test uses."""
    configured = os.environ.get("CENTRIC_TEST_REDIS_URL")
    if configured:
        yield configured
    elif _answers(LOCAL_REDIS):
        yield LOCAL_REDIS
    else:
        # Short path: unix socket paths are limited to ~100 bytes.
        with tempfile.TemporaryDirectory(prefix="centric-") as tmp:
            server = EmbeddedRedis(Path(tmp))
            yield server.start()
            server.stop()


@pytest.fixture
def rclient(redis_url: str) -> redis.Redis:
    """A plain client on the test Redis."""
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def prefix(rclient: redis.Redis) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    name = "t" + uuid.uuid4().hex[:10]
    yield name
    for key in rclient.scan_iter(match=f"*{{{name}:*", count=1000):
        rclient.delete(key)


@pytest.fixture
def settings(redis_url: str, prefix: str) -> Settings:
    """Settings for an app on the test Redis."""
    # A generous decide budget: functional tests must not fall back because the machine is
    # busy (the outage tests set their own budget and check it).
    # Posteriors are refit inline on every decide, so that a test sees its own outcomes learnt.
    return Settings(redis_url=redis_url, key_prefix=prefix, refresh_interval=0.0,
                    posterior_interval=0.0, posterior_background=False,
                    identify_secret=IDENTIFY_SECRET, decide_budget_ms=1000.0)


@pytest.fixture
def clock() -> FakeClock:
    """A controllable wall clock."""
    return FakeClock()


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> Flask:
    """The app under test with injected clock and seeded randomness."""
    return create_app(settings, clock=clock, rng=np.random.default_rng(7))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Flask test client."""
    return app.test_client()


@pytest.fixture
def admin(app: Flask) -> dict[str, str]:
    """Headers with an admin key."""
    return {"Authorization": "Bearer " + app.extensions["centric"].api_keys.create("admin")}


@pytest.fixture
def sdk(app: Flask) -> dict[str, str]:
    """Headers with an SDK key."""
    return {"Authorization": "Bearer " + app.extensions["centric"].api_keys.create("sdk")}


@pytest.fixture
def server(app: Flask) -> dict[str, str]:
    """Headers with a server key (shop backends: any id type, no signature needed)."""
    return {"Authorization": "Bearer " + app.extensions["centric"].api_keys.create("server")}


@pytest.fixture
def viewer(app: Flask) -> dict[str, str]:
    """Headers with a viewer key (analysts: admin reads only, no changes)."""
    return {"Authorization": "Bearer " + app.extensions["centric"].api_keys.create("viewer")}


@pytest.fixture
def cli_env(monkeypatch, redis_url, prefix, tmp_path):
    """The CLI's environment: the test Redis under this test's prefix, a private data dir."""
    for name in list(os.environ):
        if name.startswith("CENTRIC_"):
            monkeypatch.delenv(name)
    env = {"CENTRIC_REDIS_URL": redis_url, "CENTRIC_KEY_PREFIX": prefix,
           "CENTRIC_DATA_DIR": str(tmp_path / "var")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
