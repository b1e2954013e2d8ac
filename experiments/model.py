"""Frozen dataclasses describing an experiment as the services use it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Mode(StrEnum):
    """How traffic is split: fixed weights or Thompson sampling."""

    AB = "ab"
    BANDIT = "bandit"


class Status(StrEnum):
    """Life cycle of an experiment: draft -> running <-> paused -> stopped."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class MetricKind(StrEnum):
    """Conversion (did it at least once), revenue (sum of values) or a repeat purchase."""

    CONVERSION = "conversion"
    REVENUE = "revenue"
    # A conversion that counts only a purchase after an earlier one, within N days of the
    # exposure: the second purchase a moment's message is meant to win.
    REPEAT = "repeat"

    @property
    def binary(self) -> bool:
        """True when each visitor counts 0 or 1 (conversion and repeat), not a value sum."""
        return self is not MetricKind.REVENUE


@dataclass(frozen=True, slots=True)
class Variant:
    """One arm: a key, a relative weight and the content payload the caller renders."""

    key: str
    weight: float
    payload: Any = None


@dataclass(frozen=True, slots=True)
class Metric:
    """A named outcome and how it is aggregated."""

    name: str
    kind: MetricKind = MetricKind.CONVERSION
    harmful: str = ""  # guardrails: "increase" or "decrease" is harm; "" = by kind
    within_days: float | None = None  # repeat only: days after the exposure that count


@dataclass(frozen=True, slots=True)
class Audience:
    """Who may enter: personas, channels (empty = any) and attribute rules (all must hold)."""

    personas: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    rules: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class BanditSettings:
    """How the bandit learns: pooling across segments, fading evidence, prior and floor."""

    prior_alpha: float = 1.0  # the Beta prior when pooling is "none"
    prior_beta: float = 1.0
    floor: float = 0.01
    pooling: str = "auto"  # "auto": segments borrow from each other; "none": each alone
    half_life_hours: float | None = 2160.0  # evidence weight halves every 90 days; None: never


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    """When the report says ship: error rate, chance to be best, threshold of caring, ROPE, n."""

    chance_to_be_best: float = 0.95
    # Both are fractions of the control's mean (0.01 = 1% of it), so they fit any metric.
    loss_threshold: float = 0.01
    rope: float = 0.05
    min_exposures: int = 100
    alpha: float = 0.05  # chance of ever shipping a variant that is not better, at any look
    effect_scale: float = 0.25  # relative uplift the always-valid test is tuned to find

    def __post_init__(self) -> None:
        if not 0.0 < self.chance_to_be_best <= 1.0:
            raise ValueError("chance_to_be_best must lie in (0, 1]")
        if self.loss_threshold < 0 or self.rope < 0 or self.min_exposures < 0:
            raise ValueError("loss_threshold, rope and min_exposures must not be negative")
        if not 0.0 < self.alpha < 1.0 or self.effect_scale <= 0:
            raise ValueError("alpha must lie in (0, 1) and effect_scale be positive")


_TRANSITIONS: dict[str, dict[Status, frozenset[Status]]] = {
    "start": {Status.RUNNING: frozenset({Status.DRAFT, Status.PAUSED})},
    "pause": {Status.PAUSED: frozenset({Status.RUNNING})},
    "stop": {Status.STOPPED: frozenset({Status.RUNNING, Status.PAUSED})},
}


def allowed_sources(action: str) -> tuple[Status, frozenset[Status]]:
    """Return (target status, statuses it may be reached from) for a status action."""
    ((target, sources),) = _TRANSITIONS[action].items()
    return target, sources


@dataclass(frozen=True, slots=True)
class Experiment:
    """An experiment definition plus its lifecycle state."""

    key: str
    name: str
    variants: tuple[Variant, ...]
    control: str
    metric: Metric
    mode: Mode = Mode.BANDIT
    hypothesis: str = ""
    guardrails: tuple[Metric, ...] = ()
    audience: Audience = field(default_factory=Audience)
    coverage: float = 1.0
    holdout: float = 0.0
    attribution_window_hours: float = 168.0
    bandit: BanditSettings = field(default_factory=BanditSettings)
    decision: DecisionSettings = field(default_factory=DecisionSettings)
    status: Status = Status.DRAFT
    winner: str | None = None
    seed: str = ""
    revision: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    stopped_at: float | None = None

    @property
    def variant_keys(self) -> tuple[str, ...]:
        """Variant keys in definition order."""
        return tuple(v.key for v in self.variants)

    def variant(self, key: str) -> Variant:
        """Return the variant with this key (KeyError if absent)."""
        for v in self.variants:
            if v.key == key:
                return v
        raise KeyError(key)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """Primary metric first, then guardrails."""
        return (self.metric, *self.guardrails)

    @property
    def normalised_weights(self) -> tuple[float, ...]:
        """Variant weights scaled to sum to one."""
        total = sum(v.weight for v in self.variants)
        return tuple(v.weight / total for v in self.variants)

    def with_changes(self, **changes: Any) -> Experiment:
        """Return a copy with some fields replaced."""
        return replace(self, **changes)

    def locked_changes(self, other: Experiment) -> tuple[str, ...]:
        """The fields a running experiment locks that `other` changes.

        Arms, mode and metrics define what the counters mean; the decision rule, because
        the verdict's error rate holds for one rule read at every look, and changing alpha
        or a threshold halfway would let an analyst shop for a "ship".
        """
        locked = ("variants", "control", "mode", "metric", "guardrails", "decision")
        return tuple(name for name in locked if getattr(self, name) != getattr(other, name))
