"""The identify secret: proves that the shop's backend vouched for a customer id.

The shop's backend signs a customer id at login (hex HMAC-SHA256 under this secret) and the
page passes the signature to ``identify``; with the public SDK key nothing else may link a
known customer. The secret is ``CENTRIC_IDENTIFY_SECRET`` when set (required when several
hosts serve one deployment without a shared data directory), otherwise it is generated once
and kept in the data directory (mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

FILE_NAME = "identify-secret"


def load(configured: str, data_dir: Path) -> str:
    """The configured secret, else the one kept in the data directory (made on first use)."""
    if configured:
        return configured
    path = data_dir / FILE_NAME
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_hex(32)
    try:
        # O_EXCL: when several workers start at once exactly one secret wins.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(fresh + "\n")
    return fresh


def sign(secret: str, value: str) -> str:
    """Hex HMAC-SHA256 of an id under the secret (what the shop's backend computes)."""
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, value: str, signature: str) -> bool:
    """True when `signature` is the id's HMAC under the secret (constant-time compare)."""
    return hmac.compare_digest(sign(secret, value), signature.lower())
