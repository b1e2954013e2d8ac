"""Coverage of revenue intervals with heavy tails, and the CUPED gain, against known truth.

Usage: python bench/revenue_coverage.py [--sims N] [--seed S] [--quick] [--visitors V ...]

1. Revenue grid. Two-arm A/B tests whose visitors buy with probability p (2%, 5%, 10%;
   the treatment's p is 10% higher) and then spend a lognormal total (sigma 0.5, 1.2, 2),
   at 500, 5,000 and 50,000 visitors per arm. Each simulated experiment's counters go
   through the project's `experiments.report.build_report`; the bench prints how often the
   95% intervals of the per-arm revenue per visitor (both arms) and of the treatment's
   absolute uplift contain the true values, next to a plain Welch interval on the same data.
   Robustness rows: Exponential spend (a light tail), and a treatment whose buyers' totals
   spread more than the control's (lognormal sigma 1.5 against 1.0, same mean).
2. CUPED. Visitors are "loyal" (30%) or not; loyalty drives both the pre-exposure value
   recorded with the assignment (purchases before for a conversion metric, revenue before
   for a revenue metric) and the outcome, so that the two correlate about 0.5 (and, in the
   last row, 0.6; the measured correlation is printed). The bench prints the median width of
   the plain and the adjusted uplift interval and the coverage of both. A linear adjustment
   removes rho^2 of each arm's variance, so at 0.5 an interval narrows by 1 - sqrt(0.75) =
   13%; the correlation printed is the control arm's, and the treatment's is a little higher.

The data are drawn with numpy with fixed seeds: the same arguments print the same table.
--visitors keeps only the rows at those visitors per arm (each row keeps its own seed, so a
row prints the same figures as in the full run with as many experiments).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.model import Experiment, Metric, MetricKind, Mode, Variant  # noqa: E402
from experiments.report import CellCounts, ReportOptions, build_report  # noqa: E402

SIGMAS = (0.5, 1.2, 2.0)
# Light-tailed spend, not lognormal: the model must not be biased when the tail is not heavy.
ROBUSTNESS = 0.0
RATES = (0.02, 0.05, 0.10)
VISITORS = (500, 5_000, 50_000)
UPLIFT = 0.10  # the treatment's relative uplift of its buying probability
MEAN_SPEND = 40.0  # every lognormal is scaled to this mean total per buyer
DEFAULT_SIMS = 1000
QUICK_SIMS = 100
# The server's report settings; only per-segment draws are fewer (every figure read here is
# overall, computed first from the seeded generator).
OPTIONS = ReportOptions(segment_draws=200)
Z = 1.959963984540054


def experiment(kind: MetricKind) -> Experiment:
    """A two-arm A/B test on metric "m"."""
    return Experiment(key="bench", name="bench", variants=(Variant("a", 1.0), Variant("b", 1.0)),
                      control="a", metric=Metric("m", kind), mode=Mode.AB, seed="0b")


def cell(x: np.ndarray, y: np.ndarray) -> CellCounts:
    """One cell's counters from per-visitor covariates x and outcomes y (totals, or 0/1)."""
    n = len(y)
    positive = y[y > 0]
    logs = np.log(positive)
    # The counters' slots (experiments.report.METRIC_SLOTS).
    metric = [float(len(positive)), float(y.sum()), float((y**2).sum()),
              float(len(positive)), float(logs.sum()), float((logs**2).sum()), float(x @ y),
              float(positive.sum())]
    return CellCounts(n, float(n), {"m": metric}, [float(x.sum()), float(x @ x)])


def spend(rng: np.random.Generator, sigma: float, size: int) -> np.ndarray:
    """Lognormal totals with mean MEAN_SPEND (sigma 0: Exponential ones)."""
    if sigma == 0:
        return rng.exponential(MEAN_SPEND, size)
    return rng.lognormal(math.log(MEAN_SPEND) - sigma**2 / 2, sigma, size)


def revenue_arm(rng: np.random.Generator, rate: float, sigma: float, n: int) -> np.ndarray:
    """Per-visitor totals: mostly zeros, lognormal for buyers."""
    y = np.zeros(n)
    buyers = rng.random(n) < rate
    y[buyers] = spend(rng, sigma, int(buyers.sum()))
    return y


@dataclass(frozen=True, slots=True)
class Coverage:
    """Shares of intervals that contain the truth, over simulated experiments."""

    mean: float  # per-arm revenue per visitor, both arms
    uplift: float  # treatment minus control
    welch: float  # a plain Welch interval of the same difference
    sims: int


