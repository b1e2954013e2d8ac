"""The analyst's report: Bayesian estimates that stay unbiased under a bandit.

Per variant and segment, plus a CUPED-adjusted estimate, policy uplift against the holdout,
the sample-ratio check, guardrails and a verdict.

Input is the table of counters per cell (group, persona, channel, variant, epoch); the
figures are typed rows (``VariantRow``, ``Guardrail``, ``Adjustment``) turned into the
JSON-ready report that `GET /v1/experiments/{key}/report` serves (its shape is in the
README) once, in ``build_report``. Pure numpy/scipy.

Why strata: a bandit moves traffic towards the variant that looks best, while conversion
rates drift (weekday, campaign, season). Pooling every visitor of a variant then mixes
periods in different proportions per variant, and the pooled difference can even have the
wrong sign (Simpson's paradox). Within one (persona, channel, allocation epoch) stratum the
serving probabilities are close to constant, so each variant's rate there is estimated
without that bias; the overall rate of a variant is the traffic-weighted sum over strata,
sum_s w_s theta_vs with w_s the stratum's share of all visitors: "what if every visitor had
seen this variant". For rates its posterior is summarised by its exact mean and variance
as the Beta distribution with those moments; for revenue, buying is stratified the same way
and the spend per buyer is estimated per persona x channel segment.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from experiments.model import DecisionSettings, Experiment, Metric, MetricKind, Mode
from experiments.stats import (
    BetaPosterior,
    Interval,
    NormalPosterior,
    RevenuePosterior,
    SpendStats,
    beat_best_and_loss,
    best_and_loss_of_draws,
    beta_matching,
    decide_verdict,
    prob_best_and_expected_loss,
    prob_greater_of_draws,
    revenue_posterior,
    signed_normal,
    spend_posterior,
    spend_stats_from_moments,
    srm_test,
)

CellKey = tuple[str, str, str, str, int]  # group, persona, channel, variant, epoch
SRM_ALPHA = 0.001
LEVEL = 0.95
_Z = 1.959963984540054  # the standard normal's 97.5% quantile: a 95% interval is +-_Z sd
# Per-metric counters of a cell, in this order (a visitor counts as a buyer when its total
# value is positive; the covariate product is sum x * y with x the pre-exposure value).
METRIC_SLOTS = ("conversions", "value_sum", "value_sq_sum", "buyers", "log_sum", "log_sq_sum",
                "covariate_product", "buyers_value_sum")


@dataclass
class CellCounts:
    """Counters of one cell: exposures, expected exposures, per-metric tallies, covariate."""

    exposures: int = 0
    expected: float = 0.0
    # metric -> the METRIC_SLOTS values (shorter lists are padded with zeros)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    # [sum, sum of squares] of the exposed visitors' pre-exposure value (CUPED)
    covariate: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def metric(self, name: str) -> tuple[float, ...]:
        """The METRIC_SLOTS values of a metric, zeros when absent."""
        t = self.metrics.get(name, ())
        return tuple(t) + (0.0,) * (len(METRIC_SLOTS) - len(t))


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """Knobs of the report: Monte Carlo sizes, epoch length, guardrail harm threshold."""

    draws: int = 20_000
    segment_draws: int = 2_000
    epoch_seconds: float = 3600.0
    harm_threshold: float = 0.95


@dataclass(frozen=True, slots=True)
class _Table:
    """Counts of one metric as arrays: variants x columns (strata, or one pooled column)."""

    n: np.ndarray  # exposures
    c: np.ndarray  # converting visitors
    s: np.ndarray  # value sum
    q: np.ndarray  # sum of squared visitor totals
    b: np.ndarray  # buyers (positive total)
    l: np.ndarray  # noqa: E741 - sum of ln(total) over buyers
    ll: np.ndarray  # sum of ln(total)^2 over buyers
    xy: np.ndarray  # sum of covariate x outcome
    bs: np.ndarray  # sum of the buyers' (positive) totals
    x: np.ndarray  # sum of covariate
    xx: np.ndarray  # sum of squared covariate
    segment: np.ndarray  # the persona x channel segment of every column

    def spend(self, rows: slice | int = slice(None), cols: np.ndarray | slice = slice(None)
              ) -> SpendStats:
        """The buyers' sums of some variants and columns, added up."""
        return SpendStats(float(self.b[rows, cols].sum()), float(self.bs[rows, cols].sum()),
                          float(self.l[rows, cols].sum()), float(self.ll[rows, cols].sum()))


