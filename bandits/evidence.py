"""What the bandit learns from: fading, delay-aware evidence per (segment, variant) cell.

Two things make raw counts mislead a bandit:

- **Winners change.** Every exposure and its outcome carry the weight w = 2^(-age / half-life),
  so old evidence fades and a new winner is followed.
- **Outcomes arrive late.** A visitor decided a second ago has had no time to convert. Each
  exposure counts only with the probability F(age) that its conversion, if it comes, has
  arrived: F(a) = 1 - sum_j pi_j exp(-a / theta_j), a mixture of a point mass at zero delay
  and exponential delays with fixed means theta_j. The weights pi are fitted to the delays
  of the conversions seen so far (their Laplace transforms at 1 / theta_j).

Both need only exponentials of the age, so Redis keeps per cell a handful of sums that are
decayed lazily: each holds its value as of the cell's last update time, and whoever adds to
it first multiplies it by exp(-rate * elapsed). No per-exposure history is ever stored, and
the state is the same for every worker and survives restarts. The Lua scripts write these
sums; `CellState.exposed` and `CellState.converted` are their Python twin, and the tests
hold the two to the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import nnls

# Mean delays of the exponential delay components (seconds): 2 and 15 minutes, 1.5 and 9
# hours, 2.25 days, about six times apart, so that the CDF of a delay in between is matched
# to within about 0.1. With the point mass at zero they span instant to about a week.
DELAY_MEANS_SECONDS = (120.0, 900.0, 5400.0, 32400.0, 194400.0)
# Pseudo-conversions spread evenly over the components before any delay is seen: a burst
# of fresh exposures is not read as failures even before the first conversion arrives.
DELAY_PRIOR_WEIGHT = 3.0


def fade_rate(half_life_seconds: float | None) -> float:
    """Decay rate per millisecond of a half-life (0 when evidence never fades)."""
    if not half_life_seconds:
        return 0.0
    return math.log(2.0) / (half_life_seconds * 1000.0)


def kernel_rates(fade: float) -> tuple[float, ...]:
    """Per-ms decay rates of the delay sums: fading plus each delay component's rate."""
    return tuple(fade + 1.0 / (theta * 1000.0) for theta in DELAY_MEANS_SECONDS)


@dataclass(frozen=True, slots=True)
class CellState:
    """The lazily decayed sums of one (segment, variant) cell, as of `at_ms`.

    exposures: sum of w over exposures; pending: per delay component, sum of
    w * exp(-age / theta_j); conversions: sum of w over converted exposures; value and
    value_sq: sum of w * visitor total and of w * (visitor total)^2 changes.
    """

    at_ms: float = 0.0
    exposures: float = 0.0
    pending: tuple[float, ...] = (0.0,) * len(DELAY_MEANS_SECONDS)
    conversions: float = 0.0
    value: float = 0.0
    value_sq: float = 0.0

    def aged(self, now_ms: float, fade: float) -> CellState:
        """The same sums as of now_ms (never backwards: clocks of hosts may disagree)."""
        dt = max(now_ms - self.at_ms, 0.0)
        f = math.exp(-fade * dt)
        pending = tuple(p * math.exp(-rate * dt)
                        for p, rate in zip(self.pending, kernel_rates(fade), strict=True))
        return CellState(max(now_ms, self.at_ms), self.exposures * f, pending,
                         self.conversions * f, self.value * f, self.value_sq * f)

    def exposed(self, now_ms: float, fade: float) -> CellState:
        """Twin of the scripts' update when one visitor is exposed at now_ms."""
        s = self.aged(now_ms, fade)
        return replace(s, exposures=s.exposures + 1.0,
                       pending=tuple(p + 1.0 for p in s.pending))

    def converted(self, now_ms: float, exposed_ms: float, fade: float, converted: float,
                  value: float = 0.0, value_sq: float = 0.0) -> CellState:
        """Twin of the scripts' update for an outcome of a visitor exposed at exposed_ms."""
        s = self.aged(now_ms, fade)
        w = math.exp(-fade * max(now_ms - exposed_ms, 0.0))
        return replace(s, conversions=s.conversions + w * converted, value=s.value + w * value,
                       value_sq=s.value_sq + w * value_sq)


