"""Defining experiments and moving them through their life cycle, each change audited.

Every change names its `actor` (who asked for it); the store writes the change and its audit
entry in one step, so a refused change (404, 409, 400) records nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from experiments.codec import to_dict
from experiments.model import Experiment, MetricKind, Status, allowed_sources
from server.errors import Conflict, InvalidInput, NotFound
from server.services.catalog import Catalog
from server.stores.audit import AuditEntry
from server.stores.experiments import ExperimentStore

# Bookkeeping that every write moves: not worth naming among a replacement's changes.
_BOOKKEEPING = frozenset({"revision", "updated_at"})


def changed_fields(before: Experiment, after: Experiment) -> list[str]:
    """The top-level fields (as the API names them) that differ between two versions."""
    old, new = to_dict(before), to_dict(after)
    return sorted(name for name in new if name not in _BOOKKEEPING
                  and old.get(name) != new[name])


class ExperimentService:
    """Create, replace, delete and transition experiments with optimistic concurrency."""

    def __init__(self, store: ExperimentStore, catalog: Catalog, clock: Callable[[], float],
                 rng: np.random.Generator, purchase_metric: str = "purchase") -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.rng = rng
        self.purchase_metric = purchase_metric  # the only metric a repeat purchase can be

    def _check_repeat(self, definition: Experiment) -> None:
        """A repeat metric counts purchases, so it must be the purchase metric."""
        for path, m in [("metric", definition.metric)] + [
                (f"guardrails.{i}", g) for i, g in enumerate(definition.guardrails)]:
            if m.kind is MetricKind.REPEAT and m.name != self.purchase_metric:
                raise InvalidInput("a repeat metric counts purchases",
                                   {f"{path}.name": f"must be '{self.purchase_metric}', the "
                                                    "metric that records purchases"})

    def list(self) -> list[Experiment]:
        """Every experiment, sorted by key."""
        return self.store.load_all()[1]

    def get(self, key: str) -> Experiment:
        """One experiment or NotFound."""
        experiment = self.store.get(key)
        if experiment is None:
            raise NotFound(f"no experiment '{key}'", {"key": "unknown experiment"})
        return experiment

    def _entry(self, actor: str, action: str, key: str, details: dict[str, Any]) -> AuditEntry:
        return AuditEntry(at=int(self.clock() * 1000), actor=actor, action=action,
                          target_type="experiment", target=key, details=details)

    def create(self, definition: Experiment, actor: str) -> Experiment:
        """Store a new draft experiment with a fresh assignment seed."""
        self._check_repeat(definition)
        now = self.clock()
        experiment = definition.with_changes(
            status=Status.DRAFT, seed=self.rng.bytes(8).hex(), revision=1,
            created_at=now, updated_at=now,
        )
        entry = self._entry(actor, "create", experiment.key, {
            "revision": 1, "mode": experiment.mode.value,
            "variants": list(experiment.variant_keys)})
        if not self.store.put(experiment, None, entry):
            raise Conflict(f"experiment '{definition.key}' already exists",
                           {"key": "already exists; use PUT to change it"})
        self.catalog.invalidate()
        return experiment

    def replace(self, key: str, definition: Experiment, actor: str) -> Experiment:
        """Replace the definition; variants are locked while the experiment runs."""
        if definition.key != key:
            raise InvalidInput("the key in the body must match the URL",
                               {"key": f"must be '{key}'"})
        self._check_repeat(definition)
        current = self.get(key)
        changed = current.locked_changes(definition) if current.status is Status.RUNNING else ()
        if changed:
            raise Conflict(
                "variants, control, mode, metrics and the decision rule of a running "
                "experiment cannot be changed: pause it first or create a new experiment",
                dict.fromkeys(changed, "locked while the experiment is running"),
            )
        if current.status is Status.STOPPED:
            raise Conflict("a stopped experiment cannot be changed; create a new one",
                           {"status": "stopped"})
        updated = definition.with_changes(
            status=current.status, winner=current.winner, seed=current.seed,
            revision=current.revision + 1, created_at=current.created_at,
            updated_at=self.clock(), started_at=current.started_at,
            stopped_at=current.stopped_at,
        )
        self._write(current, updated, self._entry(actor, "replace", key, {
            "revision": updated.revision, "changed": changed_fields(current, updated)}))
        return updated

    def delete(self, key: str, actor: str) -> None:
        """Delete an experiment that is not running, with its counters."""
        current = self.get(key)
        if current.status is Status.RUNNING:
            raise Conflict("a running experiment cannot be deleted: pause or stop it first",
                           {"status": "running"})
        entry = self._entry(actor, "delete", key, {"revision": current.revision,
                                                   "status": current.status.value})
        if not self.store.delete(current, entry):
            raise Conflict("the experiment changed meanwhile; retry", {"revision": "stale"})
        self.catalog.invalidate()

    def transition(self, key: str, action: str, actor: str,
                   winner: str | None = None) -> Experiment:
        """Apply start, pause or stop (stop may name a winner served to everyone).

        A stop with a winner is recorded as the action ``ship``.
        """
        current = self.get(key)
        target, sources = allowed_sources(action)
        if current.status not in sources:
            raise Conflict(
                f"cannot {action} an experiment that is {current.status.value}",
                {"status": f"is {current.status.value}; {action} needs "
                           + " or ".join(sorted(s.value for s in sources))},
            )
        if winner is not None and winner not in current.variant_keys:
            raise InvalidInput(f"'{winner}' is not a variant of '{key}'",
                               {"winner": f"must be one of {list(current.variant_keys)}"})
        now = self.clock()
        changes: dict[str, object] = {"status": target, "updated_at": now,
                                      "revision": current.revision + 1}
        if target is Status.RUNNING and current.started_at is None:
            changes["started_at"] = now
        if target is Status.STOPPED:
            changes["stopped_at"] = now
            changes["winner"] = winner
        updated = current.with_changes(**changes)
        details: dict[str, Any] = {"revision": updated.revision, "from": current.status.value,
                                   "to": target.value}
        if winner is not None:
            details["winner"] = winner
        self._write(current, updated, self._entry(
            actor, "ship" if winner is not None else action, key, details))
        return updated

    def _write(self, current: Experiment, updated: Experiment, entry: AuditEntry) -> None:
        if not self.store.put(updated, current.revision, entry):
            raise Conflict("the experiment changed meanwhile; retry", {"revision": "stale"})
        self.catalog.invalidate()
