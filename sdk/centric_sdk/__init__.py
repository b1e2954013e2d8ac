"""Python SDK for centric: `Client(base_url, key).decide(...)`, `.identify(...)`, `.track(...)`.

Imports nothing from the server; the only dependency is the standard library.
"""

from centric_sdk.client import EXPOSABLE_REASONS, Client, Decision, Decisions, MomentPage
from centric_sdk.errors import (
    AuthenticationError,
    CentricError,
    ConfigurationError,
    InvalidRequest,
    TransportError,
)
from centric_sdk.signing import sign_customer_id, sign_email_sha256
from centric_sdk.transport import Response, Transport, UrllibTransport

__all__ = [
    "EXPOSABLE_REASONS",
    "AuthenticationError",
    "CentricError",
    "Client",
    "ConfigurationError",
    "Decision",
    "Decisions",
    "InvalidRequest",
    "MomentPage",
    "Response",
    "Transport",
    "TransportError",
    "UrllibTransport",
    "sign_customer_id",
    "sign_email_sha256",
]
