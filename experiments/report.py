"""The analyst's report: Bayesian estimates that stay unbiased under a bandit.

Per variant and segment, plus policy uplift against the holdout, the sample-ratio check,
guardrails and a verdict.

Input is the table of counters per cell (group, persona, channel, variant, epoch); output is
the JSON-ready report that `GET /v1/experiments/{key}/report` serves (its shape is in the
README). Pure numpy/scipy.

Why strata: a bandit moves traffic towards the variant that looks best, while conversion
rates drift (weekday, campaign, season). Pooling every visitor of a variant then mixes
periods in different proportions per variant, and the pooled difference can even have the
wrong sign (Simpson's paradox). Within one (persona, channel, allocation epoch) stratum the
serving probabilities are close to constant, so each variant's rate there is estimated
without that bias; the overall rate of a variant is the traffic-weighted sum over strata,
sum_s w_s theta_vs with w_s the stratum's share of all visitors: "what if every visitor had
seen this variant". Its posterior is summarised by its exact mean and variance and, for
probabilities, the Beta distribution with those moments (a Normal one for revenue).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from experiments.model import DecisionSettings, Experiment, Metric, MetricKind, Mode
from experiments.stats import (
    BetaPosterior,
    Interval,
    NormalPosterior,
    RevenuePosterior,
    beat_best_and_loss,
    best_and_loss_of_draws,
    beta_matching,
    decide_verdict,
    gamma_matching,
    prob_best_and_expected_loss,
    prob_greater_of_draws,
    revenue_posterior,
    signed_normal,
    srm_test,
)

CellKey = tuple[str, str, str, str, int]  # group, persona, channel, variant, epoch
SRM_ALPHA = 0.001
LEVEL = 0.95


@dataclass
class CellCounts:
    """Counters of one cell: exposures, expected exposures and per-metric tallies."""

    exposures: int = 0
    expected: float = 0.0
    # metric -> [converting visitors, value sum, sum of squared visitor totals]
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def metric(self, name: str) -> tuple[float, float, float]:
        """(conversions, value sum, value sq sum) of a metric, zeros when absent."""
        t = self.metrics.get(name)
        return (t[0], t[1], t[2]) if t else (0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """Knobs of the report: Monte Carlo sizes, epoch length, guardrail harm threshold."""

    draws: int = 20_000
    segment_draws: int = 2_000
    epoch_seconds: float = 3600.0
    harm_threshold: float = 0.95


@dataclass
class _Table:
    """Counts of one metric as arrays: variants x strata."""

    n: np.ndarray
    c: np.ndarray
    s: np.ndarray
    q: np.ndarray


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
        self.exposures = np.array([c.exposures for c in self.cells], dtype=float)
        self.expected = np.array([c.expected for c in self.cells], dtype=float)
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
        """(3, cells) array of conversions, value sums and value sq sums of a metric."""
        if name not in self._metrics:
            self._metrics[name] = np.array([c.metric(name) for c in self.cells],
                                           dtype=float).reshape(-1, 3).T
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
        else:
            uniq, column = np.unique(self.stratum[mask], return_inverse=True)
            width = max(len(uniq), 1)
        rows = self.variant[mask]
        out = []
        values = self.metric(metric)
        for series in (self.exposures, values[0], values[1], values[2]):
            grid = np.zeros((self.n_variants, width))
            np.add.at(grid, (rows, column), series[mask])
            out.append(grid)
        return _Table(*out)


def _posteriors(e: Experiment, metric: Metric, t: _Table) -> list[Any]:
    """One posterior per variant; stratified when the table has several strata."""
    a0, b0 = e.bandit.prior_alpha, e.bandit.prior_beta
    revenue = metric.kind is MetricKind.REVENUE
    converters = t.c.sum()
    pooled_value = float(t.s.sum() / converters) if converters > 0 else None
    # Net refunds (a non-positive value sum where visitors converted) break the positive
    # order-value model: fall back to the mean of the signed per-visitor totals.
    signed = revenue and bool(np.any((t.s.sum(1) <= 0) & (t.c.sum(1) > 0)))
    totals = t.n.sum(0)
    keep = totals > 0
    if t.n.shape[1] <= 1 or keep.sum() <= 1:
        n, c, s, q = (x.sum(1) for x in (t.n, t.c, t.s, t.q))
        c = np.minimum(c, n)  # a visitor converts once: never more conversions than visitors
        if signed:
            return [signed_normal(n[i], s[i], q[i]) for i in range(len(n))]
        if revenue:
            return [revenue_posterior(int(n[i]), int(c[i]), float(s[i]), float(q[i]), a0, b0,
                                      value_prior_mean=pooled_value)
                    for i in range(len(n))]
        return [BetaPosterior(a0 + c[i], b0 + max(n[i] - c[i], 0)) for i in range(len(n))]

    w = totals[keep] / totals[keep].sum()
    n, c, s, q = (x[:, keep] for x in (t.n, t.c, t.s, t.q))
    c = np.minimum(c, n)
    out: list[Any] = []
    # One prior's worth of pseudo-visitors in total, spread over the strata by their weight:
    # a whole prior per stratum would add up, over thousands of thin strata, to a strong pull.
    # Centred on the stratum's rate over all variants: rates drift between strata, so neither
    # 0.5 nor the variant's pooled rate (distorted by the shifting allocation) is fair.
    strength = (a0 + b0) * w
    p_bar = np.clip((c.sum(0) + a0 * w) / (n.sum(0) + strength), 1e-9, 1 - 1e-9)
    for i in range(n.shape[0]):
        a = strength * p_bar + c[i]
        b = strength * (1 - p_bar) + np.maximum(n[i] - c[i], 0)
        rate_mean = a / (a + b)
        rate_sq = a * (a + 1) / ((a + b) * (a + b + 1))
        if not revenue:
            mean = float(w @ rate_mean)
            # Spread from the variant's smoothed overall rate, not each stratum's own: with a
            # handful of visitors and no conversion a stratum would claim no uncertainty.
            p_var = (c[i].sum() + a0) / (n[i].sum() + a0 + b0)
            var = float((w**2) @ (p_var * (1 - p_var) / (n[i] + strength + 1)))
            out.append(beta_matching(mean, var))
            continue
        if signed:
            per = [signed_normal(n[i, j], s[i, j], q[i, j]) for j in range(len(w))]
            mean = float(sum(wj * p.mu for wj, p in zip(w, per, strict=True)))
            sd = math.sqrt(float(sum((wj * p.sd) ** 2 for wj, p in zip(w, per, strict=True))))
            out.append(NormalPosterior(mean, sd))
            continue
        value_mean, value_sq = _value_moments(n[i], c[i], s[i], q[i], pooled_value, w)
        mean_s = rate_mean * value_mean
        var_s = np.maximum(rate_sq * value_sq - mean_s**2, 0.0)
        out.append(gamma_matching(float(w @ mean_s), float(w**2 @ var_s)))
    return out


def _value_moments(n: np.ndarray, c: np.ndarray, s: np.ndarray, q: np.ndarray,
                   pooled_value: float | None, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """E[mu] and E[mu^2] of the mean value per converter, per stratum."""
    means, squares = np.zeros(len(n)), np.zeros(len(n))
    for j in range(len(n)):
        post: RevenuePosterior = revenue_posterior(
            int(n[j]), int(c[j]), float(s[j]), float(q[j]), value_prior_mean=pooled_value,
            value_prior_weight=max(float(w[j]), 1e-6))
        k, scale = post.value_shape, post.value_scale
        means[j] = scale / (k - 1) if k > 1 else 0.0
        # Inverse-Gamma's second moment exists for shape > 2; below that fall back to the
        # squared mean doubled, a deliberately wide stand-in.
        squares[j] = scale**2 / ((k - 1) * (k - 2)) if k > 2 else 2 * means[j] ** 2
    return means, squares


def _intervals(draws: np.ndarray, estimates: np.ndarray) -> list[Interval]:
    """Equal-tailed 95% intervals of each row of a (k, draws) matrix."""
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=1)
    return [Interval(float(m), float(a), float(b)) for m, a, b in zip(estimates, lo, hi,
                                                                      strict=True)]


def _interval(draws: np.ndarray, estimate: float) -> Interval:
    return _intervals(draws[None, :], np.array([estimate]))[0]


def _estimates(e: Experiment, metric: Metric, t: _Table, rng: np.random.Generator,
               draws: int) -> list[dict[str, Any]]:
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
    # A relative uplift needs a control that is surely positive (revenue with refunds may
    # not be); floor exact zeros of a rate so that the ratio stays finite.
    relative_ok = bool(np.all(samples[control] >= 0))
    base = np.maximum(samples[control], np.finfo(float).tiny)
    ratios = samples / base - 1 if relative_ok else np.zeros_like(samples)
    # One partition pass for every quantile: rows are means, differences and ratios.
    stacked = np.vstack([samples, samples - samples[control], ratios])
    lo, mid, hi = np.quantile(stacked, [(1 - LEVEL) / 2, 0.5, (1 + LEVEL) / 2], axis=1)
    estimates = np.concatenate([means, means - means[control], mid[2 * k:]])
    ivs = [Interval(float(m), float(a), float(b))
           for m, a, b in zip(estimates, lo, hi, strict=True)]
    mean_iv, abs_iv, rel_iv = ivs[:k], ivs[k:2 * k], ivs[2 * k:]
    n, c, s = t.n.sum(1), t.c.sum(1), t.s.sum(1)
    sds = samples.std(axis=1)
    rows = []
    for i, key in enumerate(keys):
        no_data = bool(n[i] == 0)
        row: dict[str, Any] = {
            "key": key,
            "exposures": int(n[i]),
            "conversions": int(c[i]),
            "value_sum": float(s[i]),
            "no_data": no_data,
            "mean": mean_iv[i].to_dict(),  # the prior alone when there is no data
            "estimate_sd": float(sds[i]),  # posterior standard deviation of the mean
            "uplift": None,
            "chance_to_beat_control": None,
            "chance_to_be_best": None if no_data else float(best[i]),
            "expected_loss": None if no_data else float(loss[i]),
        }
        if i != control and not no_data and n[control] > 0:
            row["uplift"] = {"absolute": abs_iv[i].to_dict(),
                             "relative": rel_iv[i].to_dict() if relative_ok else None}
            row["chance_to_beat_control"] = float(beat[i])
        rows.append(row)
    return rows


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
    groups = {}
    for g in ("p", "h"):
        t = cube.table(metric.name, groups=(g,), pooled=True)
        groups[g] = (t.n.sum(), t.c.sum(), t.s.sum(), t.q.sum())
    if groups["h"][0] == 0 or groups["p"][0] == 0:
        return None
    a0, b0 = e.bandit.prior_alpha, e.bandit.prior_beta
    posts: dict[str, Any] = {}
    for g, (n, c, s, q) in groups.items():
        if metric.kind is MetricKind.REVENUE:
            posts[g] = revenue_posterior(int(n), int(c), float(s), float(q), a0, b0)
        else:
            posts[g] = BetaPosterior(a0 + c, b0 + max(n - c, 0))
    policy, holdout = posts["p"].sample(rng, draws), posts["h"].sample(rng, draws)
    ratio = policy / np.maximum(holdout, np.finfo(float).tiny) - 1
    relative = _interval(ratio, float(np.median(ratio)))
    return {
        **relative.to_dict(),
        "relative": relative.to_dict(),
        "absolute": _interval(policy - holdout, posts["p"].mean - posts["h"].mean).to_dict(),
        "policy": {"exposures": int(groups["p"][0]), "mean": posts["p"].mean},
        "holdout": {"exposures": int(groups["h"][0]), "mean": posts["h"].mean},
        "chance_policy_better": float(np.mean(policy > holdout)),
    }


def _srm(e: Experiment, cells: Mapping[CellKey, CellCounts]) -> dict[str, Any]:
    """Chi-square of observed against expected exposures (weights or logged propensities)."""
    observed: dict[str, float] = defaultdict(float)
    expected: dict[str, float] = defaultdict(float)
    for (_, _, _, v, _), cell in cells.items():
        observed[v] += cell.exposures
        expected[v] += cell.expected
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
    return metric.kind is MetricKind.CONVERSION


def _guardrails(e: Experiment, cube: _Cube, rng: np.random.Generator,
                options: ReportOptions) -> list[dict[str, Any]]:
    out = []
    for g in e.guardrails:
        rows = _estimates(e, g, _scope_table(e, cube, g.name), rng, options.segment_draws * 5)
        increase_is_harm = _harm_increases(g)
        for row in rows:
            beat = row.pop("chance_to_beat_control")
            row.pop("chance_to_be_best")
            row.pop("expected_loss")
            harm = None if beat is None else (beat if increase_is_harm else 1 - beat)
            row["chance_of_harm"] = harm
            row["harm_flagged"] = bool(harm is not None and harm >= options.harm_threshold)
        out.append({"metric": {"name": g.name, "kind": g.kind.value,
                               "harmful": "increase" if increase_is_harm else "decrease"},
                    "variants": rows})
    return out


def _allocation(e: Experiment, cells: Mapping[CellKey, CellCounts],
                epoch_seconds: float) -> list[dict[str, Any]]:
    per_epoch: dict[int, dict[str, int]] = defaultdict(lambda: dict.fromkeys(e.variant_keys, 0))
    for (g, _, _, v, ep), cell in cells.items():
        if g == "p" and v in e.variant_keys:
            per_epoch[ep][v] += cell.exposures
    return [{"epoch": ep, "start": ep * epoch_seconds, "exposures": counts}
            for ep, counts in sorted(per_epoch.items())]


def _verdict(e: Experiment, rows: list[dict[str, Any]], guardrails: list[dict[str, Any]],
             rule: DecisionSettings) -> dict[str, Any]:
    empty = [r["key"] for r in rows if r["no_data"]]
    if empty:
        listed = ", ".join(f"'{k}'" for k in empty)
        return {"decision": "keep_running", "winner": None,
                "text": f"Keep running: no data yet for {listed}.", "visitors_needed": None}
    v = decide_verdict(
        [r["key"] for r in rows], e.control, [r["exposures"] for r in rows],
        [r["chance_to_be_best"] for r in rows], [r["expected_loss"] for r in rows],
        [r["mean"]["estimate"] for r in rows], [r["estimate_sd"] ** 2 for r in rows], rule,
    )
    for r, interval in zip(rows, v.always_valid, strict=False):
        r["always_valid_uplift"] = interval.to_dict() if interval is not None else None
    decision, text, winner = v.decision, v.text, v.winner
    harmed: dict[str, list[str]] = {r["key"]: [] for g in guardrails for r in g["variants"]}
    for g in guardrails:
        for r in g["variants"]:
            if r["harm_flagged"]:
                harmed[r["key"]].append(g["metric"]["name"])
    if decision == "ship" and winner is not None and winner != e.control and harmed.get(winner):
        decision = "keep_running"
        text = (f"'{winner}' leads on {e.metric.name}, but it likely harms the guardrail "
                f"{', '.join(harmed[winner])}: keep running and look closer before shipping.")
    elif any(harmed.values()):
        flagged = "; ".join(f"'{k}' on {', '.join(v)}" for k, v in harmed.items() if v)
        text += f" Guardrail warning: likely harm by {flagged}."
    return {"decision": decision, "winner": winner if decision == "ship" else None,
            "text": text, "visitors_needed": v.visitors_needed}


def _finite(value: Any) -> Any:
    """The report with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def build_report(e: Experiment, cells: Mapping[CellKey, CellCounts], rng: np.random.Generator,
                 options: ReportOptions | None = None) -> dict[str, Any]:
    """The full report of one experiment from its cell counters."""
    return _finite(_build_report(e, cells, rng, options or ReportOptions()))


