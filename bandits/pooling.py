"""Empirical-Bayes pooling across segments: a learned prior on which variant is best.

Each segment s has its own posterior for the rates of its variants (independent, from a
weak prior at the experiment's overall rate), and from it P_s(k), the chance that variant
k is best there. What segments share is the answer to "which variant wins": a prior pi over
the winning variant, the distribution of winners across segments, fitted to the other
segments by maximum marginal likelihood (EM over segments, each segment one vote whatever
its size, plus one pseudo-vote per variant):

    P(k is best in s | all data) ∝ P_s(k) * pi_(-s)(k)

pi_(-s) leaves segment s out, so no segment's data counts twice. When segments agree, pi is
peaked and a small segment serves the common winner at once; when they differ, pi is flat and
changes nothing. The tilt is bounded (pi is a probability), so a segment whose own data
clearly points elsewhere keeps its own answer, and a big segment is governed by its own data.
"""

from __future__ import annotations

import numpy as np

# The share of segments that agree on one winner, on a grid. Half the prior mass says
# "no common winner" (share 0), so chance agreement among a few noisy segments early on does
# not tilt them all.
SHARES = np.linspace(0.0, 0.95, 20)
LOG_PRIOR = np.log(np.r_[0.5 * (len(SHARES) - 1), np.full(len(SHARES) - 1, 0.5)]
                   / (len(SHARES) - 1))


def winner_prior(p_best: np.ndarray) -> np.ndarray:
    """The prior on each segment's winner, learned from the other segments.

    Model: a share rho of the segments have one common winner w; the others' winners are
    spread evenly. pi = rho * onehot(w) + (1 - rho) / K. With p_best[s, k] (segment s's
    own P(k is best)) standing for the likelihood of "k wins in s", the posterior over
    (w, rho) is proportional to prod_s sum_k p_best[s, k] * pi[k]; pi is averaged over it.
    Returns pi for every segment from the others (leaving it out), and as a last row pi
    from all segments (for a segment with no evidence yet).
    """
    segments, k = p_best.shape
    if segments == 0 or k < 2:
        return np.full((segments + 1, max(k, 1)), 1.0 / max(k, 1))
    own = np.clip(p_best, 1e-12, None)
    own = own / own.sum(axis=1, keepdims=True)
    # term[s, w, r] = log sum_k own[s, k] * pi_(w, r)[k] = log((1 - r) / K + r * own[s, w])
    rho = SHARES[None, None, :]
    term = np.log((1.0 - rho) / k + rho * own[:, :, None])
    total = term.sum(axis=0)  # w x r
    grid = np.full((k, len(SHARES), k), 0.0)  # pi over (w, r): the prior each pair implies
    grid += ((1.0 - SHARES) / k)[None, :, None]
    grid[np.arange(k), :, np.arange(k)] += SHARES[None, :]
    out = np.empty((segments + 1, k))
    for s in range(segments + 1):
        log_post = total - (term[s] if s < segments else 0.0) + LOG_PRIOR[None, :]
        post = np.exp(log_post - log_post.max())
        post /= post.sum()
        out[s] = np.einsum("wr,wrk->k", post, grid)
    return out