class _Cube:
    """The cells as flat arrays, built once per report, so each scope is a numpy selection."""

    def __init__(self, e: Experiment, cells: Mapping[CellKey, CellCounts]) -> None:
        variants = {v: i for i, v in enumerate(e.variant_keys)}
        items = [(k, c) for k, c in cells.items() if k[3] in variants]
        self.cells = [c for _, c in items]
        self.n_variants = len(variants)
        self.variant = np.array([variants[k[3]] for k, _ in items], dtype=np.int64)
        self.holdout = np.array([k[0] == "h" for k, _ in items], dtype=bool)
        self.epoch = np.array([k[4] for k, _ in items], dtype=np.int64)
        self.segments: dict[tuple[str, str], int] = {}
        strata: dict[tuple[str, str, int], int] = {}
        seg, stratum = [], []
        for (_, p, c, _, ep), _cell in items:
            seg.append(self.segments.setdefault((p, c), len(self.segments)))
            stratum.append(strata.setdefault((p, c, ep), len(strata)))
        self.segment = np.array(seg, dtype=np.int64)
        self.stratum = np.array(stratum, dtype=np.int64)
        # Counts are never negative; a hand-edited or torn counter must not break the report.
        self.exposures = np.floor(np.maximum([c.exposures for c in self.cells], 0.0))
        self.expected = np.maximum([c.expected for c in self.cells], 0.0)
        self.covariate = np.array([c.covariate[:2] for c in self.cells],
                                  dtype=float).reshape(-1, 2).T
        self.covariate[1] = np.maximum(self.covariate[1], 0.0)
        self._metrics: dict[str, np.ndarray] = {}

    def allocation_changed(self, tolerance: float = 0.02) -> bool:
        """True when the logged serving shares of some variant moved between epochs."""
        if len(self.cells) == 0:
            return False
        epochs, column = np.unique(self.epoch, return_inverse=True)
        if len(epochs) < 2:
            return False
        grid = np.zeros((self.n_variants, len(epochs)))
        np.add.at(grid, (self.variant, column), self.expected)
        totals = grid.sum(0)
        shares = grid[:, totals > 0] / totals[totals > 0]
        return bool(shares.size and np.ptp(shares, axis=1).max() > tolerance)

    def metric(self, name: str) -> np.ndarray:
        """(slots, cells) array of a metric's counters (see METRIC_SLOTS)."""
        if name not in self._metrics:
            values = np.array([c.metric(name) for c in self.cells],
                              dtype=float).reshape(-1, len(METRIC_SLOTS)).T
            for slot in (0, 2, 3, 5):  # visitors and sums of squares cannot be negative
                values[slot] = np.maximum(values[slot], 0.0)
            values[[0, 3]] = np.floor(values[[0, 3]])  # and visitors are whole
            # Counters written before ln sums were kept: the lognormal with the same mean
            # and variance stands in for the buyers' ln sums.
            for j in np.flatnonzero((values[3] == 0) & (values[0] > 0) & (values[1] > 0)):
                stand_in = spend_stats_from_moments(values[0, j], values[1, j], values[2, j])
                values[3:6, j] = stand_in.count, stand_in.log_sum, stand_in.log_sq_sum
                values[7, j] = values[1, j]
            missing = (values[7] == 0) & (values[3] > 0)  # ln sums kept, buyers' sum not yet
            values[7, missing] = np.maximum(values[1, missing], 0.0)
            self._metrics[name] = values
        return self._metrics[name]

    def table(self, metric: str, segment: tuple[str, str] | None = None,
              groups: Sequence[str] = ("p", "h"), pooled: bool = False) -> _Table:
        """Variants x strata counts of a metric, for one segment (or all) and groups."""
        mask = np.ones(len(self.cells), dtype=bool)
        if "p" not in groups:
            mask &= self.holdout
        if "h" not in groups:
            mask &= ~self.holdout
        if segment is not None:
            mask &= self.segment == self.segments.get(segment, -1)
        if pooled:
            column = np.zeros(int(mask.sum()), dtype=np.int64)
            width = 1
            column_segment = np.zeros(1, dtype=np.int64)
        else:
            uniq, first, column = np.unique(self.stratum[mask], return_index=True,
                                            return_inverse=True)
            width = max(len(uniq), 1)
            column_segment = self.segment[mask][first] if len(uniq) else np.zeros(1, np.int64)
        rows = self.variant[mask]
        values = self.metric(metric)
        grids = {}
        series = (self.exposures, *values, *self.covariate)
        names = ("n", "c", "s", "q", "b", "l", "ll", "xy", "bs", "x", "xx")
        for name, values_of in zip(names, series, strict=True):
            grid = np.zeros((self.n_variants, width))
            np.add.at(grid, (rows, column), values_of[mask])
            grids[name] = grid
        return _Table(**grids, segment=column_segment)


