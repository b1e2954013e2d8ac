"""Off-policy evaluation from a logged bandit: IPS, self-normalised IPS and doubly robust.

The log is one row per decision: the segment it was made in, the action (variant) served,
the exact probability with which that action was chosen (its propensity) and the reward
that followed. A target policy gives, per segment, the probability of serving each action
(an array segments x actions). The value of a policy is the mean reward per decision it
would get on the logged population of segments.

Estimators, with w_i = pi(a_i | s_i) / p_i the importance weight of row i:

- IPS:   V = mean(w_i * r_i); unbiased whenever p_i is the true probability and p_i > 0
  wherever pi puts mass.
- SNIPS: V = sum(w_i * r_i) / sum(w_i); divides by the realised weight mass instead of its
  expectation n, so a constant added to every reward cancels out: biased by O(1/n), usually
  much less variable than IPS.
- DR:    V = mean(sum_a pi(a | s_i) m(s_i, a) + w_i * (r_i - m(s_i, a_i))), with m a reward
  model (per segment x action mean reward). Unbiased like IPS whatever m is, as long as m
  is fitted without row i; the better m, the smaller the variance.

Every estimate carries a standard error from its per-row influence values (SNIPS through
the delta method) and a normal-approximation confidence interval.

Pure numpy/scipy: no Flask, no Redis, nothing of the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

FOLDS = 2  # cross-fitting folds of the DR reward model


@dataclass(frozen=True, slots=True)
class Log:
    """Logged bandit data: one row per decision, segments and actions as indices."""

    segment: np.ndarray  # int, in [0, n_segments)
    action: np.ndarray  # int, in [0, n_actions)
    propensity: np.ndarray  # probability with which the logged action was chosen, in (0, 1]
    reward: np.ndarray  # float
    n_segments: int
    n_actions: int

    def __post_init__(self) -> None:
        n = len(self.reward)
        if not (len(self.segment) == len(self.action) == len(self.propensity) == n):
            raise ValueError("segment, action, propensity and reward must have one length")
        if self.n_segments < 1 or self.n_actions < 1:
            raise ValueError("there must be at least one segment and one action")
        if n and (self.segment.min() < 0 or self.segment.max() >= self.n_segments):
            raise ValueError("segment index out of range")
        if n and (self.action.min() < 0 or self.action.max() >= self.n_actions):
            raise ValueError("action index out of range")
        # A zero propensity means the row could not have been logged: its weight is infinite.
        if n and not (np.all(self.propensity > 0) and np.all(self.propensity <= 1)):
            raise ValueError("propensities must lie in (0, 1]")
        if not np.all(np.isfinite(self.reward)):
            raise ValueError("rewards must be finite")

    @classmethod
    def of(cls, segment: object, action: object, propensity: object, reward: object,
           n_segments: int | None = None, n_actions: int | None = None) -> Log:
        """Build a Log from array-likes (sizes default to the largest index + 1)."""
        s = np.asarray(segment, dtype=np.int64).reshape(-1)
        a = np.asarray(action, dtype=np.int64).reshape(-1)
        return cls(s, a, np.asarray(propensity, dtype=float).reshape(-1),
                   np.asarray(reward, dtype=float).reshape(-1),
                   n_segments if n_segments is not None else int(s.max(initial=-1)) + 1,
                   n_actions if n_actions is not None else int(a.max(initial=-1)) + 1)

    def __len__(self) -> int:
        return len(self.reward)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A policy value: point estimate, standard error and confidence interval."""

    estimator: str  # "ips", "snips" or "dr"
    estimate: float
    se: float
    lower: float
    upper: float
    n: int  # logged rows used
    level: float = 0.95

    def covers(self, value: float) -> bool:
        """Whether the interval contains `value`."""
        return self.lower <= value <= self.upper


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError("level must lie in (0, 1)")
    return float(stats.norm.ppf(0.5 + level / 2))