def revenue_coverage(rng: np.random.Generator, sigma: float, rate: float, n: int,
                     sims: int, treatment_sigma: float | None = None) -> Coverage:
    """Simulate `sims` A/B tests of one grid cell and count covering intervals.

    `treatment_sigma`: the treatment's buyers spend with this spread instead (same mean).
    """
    e = experiment(MetricKind.REVENUE)
    truth = np.array([rate, rate * (1 + UPLIFT)]) * MEAN_SPEND
    sigmas = (sigma, sigma if treatment_sigma is None else treatment_sigma)
    mean_hits = uplift_hits = welch_hits = 0
    for _ in range(sims):
        ys = [revenue_arm(rng, p, s, n)
              for p, s in zip((rate, rate * (1 + UPLIFT)), sigmas, strict=True)]
        zeros = np.zeros(n)
        cells = {("p", "default", "web", key, 0): cell(zeros, y)
                 for key, y in zip(("a", "b"), ys, strict=True)}
        report = build_report(e, cells, rng, OPTIONS)
        for variant, true in zip(report["variants"], truth, strict=True):
            mean_hits += variant["mean"]["lower"] <= true <= variant["mean"]["upper"]
        interval = report["variants"][1]["uplift"]["absolute"]
        uplift_hits += interval["lower"] <= truth[1] - truth[0] <= interval["upper"]
        d = ys[1].mean() - ys[0].mean()
        se = math.sqrt(ys[0].var(ddof=1) / n + ys[1].var(ddof=1) / n)
        welch_hits += abs(d - (truth[1] - truth[0])) <= Z * se
    return Coverage(mean_hits / (2 * sims), uplift_hits / sims, welch_hits / sims, sims)


@dataclass(frozen=True, slots=True)
class Gain:
    """Plain against CUPED-adjusted uplift intervals, over simulated experiments."""

    correlation: float  # measured between covariate and outcome, over all visitors
    plain_width: float  # median width of the plain 95% uplift interval
    adjusted_width: float
    plain_coverage: float
    adjusted_coverage: float
    used_by_verdict: float  # share of reports whose verdict used the adjusted figures

    @property
    def narrower(self) -> float:
        """How much narrower the adjusted interval is (0.2 = 20%)."""
        return 1.0 - self.adjusted_width / self.plain_width


# Loyal share, their and the others' buying probability and purchases before the test, per
# metric: chosen so that covariate and outcome correlate about 0.5 (printed as measured).
LOYALTY = {MetricKind.CONVERSION: (0.3, 0.55, 0.04, 5.0, 0.2),
           MetricKind.REVENUE: (0.3, 0.65, 0.03, 6.0, 0.1)}
# A history that predicts more (correlation about 0.6), for comparison.
STRONG_HISTORY = (0.3, 0.66, 0.03, 5.0, 0.15)