def _stratified_rates(n: np.ndarray, c: np.ndarray, w: np.ndarray, a0: float,
                      b0: float) -> list[BetaPosterior]:
    """Each variant's rate as the w-weighted sum over strata, summarised by a Beta."""
    # One prior's worth of pseudo-visitors in total, spread over the strata by their weight:
    # a whole prior per stratum would add up, over thousands of thin strata, to a strong pull.
    # Centred on the stratum's rate over all variants: rates drift between strata, so neither
    # 0.5 nor the variant's pooled rate (distorted by the shifting allocation) is fair.
    strength = (a0 + b0) * w
    p_bar = np.clip((c.sum(0) + a0 * w) / (n.sum(0) + strength), 1e-9, 1 - 1e-9)
    out = []
    for i in range(n.shape[0]):
        a = strength * p_bar + c[i]
        b = strength * (1 - p_bar) + np.maximum(n[i] - c[i], 0)
        mean = float(w @ (a / (a + b)))
        # Spread from the variant's smoothed overall rate, not each stratum's own: with a
        # handful of visitors and no conversion a stratum would claim no uncertainty.
        p_var = (c[i].sum() + a0) / (n[i].sum() + a0 + b0)
        var = float((w**2) @ (p_var * (1 - p_var) / (n[i] + strength + 1)))
        out.append(beta_matching(mean, var))
    return out


def _stratified_means(n: np.ndarray, s: np.ndarray, q: np.ndarray, w: np.ndarray
                      ) -> list[NormalPosterior]:
    """Each variant's mean signed total as the w-weighted sum over strata (CLT per stratum).

    As for rates, one visitor's worth of prior in total is spread over the strata by weight
    and centred on the stratum's mean over all variants: a variant that missed a stratum is
    as uncertain there as one visitor, not surely zero.
    """
    strength = w
    stratum_mean = s.sum(0) / np.maximum(n.sum(0), 1.0)
    stratum_var = np.maximum(q.sum(0) / np.maximum(n.sum(0), 1.0) - stratum_mean**2, 0.0)
    out = []
    for i in range(n.shape[0]):
        mean = (s[i] + strength * stratum_mean) / (n[i] + strength)
        # Spread from the variant's own variance where it has visitors, the stratum's else.
        own_var = np.where(n[i] > 1, np.maximum(q[i] / np.maximum(n[i], 1.0)
                                                - (s[i] / np.maximum(n[i], 1.0)) ** 2, 0.0),
                           stratum_var)
        var = float((w**2) @ (own_var / (n[i] + strength)))
        out.append(NormalPosterior(float(w @ mean), math.sqrt(var)))
    return out


def _posteriors(e: Experiment, metric: Metric, t: _Table) -> list[Any]:
    """One posterior per variant; stratified when the table has several strata."""
    a0, b0 = e.bandit.prior_alpha, e.bandit.prior_beta
    revenue = metric.kind is MetricKind.REVENUE
    totals = t.n.sum(0)
    keep = totals > 0
    # Net refunds: some visitor's total is negative (the value sum falls short of the
    # positive totals' sum) or a whole variant's value sum is not positive. Signed totals
    # have no lognormal or Gamma spend: the report falls back to the mean of the signed
    # per-visitor totals.
    s, bs = t.s.sum(1), t.bs.sum(1)
    signed = revenue and bool(np.any(s < bs - 1e-9 * np.maximum(bs, 1.0))
                              or np.any((s <= 0) & (t.c.sum(1) > 0)))
    if t.n.shape[1] <= 1 or keep.sum() <= 1:
        n = t.n.sum(1)
        if signed:
            return [signed_normal(n[i], t.s[i].sum(), t.q[i].sum()) for i in range(len(n))]
        if not revenue:
            c = np.minimum(t.c.sum(1), n)  # a visitor converts once: never more than visitors
            return [BetaPosterior(a0 + c[i], b0 + n[i] - c[i]) for i in range(len(n))]
        pooled = t.spend()
        return [revenue_posterior(n[i], min(t.b[i].sum(), n[i]), t.spend(i), a0, b0, pooled)
                for i in range(len(n))]
    w = totals[keep] / totals[keep].sum()
    n = t.n[:, keep]
    if not revenue:
        return _stratified_rates(n, np.minimum(t.c[:, keep], n), w, a0, b0)
    if signed:
        return _stratified_means(n, t.s[:, keep], t.q[:, keep], w)
    # Revenue: buying is stratified like a conversion; spend per buyer is estimated per
    # persona x channel segment (it differs between personas far more than between hours),
    # from all of that segment's epochs.
    buyers = np.minimum(t.b[:, keep], n)
    segments = t.segment[keep]
    parts: list[list[tuple[float, BetaPosterior, Any]]] = [[] for _ in range(n.shape[0])]
    for g in np.unique(segments):
        cols = segments == g
        weight = float(w[cols].sum())
        rates = _stratified_rates(n[:, cols], buyers[:, cols], w[cols] / weight, a0, b0)
        columns = np.flatnonzero(keep)[cols]
        prior = t.spend(slice(None), columns)
        for i, rate in enumerate(rates):
            parts[i].append((weight, rate, spend_posterior(t.spend(i, columns), prior)))
    return [RevenuePosterior(tuple(p)) for p in parts]


