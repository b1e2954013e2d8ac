"""A gunicorn sync worker whose own error answers are centric's JSON error envelope.

gunicorn refuses some requests before the app sees them: a request line longer than
``limit_request_line`` (4094 bytes: 414), too many or too large headers (431), a malformed
request line, method or header (400). Out of the box it answers those with an HTML page;
clients of a JSON API should get ``{"error": {"code", "message", "fields"}}`` like every other
error. ``centric serve`` uses this worker; under your own gunicorn::

    gunicorn -k server.gunicorn_worker.JsonErrorWorker 'server.wsgi:make_app()'
"""

from __future__ import annotations

import json
from typing import Any

from gunicorn import util
from gunicorn.workers.sync import SyncWorker

from server.errors import SECURITY_HEADERS, envelope

CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal",
    501: "not_implemented",
}
_MAX_MESSAGE = 200  # gunicorn's messages may quote the offending input: keep them short

# The same protections as the app's own answers.
_HEADERS = "".join(f"{name}: {value}\r\n" for name, value in (
    ("Content-Type", "application/json"), *SECURITY_HEADERS, ("Connection", "close")))


def error_response(status: int, reason: str, message: str) -> bytes:
    """The raw HTTP/1.1 response gunicorn sends for a request it refused, as a JSON envelope."""
    message = message or reason
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    # ASCII: json.dumps escapes the rest.
    body = json.dumps(envelope(CODES.get(status, "http_error"), message)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\n{_HEADERS}"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1", "replace")
    return head + body


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Drop-in for gunicorn.util.write_error that writes the JSON envelope."""
    util.write_nonblock(sock, error_response(status_int, reason, mesg))


class JsonErrorWorker(SyncWorker):  # type: ignore[misc]
    """gunicorn's sync worker, answering the errors gunicorn itself raises with JSON."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Gunicorn's own handling (status, logging, access log), with a JSON body."""
        # gunicorn picks status and reason, logs and then calls util.write_error; only the
        # writer is swapped, so new error kinds of future gunicorn versions are covered too.
        # A sync worker handles one request at a time, so the swap cannot leak to another.
        original = util.write_error
        util.write_error = write_json_error
        try:
            super().handle_error(req, client, addr, exc)
        finally:
            util.write_error = original