def loyal_visitors(rng: np.random.Generator, kind: MetricKind, n: int, lift: float,
                   loyalty: tuple[float, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(covariate, outcome) of n visitors; loyalty drives both."""
    share, p_loyal, p_other, before_loyal, before_other = loyalty or LOYALTY[kind]
    loyal = rng.random(n) < share
    before = rng.poisson(np.where(loyal, before_loyal, before_other))
    buys = rng.random(n) < np.where(loyal, p_loyal, p_other) * (1 + lift)
    if kind is MetricKind.CONVERSION:
        return before.astype(float), buys.astype(float)
    # Revenue: the covariate is what the visitor spent before (lognormal orders of sigma 0.5).
    y = np.zeros(n)
    y[buys] = spend(rng, 0.5, int(buys.sum()))
    return _sums(rng, before), y


def _sums(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    # The sum of k lognormal orders per visitor, drawn all at once.
    orders = spend(rng, 0.5, int(counts.sum()))
    owner = np.repeat(np.arange(len(counts)), counts)
    return np.bincount(owner, weights=orders, minlength=len(counts))


def cuped_gain(rng: np.random.Generator, kind: MetricKind, n: int, sims: int,
               loyalty: tuple[float, ...] | None = None) -> Gain:
    """Simulate `sims` A/B tests with a +10% treatment; compare plain and adjusted uplift."""
    e = experiment(kind)
    # True uplift: the outcome's mean rises by the buying probability's relative lift.
    share, p_loyal, p_other = (loyalty or LOYALTY[kind])[:3]
    base = share * p_loyal + (1 - share) * p_other
    truth = base * UPLIFT * (MEAN_SPEND if kind is MetricKind.REVENUE else 1.0)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    plain_w, adj_w = [], []
    plain_hits = adj_hits = used = 0
    for _ in range(sims):
        arms = [loyal_visitors(rng, kind, n, lift, loyalty) for lift in (0.0, UPLIFT)]
        cells = {("p", "default", "web", key, 0): cell(*arm)
                 for key, arm in zip(("a", "b"), arms, strict=True)}
        report = build_report(e, cells, rng, OPTIONS)
        row = report["variants"][1]
        plain, adjusted = row["uplift"]["absolute"], row["adjusted"]["uplift"]
        plain_w.append(plain["upper"] - plain["lower"])
        adj_w.append(adjusted["upper"] - adjusted["lower"])
        plain_hits += plain["lower"] <= truth <= plain["upper"]
        adj_hits += adjusted["lower"] <= truth <= adjusted["upper"]
        used += bool(report["adjustment"]["used_by_verdict"])
        if len(xs) < 20:
            xs.append(arms[0][0])
            ys.append(arms[0][1])
    correlation = float(np.corrcoef(np.concatenate(xs), np.concatenate(ys))[0, 1])
    return Gain(correlation, float(np.median(plain_w)), float(np.median(adj_w)),
                plain_hits / sims, adj_hits / sims, used / sims)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the revenue coverage grid and the CUPED comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=None,
                        help=f"experiments per row (default {DEFAULT_SIMS}, --quick "
                             f"{QUICK_SIMS})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SIMS} per row")
    parser.add_argument("--visitors", type=int, nargs="+", default=None,
                        help="only the rows at these visitors per arm")
    args = parser.parse_args(argv)
    # Rows keep their index in the full grid: it seeds them.
    visitors = [(k, n) for k, n in enumerate(VISITORS)
                if not args.visitors or n in args.visitors]

    sims = args.sims if args.sims is not None else QUICK_SIMS if args.quick else DEFAULT_SIMS
    start = time.perf_counter()
    print(f"Revenue coverage: {sims} simulated two-arm A/B tests per row, treatment +"
          f"{UPLIFT:.0%}, mean spend per buyer {MEAN_SPEND:g}, report draws {OPTIONS.draws:,}, "
          f"seed {args.seed}")
    print("  (a 95% coverage estimated from this many experiments has a standard error of "
          f"{100 * math.sqrt(0.95 * 0.05 / sims):.1f} points; per-arm rows count both arms)")
    print(f"{'sigma':>5} {'buy':>5} {'visitors/arm':>12} | {'per-arm mean':>12} "
          f"{'uplift':>7} | {'Welch uplift':>12}")
    lowest = (1.0, "")
    highest = (0.0, "")
    for i, sigma in enumerate(SIGMAS):
        for j, rate in enumerate(RATES):
            for k, n in visitors:
                rng = np.random.default_rng([args.seed, i, j, k])
                c = revenue_coverage(rng, sigma, rate, n, sims)
                where = f"sigma {sigma:g}, {rate:.0%}, {n:,}"
                lowest = min(lowest, (c.mean, where), (c.uplift, where))
                highest = max(highest, (c.mean, where), (c.uplift, where))
                print(f"{sigma:5.1f} {rate:5.0%} {n:12,} | {c.mean:12.1%} {c.uplift:7.1%} | "
                      f"{c.welch:12.1%}", flush=True)
    if visitors:
        print(f"  centric's intervals: lowest coverage {lowest[0]:.1%} ({lowest[1]}), highest "
              f"{highest[0]:.1%} ({highest[1]}); target 93% to 97%")
    print("Robustness: Exponential spend (light tail, not lognormal)")
    for j, rate in enumerate(RATES):
        for k, n in visitors:
            rng = np.random.default_rng([args.seed, 50, j, k])
            c = revenue_coverage(rng, ROBUSTNESS, rate, n, sims)
            print(f"{'exp':>5} {rate:5.0%} {n:12,} | {c.mean:12.1%} {c.uplift:7.1%} | "
                  f"{c.welch:12.1%}", flush=True)
    print("Robustness: the treatment's buyers spread their totals more (sigma 1.0 against 1.5, "
          "same mean)")
    for k, n in visitors:
        rng = np.random.default_rng([args.seed, 60, k])
        c = revenue_coverage(rng, 1.0, 0.05, n, sims, treatment_sigma=1.5)
        print(f"{'1/1.5':>5} {0.05:5.0%} {n:12,} | {c.mean:12.1%} {c.uplift:7.1%} | "
              f"{c.welch:12.1%}", flush=True)
    rows: list[tuple[MetricKind, int, tuple[float, ...] | None]] = [
        (MetricKind.CONVERSION, 5_000, None), (MetricKind.CONVERSION, 20_000, None),
        (MetricKind.REVENUE, 5_000, None), (MetricKind.REVENUE, 20_000, None),
        (MetricKind.CONVERSION, 5_000, STRONG_HISTORY)]
    cuped = [(i, row) for i, row in enumerate(rows) if not args.visitors or row[1] in args.visitors]
    if cuped:
        print()
        print(f"CUPED: {sims} simulated A/B tests per row, treatment +{UPLIFT:.0%}")
        print(f"{'metric':>10} {'visitors/arm':>12} {'corr':>5} | {'plain width':>11} "
              f"{'adjusted':>9} {'narrower':>8} | {'plain cov':>9} {'adj cov':>7} | "
              "verdict uses")
    for i, (kind, n, loyalty) in cuped:
        g = cuped_gain(np.random.default_rng([args.seed, 100 + i]), kind, n, sims, loyalty)
        print(f"{kind.value:>10} {n:12,} {g.correlation:5.2f} | {g.plain_width:11.4g} "
              f"{g.adjusted_width:9.4g} {g.narrower:8.1%} | {g.plain_coverage:9.1%} "
              f"{g.adjusted_coverage:7.1%} | adjusted in {g.used_by_verdict:.0%}", flush=True)
    print()
    print(f"time: {time.perf_counter() - start:,.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
