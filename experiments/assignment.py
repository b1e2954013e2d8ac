"""Deterministic, salted hashing of visitors into coverage, holdout and weighted buckets.

Every function here is a pure function of (experiment seed, visitor id): the same visitor
gets the same answer from every worker, host and restart, which is what makes A/B mode
sticky even before an assignment is stored.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

_SCALE = float(1 << 64)


def unit_hash(seed: str, salt: str, visitor_id: str) -> float:
    """Map (seed, salt, visitor) to a uniform number in [0, 1)."""
    digest = hashlib.sha256(f"{seed}\x1f{salt}\x1f{visitor_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def in_coverage(seed: str, visitor_id: str, coverage: float) -> bool:
    """True when the visitor falls inside the experiment's traffic coverage."""
    return coverage >= 1.0 or unit_hash(seed, "coverage", visitor_id) < coverage


def in_holdout(seed: str, visitor_id: str, holdout: float) -> bool:
    """True when the visitor belongs to the uniform-random holdout group."""
    return holdout > 0.0 and unit_hash(seed, "holdout", visitor_id) < holdout


def weighted_bucket(u: float, weights: Sequence[float]) -> int:
    """Index of the bucket that u in [0, 1) falls into, for positive weights."""
    edges = list(accumulate(weights))
    # Scale u by the total instead of normalising the edges: no rounding drift at the end.
    index = bisect_right(edges, u * edges[-1])
    return min(index, len(weights) - 1)


def ab_variant(seed: str, visitor_id: str, weights: Sequence[float]) -> int:
    """Index of the variant an A/B test gives this visitor."""
    return weighted_bucket(unit_hash(seed, "variant", visitor_id), weights)


def holdout_variant(seed: str, visitor_id: str, n_variants: int) -> int:
    """Index of the uniformly drawn variant a holdout visitor is served."""
    return weighted_bucket(unit_hash(seed, "holdout-variant", visitor_id), [1.0] * n_variants)
