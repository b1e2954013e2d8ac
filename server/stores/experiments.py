"""Experiment definitions in Redis: read, and compare-and-set writes that bump the version.

Every write records its audit entry in the same script: a refused write records nothing, and
no change is ever left unrecorded.
"""

from __future__ import annotations

import json

import redis

from experiments.codec import from_dict, to_dict
from experiments.model import Experiment
from server.keys import Keyspace
from server.scripts import Scripts
from server.stores.audit import AuditEntry, AuditLog


class ExperimentStore:
    """Persists experiment definitions under the {P:cfg} hash tag."""

    def __init__(self, client: redis.Redis, keys: Keyspace, scripts: Scripts,
                 audit: AuditLog | None = None) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.audit = audit  # None: a read-only store (the decision path's cache, the CLI)

    def get(self, key: str) -> Experiment | None:
        """One experiment, or None."""
        raw = self.client.hget(self.keys.experiment(key), "json")
        return from_dict(json.loads(raw)) if raw else None

    def load_all(self) -> tuple[int, list[Experiment]]:
        """(version, every experiment sorted by key) for a cache refresh."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.config_version)
        pipe.smembers(self.keys.experiments_index)
        version_raw, names = pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        for name in sorted(names):
            pipe.hget(self.keys.experiment(name), "json")
        raws = pipe.execute() if names else []
        return int(version_raw or 0), [from_dict(json.loads(r)) for r in raws if r]

    def put(self, experiment: Experiment, expected_revision: int | None,
            entry: AuditEntry) -> bool:
        """Write if the stored revision is expected_revision (None: must not exist yet)."""
        expected = -1 if expected_revision is None else expected_revision
        return self._cas(experiment.key, expected, experiment.revision,
                         json.dumps(to_dict(experiment)), entry)

    def delete(self, experiment: Experiment, entry: AuditEntry) -> bool:
        """Delete the definition and its counters and logs if the revision still matches."""
        if not self._cas(experiment.key, experiment.revision, 0, "", entry):
            return False
        # Per-shard keys live in 16 slots: delete them one by one (cluster-safe). They are
        # keyed by the seed, so a straggling write from a worker's stale cache can never leak
        # into a re-created experiment.
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys.experiment_keys(experiment.key, experiment.seed):
            pipe.delete(key)
        pipe.delete(self.keys.segments(experiment.key, experiment.seed))
        pipe.execute()
        return True

    def admit_segment(self, experiment: Experiment, persona: str, channel: str,
                      cap: int) -> bool:
        """Add a segment to the experiment's registry; False when it already holds `cap`."""
        key = self.keys.segments(experiment.key, experiment.seed)
        return bool(self.scripts.admit_segment(keys=[key], args=[f"{persona}|{channel}", cap]))

    def _cas(self, key: str, expected: int, revision: int, body: str,
             entry: AuditEntry) -> bool:
        if self.audit is None:
            raise TypeError("this experiment store is read-only: it has no audit log")
        keys = [self.keys.experiment(key), self.keys.experiments_index, self.keys.config_version,
                self.keys.audit_log]
        return bool(self.scripts.put_experiment(
            keys=keys, args=[expected, revision, body, key, *self.audit.script_args(entry)]))
