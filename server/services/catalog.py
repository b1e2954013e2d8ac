"""Per-worker cache of experiment definitions and bandit posteriors.

Definitions are checked at most every `interval` seconds (and at once after a write from this
worker): one pipelined read of the definitions version and the segment registries, cheap
enough for the decision path. Posteriors (every running bandit's counters, read from all
shards, and the learner fitted on them) cost tens of milliseconds, more than a decide may
wait, so they are refreshed every `posterior_interval` seconds by a short-lived background
thread while decide keeps serving from the previous fit. The decision path itself never
reads counters or fits a learner.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from redis.exceptions import RedisClusterException, RedisError

from bandits.evidence import evidence
from bandits.learner import Learner
from experiments.model import Experiment, Mode, Status
from server.stores.counters import CounterStore, Counts, fade_per_ms
from server.stores.experiments import ExperimentStore
from server.stores.personas import PersonaStore

# Where traffic goes once an experiment has as many segments as its cap allows.
OTHER_SEGMENT = ("other", "other")
log = logging.getLogger("centric")


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


@dataclass(frozen=True, slots=True)
class Serving:
    """Serving probabilities in variant order, as sent to Redis and as drawn from."""

    probabilities: tuple[float, ...]
    text: str  # ','-joined exact reprs
    cumulative: tuple[float, ...]  # running sums, for bandits.choose

    @classmethod
    def of(cls, q: Any) -> Serving:
        """From any sequence of probabilities."""
        values = tuple(float(x) for x in q)
        return cls(values, ",".join(repr(x) for x in values),
                   tuple(float(x) for x in np.cumsum(values)))


@dataclass(frozen=True, slots=True)
class Posterior:
    """A bandit's learner, and the definition it was fitted for."""

    experiment: Experiment
    learner: Learner
    # Allocations per segment, computed on first use and kept while this fit lives.
    servings: dict[tuple[str, str], Serving] = field(default_factory=dict, compare=False)


def fit_posterior(experiment: Experiment, counts: Counts, at_ms: float,
                  rng: np.random.Generator) -> Learner:
    """The bandit's posteriors on its counters as read at `at_ms` (wall clock, ms)."""
    fade = fade_per_ms(experiment)
    ev = evidence(counts.learning_cells(experiment, at_ms), at_ms, fade, counts.delays)
    return Learner.fit(ev, len(experiment.variants), rng, kind=experiment.metric.kind.value,
                       pooling=experiment.bandit.pooling,
                       prior_alpha=experiment.bandit.prior_alpha,
                       prior_beta=experiment.bandit.prior_beta)


