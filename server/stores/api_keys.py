"""API keys: stored only as SHA-256 digests, looked up by digest, listed through an index.

A key's record (``{P:auth}:key:<sha256>``) holds its ``role``, ``name``, ``created_at``, a
non-secret ``display`` prefix (the first characters of the key, e.g. ``csk_AbCdEf``) and
``last_used``; the set ``{P:auth}:keys`` indexes the digests so that keys can be listed
without scanning the keyspace. Both share the ``{P:auth}`` hash tag (one cluster slot).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ResponseError

from server.keys import Keyspace, hash_api_key

ROLES = ("sdk", "server", "viewer", "admin")
PREFIXES = {"sdk": "csk_", "server": "cbk_", "viewer": "cvk_", "admin": "cak_"}
DISPLAY_CHARS = 10  # role prefix + 6 random characters: 36 bits to tell keys apart, no secret
MAX_NAME = 64

# One round trip for the lookup and the last-use stamp (the decision path checks keys with
# it). Re-adding the digest to the index heals keys made before the index existed.
_LOOKUP = """
local role = redis.call('HGET', KEYS[1], 'role')
if role then
  redis.call('HSET', KEYS[1], 'last_used', ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
end
return role
"""


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What may be shown about a key: never the key itself (`display` is "" for old keys)."""

    digest: str
    role: str
    name: str
    display: str
    created_at: float | None
    last_used: float | None

    @property
    def shown(self) -> str:
        """The display prefix; keys made before prefixes were kept show only their role's."""
        return self.display or PREFIXES.get(self.role, "") + "?"


class AmbiguousKey(LookupError):
    """A name or display prefix matches more than one key."""

    def __init__(self, query: str, matches: list[ApiKeyInfo]) -> None:
        super().__init__(f"'{query}' matches {len(matches)} keys")
        self.query = query
        self.matches = matches


def _seconds(raw: Any) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _info(digest: str, record: dict[str, Any]) -> ApiKeyInfo:
    return ApiKeyInfo(digest=digest, role=record.get("role", ""), name=record.get("name", ""),
                      display=record.get("display", ""),
                      created_at=_seconds(record.get("created_at")),
                      last_used=_seconds(record.get("last_used")))


class ApiKeyStore:
    """Creates, finds, lists and revokes API keys."""

    def __init__(self, client: redis.Redis, keys: Keyspace,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.keys = keys
        self.clock = clock
        self._lookup = client.register_script(_LOOKUP)

    def create(self, role: str, name: str = "") -> str:
        """Create a key for a role and return it in the clear (the only time it is visible)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if len(name) > MAX_NAME or not name.isprintable():
            raise ValueError(f"name must be at most {MAX_NAME} printable characters")
        raw = PREFIXES[role] + secrets.token_urlsafe(32)
        digest = hash_api_key(raw)
        pipe = self.client.pipeline(transaction=True)  # one slot: record and index together
        pipe.hset(self.keys.api_key(digest), mapping={
            "role": role, "name": name, "created_at": f"{self.clock():.6f}",
            "display": raw[:DISPLAY_CHARS]})
        pipe.sadd(self.keys.api_key_index, digest)
        pipe.execute()
        return raw

    def role_of(self, raw_key: str) -> str | None:
        """Role of a presented key, or None when unknown (a plain read: not a use of the key)."""
        role = self.client.hget(self.keys.api_key(hash_api_key(raw_key)), "role")
        return role if role in ROLES else None

    def role_of_digest(self, digest: str) -> str | None:
        """Role of the key with this SHA-256 digest, or None; records the key's last use."""
        try:
            role = self._lookup(keys=[self.keys.api_key(digest), self.keys.api_key_index],
                                args=[f"{self.clock():.3f}", digest])
        except ResponseError:
            # A replica (read-only during a failover) or a full Redis (OOM under noeviction)
            # refuses the write but can still check the key; the last use is simply not
            # recorded this time.
            role = self.client.hget(self.keys.api_key(digest), "role")
        return role if role in ROLES else None

    def info_of_digest(self, digest: str) -> ApiKeyInfo | None:
        """What may be shown about the key with this digest, or None (a plain read)."""
        record: Any = self.client.hgetall(self.keys.api_key(digest))
        return _info(digest, record) if record else None

    def list(self, scan: bool = False) -> list[ApiKeyInfo]:
        """Every indexed key, oldest first; `scan` also finds (and indexes) unindexed ones."""
        members: Any = self.client.smembers(self.keys.api_key_index)
        digests: set[str] = set(members)
        if scan:
            # Keys made before the index existed and never used since: walk the keyspace once.
            start = len(self.keys.api_key_pattern) - 1
            found = {str(k)[start:] for k in self.client.scan_iter(
                match=self.keys.api_key_pattern, count=1000)}
            if found - digests:
                self.client.sadd(self.keys.api_key_index, *(found - digests))
            digests |= found
        ordered = sorted(digests)
        pipe = self.client.pipeline(transaction=False)
        for digest in ordered:
            pipe.hgetall(self.keys.api_key(digest))
        infos, stale = [], []
        for digest, record in zip(ordered, pipe.execute(), strict=True):
            if record:
                infos.append(_info(digest, record))
            else:
                stale.append(digest)  # deleted behind our back: forget it
        if stale:
            self.client.srem(self.keys.api_key_index, *stale)
        infos.sort(key=lambda i: (i.created_at or 0.0, i.digest))
        return infos

    def find(self, query: str) -> ApiKeyInfo | None:
        """The key given in full, or by its name or display prefix; None when nothing matches.

        Raises AmbiguousKey when a name or prefix matches several keys.
        """
        if not query:
            return None
        info = self.info_of_digest(hash_api_key(query))
        if info is not None:
            return info  # the key itself (indexed or not)
        # Empty names and the missing prefix of keys made before prefixes existed match nothing.
        matches = [i for i in self.list() if query in {i.name, i.display} - {""}]
        if len(matches) > 1:
            raise AmbiguousKey(query, matches)
        return matches[0] if matches else None

    def revoke_digest(self, digest: str) -> bool:
        """Delete the key with this digest; True if it existed."""
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.api_key(digest))
        pipe.srem(self.keys.api_key_index, digest)
        deleted, _ = pipe.execute()
        return bool(deleted)

