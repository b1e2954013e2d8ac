"""Error types raised by services and views, and their single mapping to HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("centric")


# Sent with every answer, the app's and gunicorn's own: an API of JSON and images, so
# nothing may frame, sniff or cache what it answers.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Cache-Control", "no-store"),
)


def envelope(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON error envelope every error answer carries."""
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


class CentricError(Exception):
    """Base of every error the API reports; carries an HTTP status, a code and field errors."""

    status = 400
    code = "bad_request"
    retry_after = 1  # seconds, sent with 429 and 503

    def __init__(self, message: str, fields: dict[str, Any] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        if retry_after is not None:
            self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        """The JSON error envelope."""
        return envelope(self.code, self.message, self.fields)


class InvalidInput(CentricError):
    """The request body or query failed validation."""

    status = 400
    code = "invalid"


class MalformedJSON(CentricError):
    """The body is not JSON (or not UTF-8)."""

    status = 400
    code = "malformed_json"


class UnsupportedMediaType(CentricError):
    """The body is not declared as application/json."""

    status = 415
    code = "unsupported_media_type"


class Unauthorized(CentricError):
    """No API key, or an unknown one."""

    status = 401
    code = "unauthorized"


class Forbidden(CentricError):
    """The key's role may not call this endpoint."""

    status = 403
    code = "forbidden"


class RateLimited(CentricError):
    """The key sent more requests than its rate allows."""

    status = 429
    code = "rate_limited"


class NotFound(CentricError):
    """The addressed resource does not exist."""

    status = 404
    code = "not_found"


class Conflict(CentricError):
    """The request conflicts with the resource's current state."""

    status = 409
    code = "conflict"


class StoreUnavailable(CentricError):
    """Redis could not be reached in time."""

    status = 503
    code = "store_unavailable"


class ProfileBusy(StoreUnavailable):
    """One visitor's profile is being merged, or its links form a chain too long.

    A 503 like a store failure for that one request, but the store itself is fine: it must
    not open any breaker that would make other visitors fall back.
    """


def _response(error: CentricError) -> tuple[Response, int]:
    return jsonify(error.to_dict()), error.status


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def register_error_handlers(app: Flask) -> None:
    """Map every error type (ours, werkzeug's, and anything unexpected) to the JSON envelope."""

    @app.errorhandler(CentricError)
    def _centric(error: CentricError) -> tuple[Response, int]:
        response, status = _response(error)
        if isinstance(error, StoreUnavailable | RateLimited):
            response.headers["Retry-After"] = str(error.retry_after)
        return response, status

    @app.errorhandler(RedisError)
    def _redis_down(error: Exception) -> tuple[Response, int]:
        # Unreachable, timing out, out of memory, read-only after a failover, busy: all
        # transient from the caller's side, so 503 + Retry-After, never a 500.
        from server.observability import metrics

        metrics().redis_errors.labels(request.endpoint or "unmatched").inc()
        log.warning("redis unavailable: %s: %s", type(error).__name__, error)
        breaker = app.extensions["centric"].store_breaker
        breaker.failed()  # the next calls answer at once instead of waiting on Redis too
        return _centric(StoreUnavailable("the data store is unavailable, retry later",
                                         retry_after=breaker.retry_after))

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        fields = {"body": "larger than the configured limit"} if status == 413 else {}
        body = envelope(code, error.description or error.name, fields)
        response = jsonify(body)
        # Keep what the error says about the resource, e.g. Allow on a 405 (RFC 9110).
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response, int]:
        # Bugs still answer with the envelope, never an HTML page or a traceback.
        log.exception("unhandled error")
        body = envelope("internal", "internal error")
        return jsonify(body), 500
