"""Thompson sampling as probability matching, with an exploration floor and exact propensities.

A decision is drawn from q = floor + (1 - K * floor) * P(arm is best | data). Sampling an arm
from P(best) is what Thompson sampling does in distribution; computing P(best) explicitly
(Monte Carlo over the posterior snapshot, cached while the snapshot lives) lets every decision
carry the exact probability with which its arm was chosen, which unbiased reports need.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

DEFAULT_DRAWS = 4000
GRID_STEPS = 1_000_000  # serving probabilities are multiples of 1e-6


def _wins(samples: np.ndarray) -> np.ndarray:
    wins = np.bincount(np.argmax(samples, axis=0), minlength=samples.shape[0]).astype(float)
    return wins / wins.sum()


def prob_best_beta(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                   draws: int = DEFAULT_DRAWS) -> np.ndarray:
    """Monte Carlo P(arm i has the highest rate) for independent Beta(a_i, b_i) posteriors."""
    if len(a) == 0:
        return np.zeros(0)
    return _wins(rng.beta(np.asarray(a, float)[:, None], np.asarray(b, float)[:, None],
                          size=(len(a), draws)))


def prob_best_normal(mean: np.ndarray, sd: np.ndarray, rng: np.random.Generator,
                     draws: int = DEFAULT_DRAWS) -> np.ndarray:
    """Monte Carlo P(arm i has the highest mean) for independent Normal posteriors."""
    if len(mean) == 0:
        return np.zeros(0)
    return _wins(rng.normal(np.asarray(mean, float)[:, None], np.asarray(sd, float)[:, None],
                            size=(len(mean), draws)))


def revenue_posterior(n: np.ndarray, value: np.ndarray, value_sq: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Normal posterior (mean, sd) of each arm's value per visitor, unpooled.

    The experiment's mean and variance act as one visitor's worth of prior, so arms with few
    visitors stay wide instead of collapsing.
    """
    n = np.maximum(np.asarray(n, float), 0.0)
    total_n = max(float(n.sum()), 1.0)
    pooled_mean = float(np.sum(value)) / total_n
    pooled_var = max(float(np.sum(value_sq)) / total_n - pooled_mean**2, 1e-9)
    prior_n = 1.0
    means = (value + prior_n * pooled_mean) / (n + prior_n)
    with np.errstate(invalid="ignore", divide="ignore"):
        own = np.where(n > 1, value_sq / np.maximum(n, 1.0) - (value / np.maximum(n, 1.0)) ** 2,
                       pooled_var)
    var = (np.maximum(own, 0.0) * n + pooled_var * prior_n) / (n + prior_n)
    return means, np.sqrt(var / (n + prior_n))


def apply_floor(p: np.ndarray, floor: float) -> np.ndarray:
    """Mix p with the uniform distribution so every arm keeps at least `floor` probability."""
    k = len(p)
    floor = min(max(floor, 0.0), 1.0 / k)
    q = floor + (1.0 - k * floor) * p
    return q / q.sum()


def on_grid(p: np.ndarray, steps: int = GRID_STEPS) -> np.ndarray:
    """P rounded to multiples of 1/steps that sum to exactly 1 (in units of 1/steps).

    Stored with every assignment, a probability such as 0.24904 takes 7 characters where the
    unrounded 0.24904000000000004 takes 19. The draw then uses these very numbers, so the
    propensities stay exact. The rounding remainder goes to the largest arm, so no arm is
    pushed below the exploration floor.
    """
    units = np.rint(np.asarray(p, dtype=float) * steps).astype(np.int64)
    units[int(np.argmax(units))] += steps - int(units.sum())
    return units / steps


def choose(cumulative: Sequence[float], u: float) -> int:
    """The arm a uniform draw u in [0, 1) picks, from the running sums of the probabilities."""
    # Running sums are computed once per allocation, so a decision costs one bisection.
    index = bisect.bisect_right(cumulative, u * cumulative[-1])
    return min(index, len(cumulative) - 1)
