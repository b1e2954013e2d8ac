"""Reading and replacing the ordered persona rules, each replacement audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from server.services.catalog import Catalog
from server.stores.audit import AuditEntry
from server.stores.personas import PersonaStore


def persona_changes(before: list[dict[str, Any]],
                    after: list[dict[str, Any]]) -> dict[str, Any]:
    """A compact summary of a replacement: names added, removed, changed, and reordering."""
    old = {p["name"]: p.get("when") for p in before}
    new = {p["name"]: p.get("when") for p in after}
    kept = [name for name in new if name in old]
    return {
        "count": len(after),
        "added": [name for name in new if name not in old],
        "removed": [name for name in old if name not in new],
        "changed": [name for name in kept if old[name] != new[name]],
        # First match wins: the same rules in another order are a real change.
        "reordered": kept != [name for name in old if name in new],
    }


class PersonaService:
    """The persona rules: read them, or replace them (recorded in the audit log)."""

    def __init__(self, store: PersonaStore, catalog: Catalog,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock

    def get(self) -> list[dict[str, Any]]:
        """The ordered persona rules ([] when none are defined)."""
        return self.store.get()

    def put(self, personas: list[dict[str, Any]], actor: str) -> None:
        """Replace the rules; the entry and the change are written together."""
        # The summary compares with what was read just before: two replacements racing may
        # each describe their change against the same old list, but both are recorded.
        entry = AuditEntry(at=int(self.clock() * 1000), actor=actor, action="replace",
                           target_type="personas", target="personas",
                           details=persona_changes(self.store.get(), personas))
        self.store.put(personas, entry)
        self.catalog.invalidate()
