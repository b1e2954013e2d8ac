"""Defining experiments and moving them through their life cycle."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from experiments.model import Experiment, Status, allowed_sources
from server.errors import Conflict, InvalidInput, NotFound
from server.services.catalog import Catalog
from server.stores.experiments import ExperimentStore


class ExperimentService:
    """Create, replace, delete and transition experiments with optimistic concurrency."""

    def __init__(self, store: ExperimentStore, catalog: Catalog, clock: Callable[[], float],
                 rng: np.random.Generator) -> None:
        self.store = store
        self.catalog = catalog
        self.clock = clock
        self.rng = rng

    def list(self) -> list[Experiment]:
        """Every experiment, sorted by key."""
        return self.store.load_all()[1]

    def get(self, key: str) -> Experiment:
        """One experiment or NotFound."""
        experiment = self.store.get(key)
        if experiment is None:
            raise NotFound(f"no experiment '{key}'", {"key": "unknown experiment"})
        return experiment

    def create(self, definition: Experiment) -> Experiment:
        """Store a new draft experiment with a fresh assignment seed."""
        now = self.clock()
        experiment = definition.with_changes(
            status=Status.DRAFT, seed=self.rng.bytes(8).hex(), revision=1,
            created_at=now, updated_at=now,
        )
        if not self.store.put(experiment, None):
            raise Conflict(f"experiment '{definition.key}' already exists",
                           {"key": "already exists; use PUT to change it"})
        self.catalog.invalidate()
        return experiment

    def replace(self, key: str, definition: Experiment) -> Experiment:
        """Replace the definition; variants are locked while the experiment runs."""
        if definition.key != key:
            raise InvalidInput("the key in the body must match the URL",
                               {"key": f"must be '{key}'"})
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
        self._write(current, updated)
        return updated

    def delete(self, key: str) -> None:
        """Delete an experiment that is not running, with its counters."""
        current = self.get(key)
        if current.status is Status.RUNNING:
            raise Conflict("a running experiment cannot be deleted: pause or stop it first",
                           {"status": "running"})
        if not self.store.delete(current):
            raise Conflict("the experiment changed meanwhile; retry", {"revision": "stale"})
        self.catalog.invalidate()

    def transition(self, key: str, action: str, winner: str | None = None) -> Experiment:
        """Apply start, pause or stop (stop may name a winner served to everyone)."""
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
        self._write(current, updated)
        return updated

    def _write(self, current: Experiment, updated: Experiment) -> None:
        if not self.store.put(updated, current.revision):
            raise Conflict("the experiment changed meanwhile; retry", {"revision": "stale"})
        self.catalog.invalidate()
