"""Creating and revoking API keys, each recorded in the audit log.

Keys live under the ``{P:auth}`` hash tag and the audit log under ``{P:cfg}``: on Redis
Cluster these are different slots, so one transaction cannot hold both. The entry is written
right after the change succeeded; when that write fails the change stands (a created key is
still printed, a revoked key stays revoked) and the failure is logged as a warning, which
the CLI shows on stderr.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from server.stores.api_keys import DISPLAY_CHARS, ApiKeyInfo, ApiKeyStore
from server.stores.audit import AuditEntry, AuditLog

log = logging.getLogger("centric")


class ApiKeyService:
    """Key management with an audit trail: who created or revoked which key, and when."""

    def __init__(self, store: ApiKeyStore, audit: AuditLog,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock

    def create(self, role: str, name: str, actor: str) -> str:
        """Create a key (see ApiKeyStore.create) and record it; return the key in the clear."""
        raw = self.store.create(role, name)
        self._record(actor, "create", raw[:DISPLAY_CHARS], {"role": role, "name": name})
        return raw

    def revoke(self, info: ApiKeyInfo, actor: str) -> bool:
        """Revoke a key found with ApiKeyStore.find; True (and recorded) if it existed."""
        if not self.store.revoke_digest(info.digest):
            return False
        self._record(actor, "revoke", info.shown, {"role": info.role, "name": info.name})
        return True

    def _record(self, actor: str, action: str, target: str, details: dict[str, Any]) -> None:
        entry = AuditEntry(at=int(self.clock() * 1000), actor=actor, action=action,
                           target_type="api_key", target=target, details=details)
        try:
            self.audit.append(entry)
        except RedisError as exc:
            log.warning("API key %s: %s done, but the audit log could not record it: %s: %s",
                        target, action, type(exc).__name__, exc)
