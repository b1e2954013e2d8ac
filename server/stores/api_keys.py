"""API keys: stored only as SHA-256 digests, looked up by digest."""

from __future__ import annotations

import secrets
import time

import redis

from server.keys import Keyspace, hash_api_key

ROLES = ("sdk", "admin")
PREFIXES = {"sdk": "csk_", "admin": "cak_"}


class ApiKeyStore:
    """Creates, finds and revokes API keys."""

    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client = client
        self.keys = keys

    def create(self, role: str, name: str = "") -> str:
        """Create a key for a role and return it in the clear (the only time it is visible)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        raw = PREFIXES[role] + secrets.token_urlsafe(32)
        self.client.hset(
            self.keys.api_key(hash_api_key(raw)),
            mapping={"role": role, "name": name, "created_at": f"{time.time():.3f}"},
        )
        return raw

    def role_of(self, raw_key: str) -> str | None:
        """Role of a presented key, or None when unknown."""
        return self.role_of_digest(hash_api_key(raw_key))

    def role_of_digest(self, digest: str) -> str | None:
        """Role of the key with this SHA-256 digest, or None when unknown."""
        role = self.client.hget(self.keys.api_key(digest), "role")
        return role if role in ROLES else None

    def revoke(self, raw_key: str) -> bool:
        """Delete a key; True if it existed."""
        return bool(self.client.delete(self.keys.api_key(hash_api_key(raw_key))))
