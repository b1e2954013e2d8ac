"""The SDK's exception tree.

CentricError
├── ConfigurationError   bad arguments to Client (programming error: always raised)
├── InvalidRequest       the server refused a call as malformed, 4xx (programming error)
│   └── AuthenticationError  missing, unknown or under-privileged key (401, 403)
└── TransportError       timeout, connection failure, 5xx, 429: raised only with
                         raise_errors=True; otherwise decide falls back to control
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
    """401 or 403: the key is missing, unknown, or may not call this endpoint."""


class TransportError(CentricError):
    """The server could not be reached in time, or answered 5xx/429: worth retrying."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