@dataclass(frozen=True, slots=True)
class Uplift:
    """A treatment's uplift over the control: absolute and (when defined) relative."""

    absolute: Interval
    relative: Interval | None

    def to_dict(self) -> dict[str, Any]:
        """Return the report shape {"absolute", "relative"}."""
        return {"absolute": self.absolute.to_dict(),
                "relative": self.relative.to_dict() if self.relative else None}


@dataclass(frozen=True, slots=True)
class Adjusted:
    """A variant's regression-adjusted (CUPED) mean and uplift over the control."""

    mean: Interval
    estimate_sd: float
    uplift: Interval | None

    def to_dict(self) -> dict[str, Any]:
        """Return the report shape {"mean", "estimate_sd", "uplift"}."""
        return {"mean": self.mean.to_dict(), "estimate_sd": self.estimate_sd,
                "uplift": self.uplift.to_dict() if self.uplift else None}


@dataclass(frozen=True, slots=True)
class VariantRow:
    """Figures of one variant for one metric in one scope (overall or a segment)."""

    key: str
    exposures: int
    conversions: int
    value_sum: float
    mean: Interval  # the prior alone when there is no data
    estimate_sd: float  # the 95% interval's width / 3.92: the sd of a Normal posterior
    uplift: Uplift | None = None
    chance_to_beat_control: float | None = None
    chance_to_be_best: float | None = None
    expected_loss: float | None = None
    always_valid_uplift: Interval | None = None
    adjusted: Adjusted | None = None

    @property
    def no_data(self) -> bool:
        """Nobody has seen this variant yet."""
        return self.exposures == 0

    def to_dict(self) -> dict[str, Any]:
        """Return the report shape of a variant."""
        return {
            "key": self.key, "exposures": self.exposures, "conversions": self.conversions,
            "value_sum": self.value_sum, "no_data": self.no_data, "mean": self.mean.to_dict(),
            "estimate_sd": self.estimate_sd,
            "uplift": self.uplift.to_dict() if self.uplift else None,
            "chance_to_beat_control": self.chance_to_beat_control,
            "chance_to_be_best": self.chance_to_be_best, "expected_loss": self.expected_loss,
            "always_valid_uplift": (self.always_valid_uplift.to_dict()
                                    if self.always_valid_uplift else None),
            "adjusted": self.adjusted.to_dict() if self.adjusted else None,
        }


@dataclass(frozen=True, slots=True)
class GuardrailRow:
    """A variant's figures on a guardrail metric and its chance of harming it."""

    row: VariantRow
    chance_of_harm: float | None
    harm_flagged: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the report shape of a guardrail variant."""
        out = self.row.to_dict()
        for name in ("chance_to_beat_control", "chance_to_be_best", "expected_loss",
                     "always_valid_uplift", "adjusted"):
            del out[name]
        return {**out, "chance_of_harm": self.chance_of_harm, "harm_flagged": self.harm_flagged}


@dataclass(frozen=True, slots=True)
class Guardrail:
    """One guardrail metric across the variants."""

    metric: Metric
    harm_increases: bool
    rows: tuple[GuardrailRow, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the report shape of a guardrail."""
        return {"metric": {"name": self.metric.name, "kind": self.metric.kind.value,
                           "harmful": "increase" if self.harm_increases else "decrease"},
                "variants": [r.to_dict() for r in self.rows]}


