"""Identify signatures: the shop's backend vouches for a customer id the browser links."""

from __future__ import annotations

import hashlib
import hmac

from centric_sdk.errors import ConfigurationError


def sign_customer_id(secret: str, customer_id: str, *, visitor_id: str | None = None,
                     expires: int | None = None) -> str:
    """Lower-case hex HMAC-SHA256 of the customer id under the server's identify secret.

    With `visitor_id` and `expires` (epoch seconds) the signature is bound: it works only for
    that visitor id and until then (send `signature_expires=expires` with identify).
    """
    return _sign(secret, "customer_id", customer_id, visitor_id, expires)


def sign_email_sha256(secret: str, email_sha256: str, *, visitor_id: str | None = None,
                      expires: int | None = None) -> str:
    """The signature for linking an e-mail hash (the message is `email_sha256:<hash>`)."""
    return _sign(secret, "email_sha256", email_sha256, visitor_id, expires)


def _sign(secret: str, id_type: str, value: str, visitor_id: str | None,
          expires: int | None) -> str:
    if not isinstance(secret, str) or not secret:
        raise ConfigurationError("secret must be the server's identify secret "
                                 "(`centric identify-secret` prints it)")
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{id_type} must be a non-empty string")
    if (visitor_id is None) != (expires is None):
        raise ConfigurationError("give both visitor_id and expires for a bound signature, "
                                 "or neither")
    # The customer id is signed as itself; other types carry their name so that a signature
    # for one can never pass for another.
    text = value if id_type == "customer_id" else f"{id_type}:{value}"
    if expires is not None:
        text = f"{text}\n{visitor_id}\n{int(expires)}"
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