@dataclass(frozen=True, slots=True)
class DelayStats:
    """Delays of the first conversions seen: their count and sum_j of exp(-delay / theta_j)."""

    count: float = 0.0
    laplace: tuple[float, ...] = (0.0,) * len(DELAY_MEANS_SECONDS)

    def observed(self, delay_ms: float) -> DelayStats:
        """Twin of the scripts' update when a conversion arrives delay_ms after exposure."""
        d = max(delay_ms, 0.0) / 1000.0
        return DelayStats(self.count + 1.0, tuple(
            s + math.exp(-d / theta) for s, theta in zip(self.laplace, DELAY_MEANS_SECONDS,
                                                         strict=True)))


def delay_mixture(stats: DelayStats) -> np.ndarray:
    """Weights (pi_0 for no delay, then one per component) fitted to the delays seen.

    Under the mixture, E[exp(-d / theta_k)] = pi_0 + sum_j pi_j * theta_k / (theta_k +
    theta_j). Matching that to the observed means (with the prior's pseudo-conversions
    spread evenly) and asking the weights to sum to one is a small non-negative least
    squares problem.
    """
    thetas = np.array(DELAY_MEANS_SECONDS)
    k = len(thetas)
    prior = np.full(k + 1, 1.0 / (k + 1))
    # The prior's own Laplace means, so that it enters as pseudo-observations.
    design = np.hstack([np.ones((k, 1)), thetas[:, None] / (thetas[:, None] + thetas[None, :])])
    total = stats.count + DELAY_PRIOR_WEIGHT
    means = (np.asarray(stats.laplace) + DELAY_PRIOR_WEIGHT * design @ prior) / total
    # The sum-to-one row is weighted heavily so that it holds almost exactly.
    a = np.vstack([design, 100.0 * np.ones((1, k + 1))])
    y = np.concatenate([means, [100.0]])
    weights, _ = nnls(a, y)
    return weights / weights.sum()


def matured(state: CellState, now_ms: float, fade: float, mixture: np.ndarray) -> float:
    """Effective exposures: sum of w * F(age), the exposures whose outcome could be in."""
    s = state.aged(now_ms, fade)
    waiting = float(np.dot(mixture[1:], s.pending))
    return max(s.exposures - waiting, 0.0)


@dataclass(frozen=True, slots=True)
class Evidence:
    """Effective counts of one experiment: segments x variants arrays, as of one moment."""

    segments: tuple[tuple[str, str], ...]
    exposures: np.ndarray
    conversions: np.ndarray
    value: np.ndarray
    value_sq: np.ndarray

    @classmethod
    def empty(cls, variants: int) -> Evidence:
        """No segment and no data yet."""
        z = np.zeros((0, variants))
        return cls((), z, z.copy(), z.copy(), z.copy())



def evidence(cells: Mapping[tuple[str, str], Sequence[CellState]], now_ms: float, fade: float,
             delays: DelayStats) -> Evidence:
    """Effective counts per segment from the stored sums of every cell."""
    if not cells:
        return Evidence.empty(0)
    mixture = delay_mixture(delays)
    segments = tuple(sorted(cells))
    k = len(next(iter(cells.values())))
    out = np.zeros((4, len(segments), k))
    for i, segment in enumerate(segments):
        for j, state in enumerate(cells[segment]):
            aged = state.aged(now_ms, fade)
            out[0, i, j] = matured(aged, now_ms, fade, mixture)
            out[1, i, j] = aged.conversions
            out[2, i, j] = aged.value
            out[3, i, j] = aged.value_sq
    return Evidence(segments, out[0], out[1], out[2], out[3])
