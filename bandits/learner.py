"""Per-segment serving probabilities of one experiment, from its evidence as of one refresh.

`Learner.fit` runs once per posterior refresh: it draws every segment's own posterior, and
with pooling fits the prior on the winner across segments (bandits.pooling). Each segment's
allocation is then a lookup. The decide path and the bandit benchmark both call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bandits.evidence import Evidence
from bandits.pooling import winner_prior
from bandits.thompson import (
    DEFAULT_DRAWS,
    apply_floor,
    on_grid,
    prob_best_beta,
    prob_best_normal,
    revenue_posterior,
)

POOLING = ("auto", "none")


@dataclass(frozen=True, slots=True)
class Learner:
    """P(best) of every variant in every segment of one experiment."""

    segments: tuple[tuple[str, str], ...]
    best: np.ndarray  # (segments + 1) x variants; the last row is for an unseen segment

    @classmethod
    def fit(cls, evidence: Evidence, variants: int, rng: np.random.Generator, *,
            kind: str = "conversion", pooling: str = "auto", prior_alpha: float = 1.0,
            prior_beta: float = 1.0, draws: int = DEFAULT_DRAWS) -> Learner:
        """Draw each segment's own posterior, then tilt it by the winner prior if pooling."""
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}")
        if evidence.exposures.shape[0] and evidence.exposures.shape[1] != variants:
            raise ValueError("evidence has another number of variants")
        n = np.maximum(evidence.exposures.reshape(-1, variants), 0.0)
        c = np.clip(evidence.conversions.reshape(-1, variants), 0.0, None)
        if kind != "revenue" and pooling == "auto":
            # A weak prior worth one conversion at the experiment's overall rate: an untried
            # variant starts where the experiment is, not at 50%.
            rate = float(np.clip((c.sum() + 1.0) / (n.sum() + 2.0), 1e-6, 1 - 1e-6))
            prior_alpha, prior_beta = 1.0, (1.0 - rate) / rate
        rows = []
        for i in range(n.shape[0] + 1):
            if i == n.shape[0]:  # an unseen segment: the prior alone
                ni, ci = np.zeros(variants), np.zeros(variants)
                vi = qi = np.zeros(variants)
            else:
                ni, ci = n[i], c[i]
                vi, qi = evidence.value[i], evidence.value_sq[i]
            if kind == "revenue":
                mean, sd = revenue_posterior(ni, vi, qi)
                rows.append(prob_best_normal(mean, sd, rng, draws))
            else:
                rows.append(prob_best_beta(prior_alpha + ci,
                                           prior_beta + np.maximum(ni - ci, 0.0), rng, draws))
        own = np.array(rows)
        if pooling == "auto":
            tilt = winner_prior(own[:-1])
            best = own * tilt
            best /= best.sum(axis=1, keepdims=True)
        else:
            best = own
        return cls(evidence.segments, best)

    def prob_best(self, segment: tuple[str, str]) -> np.ndarray:
        """P(variant is best) in a segment (the prior's answer for a segment not seen yet)."""
        try:
            return self.best[self.segments.index(segment)]
        except ValueError:
            return self.best[-1]

    def allocation(self, segment: tuple[str, str], floor: float) -> np.ndarray:
        """Serving probabilities in a segment: P(best) with the exploration floor, on the grid."""
        return on_grid(apply_floor(self.prob_best(segment), floor))
