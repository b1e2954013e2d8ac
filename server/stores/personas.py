"""Persona rules in Redis: one JSON document under the {P:cfg} tag, versioned with the rest."""

from __future__ import annotations

import json
from typing import Any

import redis

from server.keys import Keyspace


class PersonaStore:
    """Reads and replaces the ordered persona list."""

    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client = client
        self.keys = keys

    def get(self) -> list[dict[str, Any]]:
        """The ordered persona rules ([] when none are defined)."""
        raw = self.client.get(self.keys.personas)
        return json.loads(raw) if raw else []

    def put(self, personas: list[dict[str, Any]]) -> None:
        """Replace the list and bump the definitions version, atomically (one slot)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.personas, json.dumps(personas, separators=(",", ":")))
        pipe.incr(self.keys.config_version)
        pipe.execute()
