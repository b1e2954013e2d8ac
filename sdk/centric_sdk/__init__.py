"""Python SDK for centric: `Client(base_url, sdk_key).decide(...)`, `.identify(...)`, `.track(...)`.

Imports nothing from the server; the only dependency is the standard library.
"""

from centric_sdk.client import Client, Decision, Decisions
from centric_sdk.errors import (
    AuthenticationError,
    CentricError,
    ConfigurationError,
    InvalidRequest,
    TransportError,
)
from centric_sdk.transport import Response, Transport, UrllibTransport

__all__ = [
    "AuthenticationError",
    "CentricError",
    "Client",
    "ConfigurationError",
    "Decision",
    "Decisions",
    "InvalidRequest",
    "Response",
    "Transport",
    "TransportError",
    "UrllibTransport",
]
