"""Thompson sampling as probability matching, with an exploration floor and exact propensities.

A decision is drawn from q = floor + (1 - K * floor) * P(arm is best | data). Sampling an arm
from P(best) is what Thompson sampling does in distribution; computing P(best) explicitly
(Monte Carlo over the posterior snapshot, cached while the snapshot lives) lets every decision
carry the exact probability with which its arm was chosen, which unbiased reports need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_DRAWS = 4000


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Aggregated outcomes of one arm in one segment."""

    exposures: int
    conversions: int
    value_sum: float = 0.0
    value_sq_sum: float = 0.0


def _beta_draws(
    arms: Sequence[ArmStats], alpha: float, beta: float, draws: int, rng: np.random.Generator
) -> np.ndarray:
    a = np.array([alpha + max(s.conversions, 0) for s in arms], dtype=float)
    b = np.array([beta + max(s.exposures - s.conversions, 0) for s in arms], dtype=float)
    return rng.beta(a[:, None], b[:, None], size=(len(arms), draws))


def _revenue_draws(
    arms: Sequence[ArmStats], draws: int, rng: np.random.Generator
) -> np.ndarray:
    # Per-visitor value: a Normal approximation to the posterior of the mean with the pooled
    # variance as a weak prior, so arms with few visitors stay wide instead of collapsing.
    n = np.array([max(s.exposures, 0) for s in arms], dtype=float)
    total_n = max(n.sum(), 1.0)
    pooled_mean = sum(s.value_sum for s in arms) / total_n
    pooled_var = max(sum(s.value_sq_sum for s in arms) / total_n - pooled_mean**2, 1e-9)
    prior_n = 1.0
    means = np.array(
        [(s.value_sum + prior_n * pooled_mean) / (s.exposures + prior_n) for s in arms]
    )
    var = np.array(
        [
            max(s.value_sq_sum / s.exposures - (s.value_sum / s.exposures) ** 2, 0.0)
            if s.exposures > 1
            else pooled_var
            for s in arms
        ]
    )
    var = (var * n + pooled_var * prior_n) / (n + prior_n)
    scale = np.sqrt(var / (n + prior_n))
    return rng.normal(means[:, None], scale[:, None], size=(len(arms), draws))


def prob_best(
    arms: Sequence[ArmStats],
    rng: np.random.Generator,
    *,
    kind: str = "conversion",
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    draws: int = DEFAULT_DRAWS,
) -> np.ndarray:
    """Monte Carlo estimate of P(arm i has the highest mean) for every arm."""
    if len(arms) == 0:
        return np.zeros(0)
    if kind == "revenue":
        samples = _revenue_draws(arms, draws, rng)
    else:
        samples = _beta_draws(arms, prior_alpha, prior_beta, draws, rng)
    wins = np.bincount(np.argmax(samples, axis=0), minlength=len(arms)).astype(float)
    return wins / wins.sum()


def apply_floor(p: np.ndarray, floor: float) -> np.ndarray:
    """Mix p with the uniform distribution so every arm keeps at least `floor` probability."""
    k = len(p)
    floor = min(max(floor, 0.0), 1.0 / k)
    q = floor + (1.0 - k * floor) * p
    return q / q.sum()


def allocation(
    arms: Sequence[ArmStats],
    rng: np.random.Generator,
    *,
    kind: str = "conversion",
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    floor: float = 0.01,
    draws: int = DEFAULT_DRAWS,
) -> np.ndarray:
    """Serving probabilities for each arm: P(best) with the exploration floor applied."""
    p = prob_best(
        arms, rng, kind=kind, prior_alpha=prior_alpha, prior_beta=prior_beta, draws=draws
    )
    return apply_floor(p, floor)


def choose(q: np.ndarray, rng: np.random.Generator) -> int:
    """Draw an arm index from serving probabilities q."""
    u = rng.random()
    index = int(np.searchsorted(np.cumsum(q), u * q.sum(), side="right"))
    return min(index, len(q) - 1)
