"""Identify signatures: the shop's backend vouches for a customer id the browser links."""

from __future__ import annotations

import hashlib
import hmac

from centric_sdk.errors import ConfigurationError


def sign_customer_id(secret: str, customer_id: str) -> str:
    """Lower-case hex HMAC-SHA256 of the id under the server's identify secret."""
    if not isinstance(secret, str) or not secret:
        raise ConfigurationError("secret must be the server's identify secret "
                                 "(`centric identify-secret` prints it)")
    if not isinstance(customer_id, str) or not customer_id:
        raise ConfigurationError("customer_id must be a non-empty string")
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()
