"""Thompson sampling with pooling across segments, fading and delay-aware evidence."""

from bandits.evidence import CellState, DelayStats, Evidence, evidence
from bandits.learner import Learner
from bandits.thompson import apply_floor, choose, prob_best_beta, prob_best_normal

__all__ = ["CellState", "DelayStats", "Evidence", "Learner", "apply_floor", "choose",
           "evidence", "prob_best_beta", "prob_best_normal"]
