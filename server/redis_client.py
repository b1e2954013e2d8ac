"""Building the Redis client from settings, with deliberate timeouts and no retries hidden."""

from __future__ import annotations

import redis

from server.settings import Settings


def connect(url: str, settings: Settings) -> redis.Redis:
    """A lazily connecting client (no network I/O happens here)."""
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
        max_connections=settings.redis_max_connections,
        health_check_interval=30,
        decode_responses=True,
    )
