"""Liveness and readiness."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from redis.exceptions import RedisError

from server.observability import metrics

bp = Blueprint("health", __name__)
log = logging.getLogger("centric")


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    """The OpenAPI document of this API."""
    from server.openapi import document

    return jsonify(document())


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Redis answers; 503 otherwise."""
    try:
        current_app.extensions["centric"].redis.ping()
    except RedisError as exc:
        # The error names the Redis host, port or socket path: log it, never answer it (this
        # endpoint needs no key).
        metrics().redis_errors.labels("health.readyz").inc()
        # str(), not repr(): redis-py 8's repr of an error drops the detail.
        log.warning("readiness check failed: %s: %s", type(exc).__name__, exc)
        return (jsonify({"status": "unavailable", "redis": "unreachable"}), 503,
                {"Retry-After": "1"})
    return jsonify({"status": "ready"})
