"""Coverage of the report's 95% uplift interval in simulations with known truth.

Usage: python bench/estimator_coverage.py [--runs 200]

1. Simpson's paradox under a bandit (tests/test_report_estimators.py's scenario): rates
   collapse after the first phase while the bandit moves traffic; prints how often the
   stratified interval covers the true uplift and how far the naive pooled estimate is.
2. Thin strata: 192 strata of 40 visitors, a 15/85 allocation, rates 5% and 8%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.report import ReportOptions, build_report  # noqa: E402
from tests.test_report_estimators import (  # noqa: E402
    RATES,
    _bandit,
    _experiment,
    _simulate,
    thin_strata_cells,
)


def simpson(runs: int) -> None:
    """Print coverage and the naive estimate's error for the Simpson scenario."""
    rng = np.random.default_rng(1)
    truth = float(np.mean([r["b"] - r["a"] for r in RATES]))
    covered, naive, est = 0, [], []
    for _ in range(runs):
        report = build_report(_experiment(), _simulate(rng), rng, ReportOptions(draws=20_000))
        a, b = report["variants"]
        interval = b["uplift"]["absolute"]
        covered += interval["lower"] <= truth <= interval["upper"]
        est.append(interval["estimate"])
        naive.append(b["conversions"] / b["exposures"] - a["conversions"] / a["exposures"])
    print(f"Simpson: truth {truth:+.4f}; stratified mean {np.mean(est):+.4f}, 95% interval "
          f"covers the truth in {covered}/{runs} ({covered / runs:.1%}); naive pooled mean "
          f"{np.mean(naive):+.4f}, off by more than 0.01 in "
          f"{np.mean(np.abs(np.array(naive) - truth) > 0.01):.0%} of runs")


def thin(runs: int) -> None:
    """Print coverage for many thin strata with a starved control."""
    rng = np.random.default_rng(2)
    covered, est = 0, []
    for _ in range(runs):
        report = build_report(_bandit(), thin_strata_cells(rng), rng, ReportOptions(draws=10_000,
                                                                    segment_draws=1000))
        interval = report["variants"][1]["uplift"]["absolute"]
        covered += interval["lower"] <= 0.03 <= interval["upper"]
        est.append(interval["estimate"])
    print(f"Thin strata: truth +0.0300; mean estimate {np.mean(est):+.4f}, interval covers "
          f"the truth in {covered}/{runs} ({covered / runs:.1%})")


def main() -> int:
    """Run both simulations."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    simpson(args.runs)
    thin(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
