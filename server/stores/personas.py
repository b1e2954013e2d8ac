"""Persona rules in Redis: one JSON document under the {P:cfg} tag, versioned with the rest.

A replacement records its audit entry in the same script as the change.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from server.keys import Keyspace
from server.scripts import Scripts
from server.stores.audit import AuditEntry, AuditLog


class PersonaStore:
    """Reads and replaces the ordered persona list."""

    def __init__(self, client: redis.Redis, keys: Keyspace, scripts: Scripts,
                 audit: AuditLog | None = None) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.audit = audit  # None: a read-only store (the decision path's cache)

    def get(self) -> list[dict[str, Any]]:
        """The ordered persona rules ([] when none are defined)."""
        raw = self.client.get(self.keys.personas)
        return json.loads(raw) if raw else []

    def put(self, personas: list[dict[str, Any]], entry: AuditEntry) -> None:
        """Replace the list, bump the definitions version and record the entry, atomically."""
        if self.audit is None:
            raise TypeError("this persona store is read-only: it has no audit log")
        self.scripts.put_personas(
            keys=[self.keys.personas, self.keys.config_version, self.keys.audit_log],
            args=[json.dumps(personas, separators=(",", ":")),
                  *self.audit.script_args(entry)])
