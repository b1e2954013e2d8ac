"""API key checks with a short per-worker cache, so the decision path stays one round trip."""

from __future__ import annotations

import time
from collections.abc import Callable

from server.errors import Forbidden, RateLimited, Unauthorized
from server.keys import hash_api_key
from server.stores.api_keys import ApiKeyStore

_MAX_CACHED = 10_000


class Authenticator:
    """Resolves bearer keys to roles; admin keys may do everything an SDK key may."""

    def __init__(self, store: ApiKeyStore, ttl: float,
                 monotonic: Callable[[], float] = time.monotonic, rate: float = 0.0,
                 burst: float = 0.0) -> None:
        self.store = store
        self.ttl = ttl
        self.monotonic = monotonic
        self._cache: dict[str, tuple[str | None, float]] = {}
        self.rate = rate  # requests per second per SDK key and worker; 0 = unlimited
        self.burst = burst or max(rate, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}  # digest -> (tokens, at)

    def _spend(self, digest: str) -> None:
        """Token bucket per SDK key: one misbehaving client cannot starve the others."""
        now = self.monotonic()
        tokens, at = self._buckets.get(digest, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[digest] = (tokens, now)
            raise RateLimited("too many requests for this key; slow down",
                              {"authorization": f"at most {self.rate:g} requests per second"})
        if len(self._buckets) >= _MAX_CACHED:
            self._buckets.clear()
        self._buckets[digest] = (tokens - 1.0, now)

    def role_of(self, digest: str) -> str | None:
        """Role of a key digest, cached for `ttl` seconds (never keyed by the raw key)."""
        now = self.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        role = self.store.role_of_digest(digest)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[digest] = (role, now + self.ttl)
        return role

    def require(self, authorization: str | None, needed: str) -> str:
        """Check an Authorization header against the role an endpoint needs."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("send 'Authorization: Bearer <key>'",
                               {"authorization": "missing bearer key"})
        digest = hash_api_key(authorization[len("Bearer "):].strip())  # hashed once
        role = self.role_of(digest)
        if role is None:
            raise Unauthorized("unknown API key", {"authorization": "unknown key"})
        if role == "sdk" and self.rate > 0:
            self._spend(digest)
        if needed == "admin" and role != "admin":
            raise Forbidden("this endpoint needs an admin key",
                            {"authorization": "SDK keys may only decide, identify and track"})
        return role
