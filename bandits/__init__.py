"""Thompson sampling and allocation for Beta/Normal posteriors; pure numpy, no Flask or Redis."""

from bandits.thompson import ArmStats, allocation, apply_floor, choose, prob_best

__all__ = ["ArmStats", "allocation", "apply_floor", "choose", "prob_best"]
