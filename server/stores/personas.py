"""Persona rules in Redis: one JSON document under the {P:cfg} tag, versioned with the rest."""

from __future__ import annotations

import json
from typing import Any

import redis

from server.keys import Keyspace
from server.scripts import Scripts


class PersonaStore:
    """Reads and replaces the ordered persona list."""

    def __init__(self, client: redis.Redis, keys: Keyspace, scripts: Scripts) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts

    def get(self) -> list[dict[str, Any]]:
        """The ordered persona rules ([] when none are defined)."""
        raw = self.client.get(self.keys.personas)
        return json.loads(raw) if raw else []

    def put(self, personas: list[dict[str, Any]]) -> None:
        """Replace the list and bump the definitions version, atomically (one slot)."""
        self.scripts.put_personas(keys=[self.keys.personas, self.keys.config_version],
                                  args=[json.dumps(personas, separators=(",", ":"))])
