"""Building the Redis client from settings, with deliberate timeouts and no retries hidden."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from server import deadline
from server.settings import Settings

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def connect(url: str, settings: Settings, timeout: float | None = None) -> redis.Redis:
    """A lazily connecting client (no network I/O happens here).

    `timeout` (seconds) bounds connecting and every reply; the decision path passes its
    budget, and its connections also respect the request's deadline (server.deadline), so
    that a slow or dead Redis costs a decide at most that long. Retries are off: the callers
    decide what a failure means (a fallback decision, a 503 that SDKs retry).
    """
    if url.startswith(CLUSTER_SCHEMES):
        # Redis Cluster: every key a script touches shares one hash tag (server/keys.py), so
        # each script runs on one node; pipelines are split by node by the client.
        plain = url.replace("+cluster", "", 1)
        cluster = redis.RedisCluster.from_url(
            plain,
            socket_timeout=timeout or settings.redis_socket_timeout,
            socket_connect_timeout=timeout or settings.redis_connect_timeout,
            max_connections=settings.redis_max_connections,
            decode_responses=True,
            # No hidden retries here either (a failed call refreshes the slot map, and the
            # caller's own retry lands on the new primary); the decide client's nodes read
            # the request's deadline like a single Redis does.
            retry=Retry(NoBackoff(), 0),
            **({"connection_class": deadline.connection_class(plain)} if timeout else {}),
        )
        return cluster  # type: ignore[return-value]
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout or settings.redis_socket_timeout,
        socket_connect_timeout=timeout or settings.redis_connect_timeout,
        max_connections=settings.redis_max_connections,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        **({"connection_class": deadline.connection_class(url)} if timeout else {}),
    )
