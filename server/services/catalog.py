"""Per-worker cache of experiment definitions and bandit posterior snapshots.

Refreshed at most every `interval` seconds (and at once after a write from this worker): one
pipelined read of the definitions version and the counters of running bandit experiments.
Serving probabilities are computed lazily per segment and kept until the next refresh, so the
decision path itself needs no Redis round trip for them.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from bandits.evidence import evidence
from bandits.learner import Learner
from experiments.model import Experiment, Mode, Status
from server.keys import SHARDS
from server.stores.counters import CounterStore, Counts, fade_per_ms, parse
from server.stores.experiments import ExperimentStore
from server.stores.personas import PersonaStore

# Where traffic goes once an experiment has as many segments as its cap allows.
OTHER_SEGMENT = ("other", "other")


def _segment(member: str) -> tuple[str, str]:
    """(persona, channel) of a registry member 'persona|channel'."""
    persona, _, channel = member.partition("|")
    return persona, channel


class SegmentState(enum.Enum):
    """Whether a (persona, channel) segment may count under its own name."""

    ADMITTED = "admitted"  # in the experiment's registry
    NEW = "new"  # not yet, with plenty of room left: it will surely be admitted
    NEAR = "near"  # not yet, and the registry is nearly full: admit before counting by name
    FULL = "full"  # the registry is full: other/other


# Below this much room in a registry a new segment is counted by name before it is admitted:
# other workers can admit only a few segments within one refresh interval.
ADMISSION_MARGIN = 8


@dataclass
class Snapshot:
    """Definitions, persona rules and counters as of one refresh."""

    version: int
    experiments: dict[str, Experiment]
    counts: dict[str, Counts]
    personas: list[dict[str, Any]] = field(default_factory=list)
    learners: dict[str, Learner] = field(default_factory=dict)
    at_ms: float = 0.0  # wall-clock time of the read: the learning sums are aged to it

    @property
    def persona_names(self) -> list[str]:
        """Persona names in rule order."""
        return [p["name"] for p in self.personas]

    @functools.cached_property
    def named_personas(self) -> frozenset[str]:
        """Personas the product owners named: in the rules or in an audience."""
        named = {*self.persona_names}
        named.update(p for e in self.experiments.values() for p in e.audience.personas)
        return frozenset(named)

    @property
    def persona_rules_json(self) -> str:
        """The rules as the decide script takes them ('' when there are none)."""
        return json.dumps(self.personas, separators=(",", ":")) if self.personas else ""

    @property
    def running(self) -> list[Experiment]:
        """Running experiments in key order."""
        return [e for e in self.experiments.values() if e.status is Status.RUNNING]


class Catalog:
    """Holds the current Snapshot of one worker."""

    def __init__(
        self,
        experiments: ExperimentStore,
        counters: CounterStore,
        personas: PersonaStore,
        rng: np.random.Generator,
        interval: float,
        monotonic: Callable[[], float] = time.monotonic,
        max_segments: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._experiments = experiments
        self._counters = counters
        self._personas = personas
        self._rng = rng
        self._interval = interval
        self._monotonic = monotonic
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._checked = -math.inf
        self._lock = threading.Lock()
        self.max_segments = max_segments
        # Segments known to be admitted, and experiments whose registry is full, per
        # (experiment, seed); the registry in Redis only grows, so this never goes stale.
        self._admitted: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._full: set[tuple[str, str]] = set()

    def segment(self, experiment: Experiment, persona: str, channel: str) -> SegmentState:
        """Whether a segment is admitted, new, or beyond a full registry.

        Callers may invent personas and channels; each (experiment, persona, channel) makes
        counters that live as long as the experiment, so an experiment holds at most
        `max_segments` of them and any further traffic learns and counts as other/other.
        """
        ident = (experiment.key, experiment.seed)
        admitted = self._admitted.get(ident, set())
        if (persona, channel) in admitted:
            return SegmentState.ADMITTED
        if ident in self._full or (persona, channel) == OTHER_SEGMENT:
            return SegmentState.FULL
        if len(admitted) + ADMISSION_MARGIN < self.max_segments:
            return SegmentState.NEW
        return SegmentState.NEAR

    def admit(self, experiment: Experiment, persona: str, channel: str) -> bool:
        """Register a segment in the experiment's registry; False when full or unreachable."""
        ident = (experiment.key, experiment.seed)
        try:
            ok = self._experiments.admit_segment(experiment, persona, channel,
                                                 self.max_segments)
        except RedisError:
            return False  # not admitted: this visitor counts as other/other
        if ok:
            self._learn(ident, [(persona, channel)])
        else:
            self._full.add(ident)
        return ok

    def _load_registries(self, running: list[Experiment]) -> None:
        """Read the admitted segments of these experiments (after definitions changed)."""
        pipe = self._experiments.client.pipeline(transaction=False)
        for e in running:
            pipe.smembers(self._experiments.keys.segments(e.key, e.seed))
        for e, members in zip(running, pipe.execute() if running else [], strict=True):
            self._learn((e.key, e.seed), [_segment(str(m)) for m in members])

    def _learn(self, ident: tuple[str, str], segments: list[tuple[str, str]]) -> None:
        admitted = self._admitted.setdefault(ident, set())
        for segment in segments:
            if len(admitted) < self.max_segments:
                admitted.add(segment)
        if len(admitted) >= self.max_segments:
            self._full.add(ident)

    def invalidate(self) -> None:
        """Force a refresh on the next read (after this worker changed a definition)."""
        self._checked = -math.inf

    @property
    def last(self) -> Snapshot | None:
        """The newest snapshot read so far (possibly stale), without touching Redis."""
        return self._snapshot

    def fresh(self) -> Snapshot:
        """A snapshot read from Redis now (when the cached one proved stale)."""
        self.invalidate()
        return self.snapshot()

    def snapshot(self) -> Snapshot:
        """The current snapshot, refreshed if older than the interval."""
        if self._snapshot is None or self._monotonic() - self._checked >= self._interval:
            with self._lock:
                if self._snapshot is None or self._monotonic() - self._checked >= self._interval:
                    self._refresh()
        assert self._snapshot is not None
        return self._snapshot

    def _refresh(self) -> None:
        known = self._snapshot
        running = known.running if known else []
        bandits = [e for e in running if e.mode is Mode.BANDIT]
        pipe = self._experiments.client.pipeline(transaction=False)
        pipe.get(self._experiments.keys.config_version)
        for e in bandits:
            for key in self._counters.keys.all_counters(e.key, e.seed):
                pipe.hgetall(key)
        # Segments other workers admitted: known here within one refresh interval.
        for e in running:
            pipe.smembers(self._experiments.keys.segments(e.key, e.seed))
        answers = pipe.execute()
        registries = answers[len(answers) - len(running):]
        answers = answers[:len(answers) - len(running)]
        for e, members in zip(running, registries, strict=True):
            self._learn((e.key, e.seed), [_segment(str(m)) for m in members])
        version = int(answers[0] or 0)
        if known is not None and version == known.version:
            counts = {
                e.key: parse(answers[1 + i * SHARDS:1 + (i + 1) * SHARDS])
                for i, e in enumerate(bandits)
            }
            self._snapshot = Snapshot(version, known.experiments, counts, known.personas,
                                      at_ms=self._clock() * 1000.0)
        else:
            version, loaded = self._experiments.load_all()
            experiments = {e.key: e for e in loaded}
            live = [e for e in loaded if e.status is Status.RUNNING and e.mode is Mode.BANDIT]
            self._snapshot = Snapshot(version, experiments, self._counters.read_many(live),
                                      self._personas.get(), at_ms=self._clock() * 1000.0)
            self._load_registries([e for e in loaded if e.status is Status.RUNNING])
        self._checked = self._monotonic()

    def learner(self, snapshot: Snapshot, experiment: Experiment) -> Learner:
        """The bandit's posteriors as of the snapshot, fitted once per refresh and reused."""
        learner = snapshot.learners.get(experiment.key)
        if learner is None:
            counts = snapshot.counts.get(experiment.key) or Counts()
            fade = fade_per_ms(experiment)
            ev = evidence(counts.learning_cells(experiment, snapshot.at_ms), snapshot.at_ms,
                          fade, counts.delays)
            learner = Learner.fit(ev, len(experiment.variants), self._rng,
                                  kind=experiment.metric.kind.value,
                                  pooling=experiment.bandit.pooling,
                                  prior_alpha=experiment.bandit.prior_alpha,
                                  prior_beta=experiment.bandit.prior_beta)
            snapshot.learners[experiment.key] = learner
        return learner

    def allocation(self, snapshot: Snapshot, experiment: Experiment, persona: str,
                   channel: str) -> np.ndarray:
        """Serving probabilities of a bandit experiment's variants in one segment."""
        return self.learner(snapshot, experiment).allocation((persona, channel),
                                                              experiment.bandit.floor)
