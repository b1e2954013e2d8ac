"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from redis.exceptions import RedisError

bp = Blueprint("health", __name__)


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
        return jsonify({"status": "unavailable", "redis": str(exc)}), 503
    return jsonify({"status": "ready"})
