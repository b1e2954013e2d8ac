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
import tempfile
from pathlib import Path

FILE_NAME = "identify-secret"


def load(configured: str, data_dir: Path) -> str:
    """The configured secret, else the one kept in the data directory (made on first use)."""
    if configured:
        return configured
    path = data_dir / FILE_NAME
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: a worker starting at the
    # same moment either finds no file or the complete one, and link() lets exactly one win.
    fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=".identify-secret-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        os.chmod(temporary, 0o600)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    return _read(path)


def _read(path: Path) -> str:
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty: delete it to make a new identify secret, or set "
                           "CENTRIC_IDENTIFY_SECRET")
    return secret


def message(id_type: str, value: str, visitor_id: str = "", expires: int | None = None) -> str:
    """What is signed for a known id.

    A customer id is signed as itself; an e-mail hash as ``email_sha256:<hash>``, so a
    signature made for one can never pass for the other. The bound form adds the visitor id
    the page will send and an expiry (epoch seconds), each on its own line: such a signature
    works for that one browser and only until then, so one that leaks is worth little.
    """
    base = value if id_type == "customer_id" else f"{id_type}:{value}"
    if expires is None:
        return base
    return f"{base}\n{visitor_id}\n{expires}"


def sign(secret: str, value: str, id_type: str = "customer_id", visitor_id: str = "",
         expires: int | None = None) -> str:
    """Hex HMAC-SHA256 of a known id's message under the secret (what the backend computes)."""
    text = message(id_type, value, visitor_id, expires)
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, value: str, signature: str, id_type: str = "customer_id",
           visitor_id: str = "", expires: int | None = None) -> bool:
    """True when `signature` signs this id (and visitor and expiry); constant-time compare."""
    expected = sign(secret, value, id_type, visitor_id, expires)
    return hmac.compare_digest(expected, signature.lower())