def _from_influence(estimator: str, estimate: float, influence: np.ndarray,
                    level: float) -> Estimate:
    """Estimate whose variance is that of the mean of per-row influence values."""
    n = len(influence)
    if n == 0 or not np.isfinite(estimate):
        return Estimate(estimator, float("nan"), float("nan"), float("nan"), float("nan"), n,
                        level)
    se = float(np.std(influence, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    half = _z(level) * se
    return Estimate(estimator, float(estimate), se, float(estimate - half),
                    float(estimate + half), n, level)


def check_policy(log: Log, target: np.ndarray) -> np.ndarray:
    """The target policy as a float array segments x actions, its rows distributions."""
    pi = np.asarray(target, dtype=float)
    if pi.shape != (log.n_segments, log.n_actions):
        raise ValueError(f"target policy must have shape ({log.n_segments}, {log.n_actions}), "
                         f"not {pi.shape}")
    if np.any(pi < 0) or not np.allclose(pi.sum(axis=1), 1.0, atol=1e-9):
        raise ValueError("each row of the target policy must be a probability distribution")
    return pi


def weights(log: Log, target: np.ndarray) -> np.ndarray:
    """Importance weights pi(a_i | s_i) / p_i of the logged rows."""
    pi = check_policy(log, target)
    return pi[log.segment, log.action] / log.propensity


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's effective number of rows, (sum w)^2 / sum w^2 (0 when no weight is positive)."""
    total_sq = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / total_sq if total_sq > 0 else 0.0


def ips_from_weights(w: np.ndarray, reward: np.ndarray, level: float = 0.95) -> Estimate:
    """IPS from importance weights and rewards of the logged rows."""
    terms = w * reward
    return _from_influence("ips", float(terms.mean()) if len(terms) else float("nan"), terms,
                           level)


def snips_from_weights(w: np.ndarray, reward: np.ndarray, level: float = 0.95) -> Estimate:
    """Self-normalised IPS from importance weights and rewards, delta-method interval."""
    total = float(w.sum())
    if len(w) == 0 or total <= 0:
        # The target never serves what was logged: the log says nothing about it.
        return _from_influence("snips", float("nan"), w, level)
    value = float(np.dot(w, reward)) / total
    # Delta method for a ratio of means: V = mean(w r) / mean(w) moves, to first order, by
    # the mean of w_i (r_i - V) / mean(w).
    influence = w * (reward - value) / (total / len(w))
    return _from_influence("snips", value, influence, level)


def ips(log: Log, target: np.ndarray, level: float = 0.95) -> Estimate:
    """Inverse propensity scoring: mean of w_i r_i."""
    return ips_from_weights(weights(log, target), log.reward, level)


def snips(log: Log, target: np.ndarray, level: float = 0.95) -> Estimate:
    """Self-normalised IPS: sum of w_i r_i over sum of w_i."""
    return snips_from_weights(weights(log, target), log.reward, level)


def cell_means(log: Log, rows: np.ndarray | None = None) -> np.ndarray:
    """Mean reward per (segment, action) on some rows, segments x actions.

    A cell without rows takes the action's mean over all segments, then the overall mean,
    then 0: any value fitted without the rows it is applied to keeps DR unbiased, and the
    action's mean is the best guess the same rows allow.
    """
    s, a, r = log.segment, log.action, log.reward
    if rows is not None:
        s, a, r = s[rows], a[rows], r[rows]
    shape = (log.n_segments, log.n_actions)
    cells = s * log.n_actions + a
    size = log.n_segments * log.n_actions
    count = np.bincount(cells, minlength=size).reshape(shape).astype(float)
    total = np.bincount(cells, weights=r, minlength=size).reshape(shape)
    overall = float(r.mean()) if len(r) else 0.0
    per_action_n = count.sum(axis=0)
    per_action = np.where(per_action_n > 0, total.sum(axis=0) / np.maximum(per_action_n, 1),
                          overall)
    return np.where(count > 0, total / np.maximum(count, 1), per_action[None, :])


def folds(n: int, k: int = FOLDS) -> np.ndarray:
    """Fold of each row: rows alternate between the folds in log order."""
    # Alternating rather than a random split: reproducible without a seed, and each fold
    # spans the whole period, so a logging policy that changed over time is in both alike.
    return np.arange(n) % k


def cross_fitted_model(log: Log, k: int = FOLDS) -> np.ndarray:
    """Reward model per row, rows x actions, each row's model fitted on the other folds."""
    fold = folds(len(log), k)
    model = np.empty((len(log), log.n_actions))
    for f in range(k):
        held = fold == f
        # Fitted on the rows of the other folds only: row i's own reward never enters the
        # model it is corrected with, so E[psi_i] = V holds for any model, not just this one.
        model[held] = cell_means(log, ~held)[log.segment[held]]
    return model


def doubly_robust(log: Log, target: np.ndarray, level: float = 0.95,
                  model: np.ndarray | None = None) -> Estimate:
    """Doubly robust: model's value of the target plus the IPS-weighted model residual.

    `model` gives the reward model per row (rows x actions); by default the per-cell means,
    cross-fitted over two folds.
    """
    pi = check_policy(log, target)
    m = cross_fitted_model(log) if model is None else np.asarray(model, dtype=float)
    if m.shape != (len(log), log.n_actions):
        raise ValueError("the reward model must have one row per logged row")
    rows = np.arange(len(log))
    w = pi[log.segment, log.action] / log.propensity
    direct = np.einsum("ij,ij->i", pi[log.segment], m)
    influence = direct + w * (log.reward - m[rows, log.action])
    return _from_influence("dr", float(influence.mean()) if len(log) else float("nan"),
                           influence, level)


def best_per_segment(log: Log) -> np.ndarray:
    """Deterministic policy serving each segment the action with the highest cell mean.

    Chosen on the same rows it is then evaluated on, so its estimates are optimistic: the
    argmax picks up the noise that made one cell look best.
    """
    best = np.argmax(cell_means(log), axis=1)
    return one_hot(best, log.n_actions)


def one_hot(actions: np.ndarray, n_actions: int) -> np.ndarray:
    """Deterministic policy: one action per segment, as a segments x actions array."""
    actions = np.asarray(actions, dtype=np.int64)
    pi = np.zeros((len(actions), n_actions))
    pi[np.arange(len(actions)), actions] = 1.0
    return pi


def constant(action: int, log: Log) -> np.ndarray:
    """Deterministic policy serving one action in every segment."""
    return one_hot(np.full(log.n_segments, action), log.n_actions)


def evaluate(log: Log, target: np.ndarray, level: float = 0.95) -> dict[str, Estimate]:
    """IPS, SNIPS and DR of one target policy, keyed by estimator name."""
    return {"ips": ips(log, target, level), "snips": snips(log, target, level),
            "dr": doubly_robust(log, target, level)}


def on_policy(log: Log, level: float = 0.95) -> dict[str, Estimate]:
    """The logging policy itself: every weight is 1, so each estimator is the plain mean.

    The logged propensities may change from row to row (a learning bandit), so this policy
    is no segments x actions array; with w_i = p_i / p_i = 1 IPS and SNIPS are the mean, and
    DR's model terms are dropped: their expectation is zero and the log lacks the other
    actions' probabilities they would need.
    """
    w = np.ones(len(log))
    mean = ips_from_weights(w, log.reward, level)
    return {"ips": mean, "snips": snips_from_weights(w, log.reward, level),
            "dr": _from_influence("dr", mean.estimate, log.reward, level)}
