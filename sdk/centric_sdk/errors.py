"""The SDK's exception tree.

CentricError
├── ConfigurationError   bad arguments to Client or a call (programming error: always raised)
├── InvalidRequest       the server refused a call, 4xx other than 429 (fix the call or key)
│   └── AuthenticationError  missing, unknown or under-privileged key (401, 403)
└── TransportError       timeout, connection failure, 5xx, 429 or any other non-2xx answer

decide() raises neither InvalidRequest nor TransportError unless raise_errors=True: it logs a
warning and returns the fallback. identify() always raises InvalidRequest, and raises
TransportError only with raise_errors=True.
"""

from __future__ import annotations

from typing import Any


class CentricError(Exception):
    """Base of every error the SDK raises."""


class ConfigurationError(CentricError, ValueError):
    """The client or a call was given arguments that cannot work."""


class InvalidRequest(CentricError):
    """The server answered 4xx: the request itself is wrong and retrying will not help."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {message} {fields or ''}".strip())
        self.status = status
        self.code = code
        self.fields = fields


class AuthenticationError(InvalidRequest):
    """401 or 403: the key is missing, unknown, or may not make this call."""


class TransportError(CentricError):
    """The server could not be reached in time, or answered 5xx/429: worth retrying.

    `retry_after` is the server's Retry-After in seconds when it sent one (429, 503).
    """

    def __init__(self, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
