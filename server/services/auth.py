"""API key checks with a short per-worker cache, so the decision path stays one round trip.

Roles: ``sdk`` keys are public (embedded in pages and apps) and reach only the SDK endpoints
as an anonymous device; ``server`` keys (shop backends) reach the same endpoints by any id
type without a signature; ``viewer`` keys (analysts) reach only the admin endpoints that
change nothing and reveal no visitor's data (``read``); ``admin`` keys reach everything.

A key verified before a Redis outage keeps working while Redis is unreachable, for at most
``stale_seconds`` after its last successful check (stale-on-error), so decide can still answer
with its fallback; a key never verified by this worker cannot be checked then (503). The
first check of a key in a worker may take up to ``first_check_seconds`` (0.25 s) even on
the decision path, so a busy moment does not refuse a valid key.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from server import deadline
from server.errors import Forbidden, RateLimited, StoreUnavailable, Unauthorized
from server.keys import hash_api_key
from server.services.breaker import Breaker
from server.stores.api_keys import DISPLAY_CHARS, ApiKeyStore

_MAX_CACHED = 10_000
# Which roles may call the endpoints of each kind: "sdk" (decide, expose, identify, track),
# "read" (admin reads of experiments, reports, personas and the audit log) and "admin"
# (every change, and anything that reveals a visitor's data). A viewer writes nothing, so
# not even decide, which stores assignments. "trusted" endpoints serve back-end jobs (a moment's
# member list, which names customers): a server or admin key.
ALLOWED = {"sdk": frozenset({"sdk", "server", "admin"}),
           "read": frozenset({"viewer", "admin"}),
           "trusted": frozenset({"server", "admin"}),
           "admin": frozenset({"admin"})}
NEEDS = {"sdk": "an sdk, server or admin key", "read": "an admin or viewer key",
         "trusted": "a server or admin key", "admin": "an admin key"}
TRUSTED = frozenset({"server", "admin"})  # may act by any id type, without a signature


def _bearer(authorization: str | None) -> str:
    """The key of an Authorization header ("" when it is not a bearer key)."""
    scheme, _, raw = (authorization or "").strip().partition(" ")
    return raw.strip() if scheme.lower() == "bearer" else ""


class Authenticator:
    """Resolves bearer keys to roles and checks them against what an endpoint needs."""

    def __init__(self, store: ApiKeyStore, ttl: float,
                 monotonic: Callable[[], float] = time.monotonic, rate: float = 0.0,
                 burst: float = 0.0, fast_store: ApiKeyStore | None = None,
                 breaker: Breaker | None = None, stale_seconds: float = 3600.0,
                 first_check_seconds: float = 0.25,
                 store_breaker: Breaker | None = None) -> None:
        self.store = store
        self.fast_store = fast_store or store  # the decide path's client, within its budget
        self.breaker = breaker or Breaker(0.0)  # the decision path's
        self.store_breaker = store_breaker or Breaker(0.0)  # every other endpoint's
        self.ttl = ttl
        self.stale_seconds = stale_seconds
        self.first_check_seconds = first_check_seconds
        self.monotonic = monotonic
        # digest -> (role, trusted until, last verified at). Unknown keys live apart, so a
        # flood of made-up keys can never push out the keys that stale-on-error relies on.
        self._cache: dict[str, tuple[str, float, float]] = {}
        self._unknown: dict[str, float] = {}  # digest -> trusted until
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

    def role_of(self, digest: str, fast: bool = False) -> str | None:
        """Role of a key digest, cached for `ttl` seconds (never keyed by the raw key)."""
        now = self.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        if self._unknown.get(digest, -math.inf) > now:
            return None
        if fast and self.breaker.open:
            return self._stale(hit, now)  # the store just failed: do not wait on it again
        try:
            if fast and hit is None:
                # A key this worker never saw: give its one check a little more time than
                # the decide budget, so a busy moment does not refuse a valid key.
                with deadline.extended(self.first_check_seconds):
                    role = self.fast_store.role_of_digest(digest)
            else:
                role = (self.fast_store if fast else self.store).role_of_digest(digest)
        except RedisError:
            (self.breaker if fast else self.store_breaker).failed()
            return self._stale(hit, now)
        if role is None:
            self._cache.pop(digest, None)
            if len(self._unknown) >= _MAX_CACHED:
                self._unknown.clear()
            self._unknown[digest] = now + self.ttl
            return None
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()  # only real keys live here: more than this is not expected
        self._cache[digest] = (role, now + self.ttl, now)
        return role

    def _stale(self, hit: tuple[str, float, float] | None, now: float) -> str:
        """The last verified role while the store is unreachable, within the stale limit."""
        if hit is not None and now - hit[2] <= self.stale_seconds:
            return hit[0]
        raise StoreUnavailable("the key cannot be checked while the data store is unavailable",
                               {"authorization": "cannot be verified now; retry"})

    def require(self, authorization: str | None, needed: str, fast: bool = False) -> str:
        """Check an Authorization header against the kind of endpoint; return the key's role."""
        raw = _bearer(authorization)
        if not raw:
            raise Unauthorized("send 'Authorization: Bearer <key>'",
                               {"authorization": "missing bearer key"})
        return self.require_digest(hash_api_key(raw), needed, fast)  # hashed once

    def require_digest(self, digest: str, needed: str, fast: bool = False) -> str:
        """Check a key digest (a console session holds one) against an endpoint's kind."""
        role = self.role_of(digest, fast)
        if role is None:
            raise Unauthorized("unknown API key", {"authorization": "unknown key"})
        if role == "sdk" and self.rate > 0:
            self._spend(digest)
        if role not in ALLOWED[needed]:
            raise Forbidden(f"this endpoint needs {NEEDS[needed]}",
                            {"authorization": f"{role} keys may not call this endpoint"})
        return role

    def actor(self, authorization: str | None) -> str:
        """Who a key (already checked by `require`) is, for the audit log: name and prefix.

        One read of the key's record, made only by endpoints that change something.
        """
        raw = _bearer(authorization)
        return self.actor_of_digest(hash_api_key(raw), raw[:DISPLAY_CHARS])

    def actor_of_digest(self, digest: str, fallback: str = "?") -> str:
        """The audit log's name for a key digest: name and display prefix."""
        info = self.store.info_of_digest(digest)
        if info is None:
            return fallback  # revoked a moment ago
        return f"{info.name} ({info.shown})" if info.name else info.shown
