"""Report estimators against simulations with known truth (no Redis needed).

Simpson's paradox under bandit allocation: conversion rates drop after the first epoch while
the bandit moves traffic to the variant that is never worse. Pooled counts then make that
variant look worse; the stratified estimate must cover the truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from bandits import ArmStats, allocation
from experiments.model import Experiment, Metric, Mode, Variant
from experiments.report import CellCounts, ReportOptions, build_report

# 'b' is never worse and better overall, but rates collapse after the first epoch, just as
# the bandit moves most traffic to 'b': pooled counts make 'b' look worse.
RATES = [{"a": 0.20, "b": 0.20}, {"a": 0.02, "b": 0.05}, {"a": 0.02, "b": 0.05},
         {"a": 0.02, "b": 0.05}]
PER_PHASE = 4000
EPOCHS_PER_PHASE = 4  # allocation epochs (report strata) within one rate regime
REFRESHES = 2  # posterior refreshes of the bandit within one epoch


def _experiment(mode: Mode = Mode.BANDIT) -> Experiment:
    return Experiment(key="simpson", name="Simpson", variants=(Variant("a", 1.0),
                      Variant("b", 1.0)), control="a", metric=Metric("purchase"), mode=mode,
                      seed="00ff")


def _simulate(rng: np.random.Generator) -> dict:
    cells: dict = {}
    totals = {"a": [0, 0], "b": [0, 0]}
    batch = PER_PHASE // (EPOCHS_PER_PHASE * REFRESHES)
    for phase, rates in enumerate(RATES):
        for e in range(EPOCHS_PER_PHASE):
            epoch = phase * EPOCHS_PER_PHASE + e
            for _ in range(REFRESHES):
                arms = [ArmStats(totals[v][0], totals[v][1]) for v in ("a", "b")]
                q = allocation(arms, rng, floor=0.05, draws=2000)
                served = rng.multinomial(batch, q)
                for i, v in enumerate(("a", "b")):
                    conversions = int(rng.binomial(served[i], rates[v]))
                    cell = cells.setdefault(("p", "default", "web", v, epoch), CellCounts())
                    cell.exposures += int(served[i])
                    cell.expected += float(q[i] * batch)
                    cell.metrics.setdefault("purchase", [0.0, 0.0, 0.0])[0] += conversions
                    totals[v][0] += int(served[i])
                    totals[v][1] += conversions
    return cells


@pytest.mark.slow
def test_stratified_uplift_covers_the_truth_where_pooling_fails():
    truth = float(np.mean([r["b"] - r["a"] for r in RATES]))  # equal traffic per epoch
    rng = np.random.default_rng(20261123)
    covered = naive_off = 0
    naive_sum = 0.0
    runs = 200
    for _ in range(runs):
        cells = _simulate(rng)
        report = build_report(_experiment(), cells, rng, ReportOptions(draws=20_000))
        b = next(v for v in report["variants"] if v["key"] == "b")
        a = next(v for v in report["variants"] if v["key"] == "a")
        interval = b["uplift"]["absolute"]
        covered += interval["lower"] <= truth <= interval["upper"]
        naive = b["conversions"] / b["exposures"] - a["conversions"] / a["exposures"]
        naive_off += abs(naive - truth) > 0.01
        naive_sum += naive
    assert covered >= 0.90 * runs, f"covered {covered}/{runs}"
    # Pooling is biased: on average it finds less than a third of the true uplift.
    assert naive_sum / runs < truth / 3
    assert naive_off >= 0.80 * runs, f"naive estimate was off in only {naive_off}/{runs}"


def test_ab_mode_pools_and_matches_the_exact_beta_posterior():
    cells = {
        ("p", "default", "web", "a", 1): CellCounts(1000, 1000.0, {"purchase": [50, 0, 0]}),
        ("p", "vip", "app", "a", 2): CellCounts(500, 500.0, {"purchase": [40, 0, 0]}),
        ("p", "default", "web", "b", 1): CellCounts(1000, 1000.0, {"purchase": [70, 0, 0]}),
        ("p", "vip", "app", "b", 2): CellCounts(500, 500.0, {"purchase": [30, 0, 0]}),
    }
    report = build_report(_experiment(Mode.AB), cells, np.random.default_rng(1))
    a, b = report["variants"]
    assert (a["exposures"], a["conversions"], b["conversions"]) == (1500, 90, 100)
    # Beta(1 + 90, 1 + 1410): mean 91 / 1502.
    assert a["mean"]["estimate"] == pytest.approx(91 / 1502)
    assert report["estimator"].startswith("pooled")
    assert [s["persona"] for s in report["segments"]] == ["default", "vip"]
    assert report["srm"]["flagged"] is False