@dataclass(frozen=True, slots=True)
class Adjustment:
    """The CUPED regression of the outcome on the pre-exposure covariate."""

    covariate: str
    theta: float  # outcome units per unit of covariate, pooled within cells
    correlation: float
    variance_reduction: float  # 1 - adjusted variance / plain variance, over the variants
    used_by_verdict: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the report shape of the adjustment."""
        return {"covariate": self.covariate, "theta": self.theta,
                "correlation": self.correlation, "variance_reduction": self.variance_reduction,
                "used_by_verdict": self.used_by_verdict}


def _estimates(e: Experiment, metric: Metric, t: _Table, rng: np.random.Generator,
               draws: int) -> list[VariantRow]:
    """Per-variant figures of one metric in one scope (overall or a segment)."""
    keys = e.variant_keys
    control = keys.index(e.control)
    posts = _posteriors(e, metric, t)
    samples = np.vstack([p.sample(rng, draws) for p in posts])
    means = np.array([p.mean for p in posts])
    exact = all(isinstance(p, BetaPosterior) for p in posts)
    k = len(keys)
    # A variant nobody saw has only its prior: leave it out of every comparison instead of
    # letting the prior claim a chance to be best.
    seen = np.flatnonzero(t.n.sum(1) > 0)
    best, loss, beat = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    if len(seen):
        shown = [posts[i] for i in seen]
        if exact and control in seen:
            beat[seen], best[seen], loss[seen] = beat_best_and_loss(
                shown, int(np.flatnonzero(seen == control)[0]))
        elif exact:
            best[seen], loss[seen] = prob_best_and_expected_loss(shown)
        else:
            # From the draws the intervals use: chance to beat, to be best and expected loss
            # then agree with each other and with the intervals.
            best[seen], loss[seen] = best_and_loss_of_draws(samples[seen])
            if control in seen:
                for j in seen:
                    beat[j] = prob_greater_of_draws(samples[control], samples[j])
    # A relative uplift needs a control that cannot be negative (signed revenue may be);
    # exact zeros of a rate (a draw that underflowed) are floored so the ratio stays finite.
    relative_ok = bool(np.all(samples[control] >= 0))
    base = np.maximum(samples[control], np.finfo(float).tiny)
    with np.errstate(over="ignore"):
        ratios = (np.minimum(samples / base, np.finfo(float).max) - 1
                  if relative_ok else np.zeros_like(samples))
    # One partition pass for every quantile: rows are means, differences and ratios.
    stacked = np.vstack([samples, samples - samples[control], ratios])
    lo, mid, hi = np.quantile(stacked, [(1 - LEVEL) / 2, 0.5, (1 + LEVEL) / 2], axis=1)
    estimates = np.concatenate([means, means - means[control], mid[2 * k:]])
    ivs = [Interval(float(m), float(a), float(b))
           for m, a, b in zip(estimates, lo, hi, strict=True)]
    n, c, s = t.n.sum(1), np.minimum(t.c.sum(1), t.n.sum(1)), t.s.sum(1)
    rows = []
    for i, key in enumerate(keys):
        compared = bool(n[i] > 0 and n[control] > 0 and i != control)
        rows.append(VariantRow(
            key=key, exposures=int(n[i]), conversions=int(c[i]), value_sum=float(s[i]),
            mean=ivs[i], estimate_sd=float((hi[i] - lo[i]) / (2 * _Z)),
            uplift=Uplift(ivs[k + i], ivs[2 * k + i] if relative_ok else None)
            if compared else None,
            chance_to_beat_control=float(beat[i]) if compared else None,
            chance_to_be_best=None if n[i] == 0 else float(best[i]),
            expected_loss=None if n[i] == 0 else float(loss[i]),
        ))
    return rows


def _cuped(e: Experiment, t: _Table, rows: list[VariantRow]
           ) -> tuple[list[VariantRow], Adjustment | None]:
    """Rows with their CUPED-adjusted figures, and the adjustment (None without a covariate).

    x is the visitor's value before its first exposure, recorded with the assignment. Within
    every cell (variant x stratum), centred sums give Sxx, Sxy and Syy; theta = sum Sxy /
    sum Sxx is pooled over all cells, so it cannot depend on the treatment. A variant's
    adjusted mean is its estimate - theta * (its strata-weighted mean of x - everyone's), and
    its spread shrinks by sqrt(residual / plain sum of squares) of its own cells: the plain
    interval's shape (skewed for revenue) is kept, narrowed around the adjusted estimate.
    """
    revenue = e.metric.kind is MetricKind.REVENUE
    n = t.n
    y, yy = (t.s, t.q) if revenue else (np.minimum(t.c, n), np.minimum(t.c, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(n > 0, 1.0 / n, 0.0)
    sxx = np.maximum(t.xx - t.x**2 * inv, 0.0)
    sxy = t.xy - t.x * y * inv
    syy = np.maximum(yy - y**2 * inv, 0.0)
    total_xx, total_yy = float(sxx.sum()), float(syy.sum())
    usable = all(math.isfinite(v) for v in (total_xx, total_yy, float(sxy.sum())))
    if not usable or total_xx <= 0 or total_yy <= 0 or any(r.no_data for r in rows):
        return rows, None
    theta = float(sxy.sum()) / total_xx
    if not math.isfinite(theta * theta * total_xx):
        return rows, None
    # One shrink factor per variant, from its cells' sums: exact for a pooled A/B table; in
    # stratified tables the strata enter the estimate with weights w^2 that these unweighted
    # sums ignore, so there it is an approximation (good while the adjustment works alike in
    # every stratum).
    residual = np.maximum((syy - 2 * theta * sxy + theta**2 * sxx).sum(1), 0.0)
    plain = syy.sum(1)
    factor = np.where(plain > 0, residual / np.where(plain > 0, plain, 1.0), 1.0)
    # Strata weights as the estimate uses them; a variant absent from a stratum adds nothing.
    totals = n.sum(0)
    keep = totals > 0
    w = totals[keep] / totals[keep].sum()
    stratum_mean = t.x.sum(0)[keep] / totals[keep]
    own = np.where(n[:, keep] > 0, t.x[:, keep] * inv[:, keep], stratum_mean)
    shift = theta * ((own - stratum_mean) @ w)
    control = e.variant_keys.index(e.control)
    shrink = np.sqrt(factor)
    adjusted_means = []
    for i, r in enumerate(rows):
        m = r.mean
        est = m.estimate - shift[i]
        adjusted_means.append(Interval(est, est - (m.estimate - m.lower) * shrink[i],
                                       est + (m.upper - m.estimate) * shrink[i]))
    out = []
    for i, r in enumerate(rows):
        uplift = None
        if r.uplift is not None:
            d0 = r.uplift.absolute
            sd_i, sd_c = rows[i].estimate_sd, rows[control].estimate_sd
            pair = math.sqrt((factor[i] * sd_i * sd_i + factor[control] * sd_c * sd_c)
                             / max(sd_i * sd_i + sd_c * sd_c, np.finfo(float).tiny))
            d = adjusted_means[i].estimate - adjusted_means[control].estimate
            uplift = Interval(d, d - (d0.estimate - d0.lower) * pair,
                              d + (d0.upper - d0.estimate) * pair)
        out.append(replace(r, adjusted=Adjusted(adjusted_means[i],
                                                r.estimate_sd * float(shrink[i]), uplift)))
    correlation = float(sxy.sum()) / math.sqrt(total_xx * total_yy)
    reduction = 1.0 - float(np.sum(residual) / max(float(np.sum(plain)), np.finfo(float).tiny))
    covariate = ("revenue before the first exposure" if revenue
                 else "purchases before the first exposure")
    return out, Adjustment(covariate, theta, correlation, reduction, used_by_verdict=True)


def _stratified(e: Experiment, cube: _Cube) -> bool:
    """Bandits always; a split only if its logged allocation changed between epochs."""
    return e.mode is Mode.BANDIT or cube.allocation_changed()


def _scope_table(e: Experiment, cube: _Cube, metric: str,
                 segment: tuple[str, str] | None = None) -> _Table:
    return cube.table(metric, segment, pooled=not _stratified(e, cube))


def _policy_uplift(e: Experiment, cube: _Cube, rng: np.random.Generator,
                   draws: int) -> dict[str, Any] | None:
    """The served policy (bandit or split) against the uniform-random holdout."""
    metric = e.metric
    tables = {g: cube.table(metric.name, groups=(g,), pooled=True) for g in ("p", "h")}
    if tables["h"].n.sum() == 0 or tables["p"].n.sum() == 0:
        return None
    a0, b0 = e.bandit.prior_alpha, e.bandit.prior_beta
    pooled = tables["p"].spend() + tables["h"].spend()
    posts: dict[str, Any] = {}
    for g, t in tables.items():
        n = float(t.n.sum())
        if metric.kind is MetricKind.REVENUE:
            posts[g] = revenue_posterior(n, min(float(t.b.sum()), n), t.spend(), a0, b0, pooled)
        else:
            c = min(float(t.c.sum()), n)
            posts[g] = BetaPosterior(a0 + c, b0 + n - c)
    policy, holdout = posts["p"].sample(rng, draws), posts["h"].sample(rng, draws)
    ratio = policy / np.maximum(holdout, np.finfo(float).tiny) - 1
    relative = _interval(ratio, float(np.median(ratio)))
    return {
        **relative.to_dict(),
        "relative": relative.to_dict(),
        "absolute": _interval(policy - holdout, posts["p"].mean - posts["h"].mean).to_dict(),
        "policy": {"exposures": int(tables["p"].n.sum()), "mean": posts["p"].mean},
        "holdout": {"exposures": int(tables["h"].n.sum()), "mean": posts["h"].mean},
        "chance_policy_better": float(np.mean(policy > holdout)),
    }


def _interval(draws: np.ndarray, estimate: float) -> Interval:
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(estimate), float(lo), float(hi))


def _srm(e: Experiment, cells: Mapping[CellKey, CellCounts]) -> dict[str, Any]:
    """Chi-square of observed against expected exposures (weights or logged propensities)."""
    observed: dict[str, float] = defaultdict(float)
    expected: dict[str, float] = defaultdict(float)
    for (_, _, _, v, _), cell in cells.items():
        observed[v] += max(cell.exposures, 0)
        expected[v] += max(cell.expected, 0.0)
    keys = e.variant_keys
    obs = [observed[k] for k in keys]
    exp = [expected[k] for k in keys]
    if sum(obs) == 0 or sum(exp) == 0:
        return {"p_value": None, "flagged": False, "observed": obs, "expected": exp}
    p = float(srm_test(obs, exp))
    total = sum(obs) / sum(exp)
    return {"p_value": p, "flagged": p < SRM_ALPHA, "observed": [int(x) for x in obs],
            "expected": [x * total for x in exp]}


def _harm_increases(metric: Metric) -> bool:
    if metric.harmful:
        return metric.harmful == "increase"
    return metric.kind.binary


def _guardrails(e: Experiment, cube: _Cube, rng: np.random.Generator,
                options: ReportOptions) -> list[Guardrail]:
    out = []
    for g in e.guardrails:
        rows = _estimates(e, g, _scope_table(e, cube, g.name), rng, options.segment_draws * 5)
        increase_is_harm = _harm_increases(g)
        flagged = []
        for row in rows:
            beat = row.chance_to_beat_control
            harm = None if beat is None else (beat if increase_is_harm else 1 - beat)
            flagged.append(GuardrailRow(replace(row, chance_to_be_best=None, expected_loss=None),
                                        harm, harm is not None and harm >= options.harm_threshold))
        out.append(Guardrail(g, increase_is_harm, tuple(flagged)))
    return out


def _allocation(e: Experiment, cells: Mapping[CellKey, CellCounts],
                epoch_seconds: float) -> list[dict[str, Any]]:
    keys = e.variant_keys  # a property that builds a tuple: once, not once per cell
    known = frozenset(keys)
    per_epoch: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(keys, 0))
    for (g, _, _, v, ep), cell in cells.items():
        if g == "p" and v in known:
            per_epoch[ep][v] += cell.exposures
    return [{"epoch": ep, "start": ep * epoch_seconds, "exposures": counts}
            for ep, counts in sorted(per_epoch.items())]


def _verdict(e: Experiment, rows: list[VariantRow], guardrails: list[Guardrail],
             rule: DecisionSettings, adjusted: bool) -> tuple[dict[str, Any], list[VariantRow]]:
    """The verdict, and the rows with the always-valid interval it used."""
    empty = [r.key for r in rows if r.no_data]
    if empty:
        listed = ", ".join(f"'{k}'" for k in empty)
        return {"decision": "keep_running", "winner": None,
                "text": f"Keep running: no data yet for {listed}.", "visitors_needed": None}, rows
    figures = [r.adjusted if adjusted and r.adjusted else r for r in rows]
    v = decide_verdict(
        [r.key for r in rows], e.control, [r.exposures for r in rows],
        [float(r.chance_to_be_best or 0.0) for r in rows],
        [float(r.expected_loss or 0.0) for r in rows],
        [f.mean.estimate for f in figures], [f.estimate_sd * f.estimate_sd for f in figures], rule,
    )
    rows = [replace(r, always_valid_uplift=iv)
            for r, iv in zip(rows, v.always_valid or (None,) * len(rows), strict=True)]
    decision, text, winner, needed = v.decision, v.text, v.winner, v.visitors_needed
    harmed: dict[str, list[str]] = {r.key: [] for r in rows}
    for g in guardrails:
        for gr in g.rows:
            if gr.harm_flagged:
                harmed[gr.row.key].append(g.metric.name)
    if decision == "ship" and winner is not None and winner != e.control and harmed.get(winner):
        decision, needed = "keep_running", None  # more traffic will not settle a harm
        text = (f"'{winner}' leads on {e.metric.name}, but it likely harms the guardrail "
                f"{', '.join(harmed[winner])}: keep running and look closer before shipping.")
    elif any(harmed.values()):
        flagged = "; ".join(f"'{k}' on {', '.join(v)}" for k, v in harmed.items() if v)
        text += f" Guardrail warning: likely harm by {flagged}."
    return {"decision": decision, "winner": winner if decision == "ship" else None,
            "text": text, "visitors_needed": needed}, rows


def json_safe(value: Any) -> Any:
    """The value with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def build_report(e: Experiment, cells: Mapping[CellKey, CellCounts], rng: np.random.Generator,
                 options: ReportOptions | None = None) -> dict[str, Any]:
    """The full report of one experiment from its cell counters, as JSON-ready data."""
    options = options or ReportOptions()
    metric = e.metric
    cube = _Cube(e, cells)
    table = _scope_table(e, cube, metric.name)
    overall, adjustment = _cuped(e, table, _estimates(e, metric, table, rng, options.draws))
    segments = []
    for persona, channel in sorted(cube.segments):
        t = _scope_table(e, cube, metric.name, (persona, channel))
        if t.n.sum() == 0:
            continue
        rows = _estimates(e, metric, t, rng, options.segment_draws)
        segments.append({"persona": persona, "channel": channel,
                         "variants": [r.to_dict() for r in rows]})
    guardrails = _guardrails(e, cube, rng, options)
    verdict, overall = _verdict(e, overall, guardrails, e.decision, adjustment is not None)
    return json_safe({
        "experiment": e.key,
        "mode": e.mode.value,
        "status": e.status.value,
        "metric": {"name": metric.name, "kind": metric.kind.value},
        "estimator": ("stratified by persona, channel and allocation epoch"
                      if _stratified(e, cube) else "pooled (fixed allocation)"),
        "verdict": verdict,
        "variants": [r.to_dict() for r in overall],
        "adjustment": adjustment.to_dict() if adjustment else None,
        "segments": segments,
        "policy_uplift": _policy_uplift(e, cube, rng, options.draws),
        "srm": _srm(e, cells),
        "guardrails": [g.to_dict() for g in guardrails],
        "allocation": _allocation(e, cells, options.epoch_seconds),
    })


def posterior_densities(e: Experiment, cells: Mapping[CellKey, CellCounts],
                        rng: np.random.Generator, persona: str | None = None,
                        channel: str | None = None,
                        points: int = 400) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each variant's posterior density of the primary metric on a common grid (for plots).

    Exact Beta densities for conversion rates; for revenue a histogram of 200,000 draws.
    """
    segment = None if persona is None or channel is None else (persona, channel)
    t = _scope_table(e, _Cube(e, cells), e.metric.name, segment)
    posts = _posteriors(e, e.metric, t)
    draws = {key: p.sample(rng, 200_000) for key, p in zip(e.variant_keys, posts, strict=True)}
    lo, hi = np.quantile(np.concatenate(list(draws.values())), [0.0005, 0.9995])
    x = np.linspace(lo, hi, points)
    out = {}
    for key, p in zip(e.variant_keys, posts, strict=True):
        if isinstance(p, BetaPosterior):
            out[key] = (x, np.asarray(p.pdf(x)))
        else:
            density, edges = np.histogram(draws[key], bins=points // 4, range=(lo, hi),
                                          density=True)
            out[key] = ((edges[:-1] + edges[1:]) / 2, density)
    return out


def segment_allocation(e: Experiment, cells: Mapping[CellKey, CellCounts], epoch_seconds: float,
                       persona: str, channel: str) -> list[dict[str, Any]]:
    """Policy traffic per epoch and variant in one segment."""
    subset = {k: v for k, v in cells.items() if k[1] == persona and k[2] == channel}
    return _allocation(e, subset, epoch_seconds)


CSV_COLUMNS = (
    "scope", "persona", "channel", "variant", "exposures", "conversions", "value_sum",
    "mean", "mean_lower", "mean_upper", "uplift_abs", "uplift_abs_lower", "uplift_abs_upper",
    "uplift_rel", "uplift_rel_lower", "uplift_rel_upper", "chance_to_beat_control",
    "chance_to_be_best", "expected_loss", "adjusted_mean", "adjusted_uplift_abs",
    "adjusted_uplift_abs_lower", "adjusted_uplift_abs_upper",
)


def csv_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    """The report's variant rows, overall and per segment, as a flat table."""
    scopes = [("overall", "", "", report["variants"])]
    scopes += [("segment", s["persona"], s["channel"], s["variants"]) for s in report["segments"]]
    rows = []
    for scope, persona, channel, variants in scopes:
        for v in variants:
            up = v["uplift"] or {}
            ab = up.get("absolute") or {}
            rel = up.get("relative") or {}
            adjusted = v.get("adjusted") or {}
            adj_up = adjusted.get("uplift") or {}
            rows.append([
                scope, persona, channel, v["key"], v["exposures"], v["conversions"],
                v["value_sum"], v["mean"]["estimate"], v["mean"]["lower"], v["mean"]["upper"],
                ab.get("estimate"), ab.get("lower"), ab.get("upper"), rel.get("estimate"),
                rel.get("lower"), rel.get("upper"), v["chance_to_beat_control"],
                v["chance_to_be_best"], v["expected_loss"],
                (adjusted.get("mean") or {}).get("estimate"), adj_up.get("estimate"),
                adj_up.get("lower"), adj_up.get("upper"),
            ])
    return rows