@dataclass
class Snapshot:
    """Definitions, persona rules and bandit posteriors as of one refresh."""

    version: int
    experiments: dict[str, Experiment]
    posteriors: dict[str, Posterior] = field(default_factory=dict)
    personas: list[dict[str, Any]] = field(default_factory=list)
    # What callers derive from these definitions once per snapshot (decide's plans).
    memo: dict[Any, Any] = field(default_factory=dict)

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

    @functools.cached_property
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
        posterior_interval: float = 0.0,
        background: bool = False,
    ) -> None:
        self._experiments = experiments
        self._counters = counters  # read outside any decide budget
        self._personas = personas
        # Fits may run on a background thread: a Generator is not safe to share across threads.
        self._rng = rng.spawn(1)[0]
        self._interval = interval
        self._posterior_interval = posterior_interval
        self._background = background
        self._monotonic = monotonic
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._checked = -math.inf
        self._fitted = -math.inf  # when posteriors were last read (monotonic)
        self._fitting = False  # a background refresh of the posteriors is under way
        self._lock = threading.Lock()
        self._swap = threading.Lock()  # guards replacing the snapshot
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
        """The current snapshot, its definitions refreshed if older than the interval."""
        if self._snapshot is None or self._monotonic() - self._checked >= self._interval:
            with self._lock:
                if self._snapshot is None or self._monotonic() - self._checked >= self._interval:
                    self._refresh()
        if self._monotonic() - self._fitted >= self._posterior_interval:
            if self._background:
                self._fit_in_background()
            else:
                with self._lock:
                    if self._monotonic() - self._fitted >= self._posterior_interval:
                        self.refresh_posteriors()
        assert self._snapshot is not None
        return self._snapshot

    def _refresh(self) -> None:
        known = self._snapshot
        pipe = self._experiments.client.pipeline(transaction=False)
        pipe.get(self._experiments.keys.config_version)
        running = known.running if known else []
        # Segments other workers admitted: known here within one refresh interval.
        for e in running:
            pipe.smembers(self._experiments.keys.segments(e.key, e.seed))
        answers = pipe.execute()
        for e, members in zip(running, answers[1:], strict=True):
            self._learn((e.key, e.seed), [_segment(str(m)) for m in members])
        version = int(answers[0] or 0)
        if known is None or version != known.version:
            version, loaded = self._experiments.load_all()
            personas = self._personas.get()
            self._load_registries([e for e in loaded if e.status is Status.RUNNING])
            with self._swap:
                # Posteriors of unchanged definitions are kept (Catalog.learner checks);
                # new or changed bandits are fitted at the next posterior refresh, now.
                kept = self._snapshot.posteriors if self._snapshot else {}
                self._snapshot = Snapshot(version, {e.key: e for e in loaded}, kept, personas)
            self._fitted = -math.inf
        self._checked = self._monotonic()

    def _fit_in_background(self) -> None:
        with self._lock:
            if self._fitting:
                return
            self._fitting = True
        threading.Thread(target=self._background_fit, name="centric-posteriors",
                         daemon=True).start()

    def _background_fit(self) -> None:
        try:
            self.refresh_posteriors()
        except Exception as error:
            # Decide keeps the previous fit. Nothing above this thread would report the
            # error, and a refit that fails must wait an interval, not run on every request.
            if isinstance(error, RedisError | RedisClusterException):
                log.warning("posterior refresh failed: %s: %s", type(error).__name__, error)
            else:
                log.exception("posterior refresh failed")
            self._fitted = self._monotonic()
        finally:
            self._fitting = False

    def refresh_posteriors(self) -> None:
        """Read every running bandit's counters and fit its learner (outside any budget)."""
        current = self._snapshot
        if current is None:
            return
        bandits = [e for e in current.running if e.mode is Mode.BANDIT]
        counts = self._counters.read_many(bandits)
        at_ms = self._clock() * 1000.0
        posteriors = {e.key: Posterior(e, fit_posterior(e, counts[e.key], at_ms, self._rng))
                      for e in bandits}
        with self._swap:
            assert self._snapshot is not None
            self._snapshot = replace(self._snapshot, posteriors=posteriors,
                                     memo=self._snapshot.memo)
            # Definitions that changed while this fit ran are fitted at the next read, not
            # an interval later (until then Catalog.learner serves them from their prior).
            if self._snapshot.version == current.version:
                self._fitted = self._monotonic()

    def _posterior(self, snapshot: Snapshot, experiment: Experiment) -> Posterior:
        posterior = snapshot.posteriors.get(experiment.key)
        if posterior is None or (posterior.experiment is not experiment
                                 and posterior.experiment != experiment):
            posterior = Posterior(experiment, fit_posterior(
                experiment, Counts(), self._clock() * 1000.0, self._rng))
            snapshot.posteriors[experiment.key] = posterior
        return posterior

    def learner(self, snapshot: Snapshot, experiment: Experiment) -> Learner:
        """The bandit's posteriors as of the last posterior refresh.

        A bandit not fitted yet (this worker just started, or the definition just changed)
        is served from its prior until the refresh under way lands.
        """
        return self._posterior(snapshot, experiment).learner

    def serving(self, snapshot: Snapshot, experiment: Experiment, persona: str,
                channel: str) -> Serving:
        """A bandit's serving probabilities in one segment, computed once per fit."""
        posterior = self._posterior(snapshot, experiment)
        segment = (persona, channel)
        serving = posterior.servings.get(segment)
        if serving is None:
            serving = Serving.of(posterior.learner.allocation(segment, experiment.bandit.floor))
            posterior.servings[segment] = serving
        return serving

    def allocation(self, snapshot: Snapshot, experiment: Experiment, persona: str,
                   channel: str) -> np.ndarray:
        """Serving probabilities of a bandit experiment's variants in one segment."""
        return np.asarray(self.serving(snapshot, experiment, persona, channel).probabilities)