def _build_report(e: Experiment, cells: Mapping[CellKey, CellCounts], rng: np.random.Generator,
                  options: ReportOptions) -> dict[str, Any]:
    metric = e.metric
    cube = _Cube(e, cells)
    overall = _estimates(e, metric, _scope_table(e, cube, metric.name), rng, options.draws)
    segments = []
    for persona, channel in sorted(cube.segments):
        t = _scope_table(e, cube, metric.name, (persona, channel))
        if t.n.sum() == 0:
            continue
        segments.append({"persona": persona, "channel": channel,
                         "variants": _estimates(e, metric, t, rng, options.segment_draws)})
    guardrails = _guardrails(e, cube, rng, options)
    return {
        "experiment": e.key,
        "mode": e.mode.value,
        "status": e.status.value,
        "metric": {"name": metric.name, "kind": metric.kind.value},
        "estimator": ("stratified by persona, channel and allocation epoch"
                      if _stratified(e, cube) else "pooled (fixed allocation)"),
        "verdict": _verdict(e, overall, guardrails, e.decision),
        "variants": overall,
        "segments": segments,
        "policy_uplift": _policy_uplift(e, cube, rng, options.draws),
        "srm": _srm(e, cells),
        "guardrails": guardrails,
        "allocation": _allocation(e, cells, options.epoch_seconds),
    }


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
    "chance_to_be_best", "expected_loss",
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
            rows.append([
                scope, persona, channel, v["key"], v["exposures"], v["conversions"],
                v["value_sum"], v["mean"]["estimate"], v["mean"]["lower"], v["mean"]["upper"],
                ab.get("estimate"), ab.get("lower"), ab.get("upper"), rel.get("estimate"),
                rel.get("lower"), rel.get("upper"), v["chance_to_beat_control"],
                v["chance_to_be_best"], v["expected_loss"],
            ])
    return rows
