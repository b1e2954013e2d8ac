"""How often the report's verdict is wrong, measured from outside on simulated A/B tests.

Usage: python bench/verdict_bench.py [--sims N] [--looks L] [--visitors V] [--seed S]
                                     [--jobs J] [--quick]

Every simulated experiment is an A/B test (fixed equal weights, one persona, channel and
epoch, so the report uses its pooled posteriors) whose counters grow by V / L visitors per
arm between looks, up to V per arm at the last look. At every look the counters go through
the project's own `experiments.report.build_report`, seeded by the experiment as the server
seeds it, with the default decision settings, and the bench reads `verdict.decision` and
`verdict.winner` (a "ship" whose winner is the control means "keep the control").

For 2, 3 and 5 arms and for a conversion and a revenue metric it prints:

- the false "ship" rate in A/A tests (every arm identical), at one look (the last) and when
  the report is read at each of the L looks ("did it ever say ship?"), counting "ship a
  treatment" and "ship either side" (a treatment or the control) separately;
- the power at a +10% and a +20% true uplift of one treatment (the others equal to the
  control): the share of experiments whose verdict ever says "ship" that treatment;
- the median visitors (all arms together) at the first look whose verdict is not
  keep_running, in the +20% experiments;
- how often the last look's 95% interval of a treatment's absolute uplift over the control
  covers the true difference.

The data are drawn directly with numpy (binomial conversions; each converter's spend is
lognormal, each visitor converts at most once, so a visitor's total is its spend), with a
fixed seed: the same arguments print the same table, whatever --jobs is. The default, 1,000
experiments per row and scenario, takes 45 to 75 minutes on two cores; --quick runs 20.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.model import (  # noqa: E402
    DecisionSettings,
    Experiment,
    Metric,
    MetricKind,
    Mode,
    Variant,
)
from experiments.report import CellCounts, ReportOptions, build_report  # noqa: E402

ARMS = (2, 3, 5)
KINDS = (MetricKind.CONVERSION, MetricKind.REVENUE)
UPLIFTS = (0.0, 0.10, 0.20)  # 0.0 is the A/A test
DEFAULT_SIMS = 1000
QUICK_SIMS = 20
CHUNK = 5  # simulated experiments per task handed to a worker process
# The verdict reads the overall figures only, which the report computes first from its
# seeded generator; per-segment figures come afterwards, so fewer segment draws leave every
# overall number and the verdict unchanged and only save time.
OPTIONS = ReportOptions(segment_draws=200)


@dataclass(frozen=True, slots=True)
class Settings:
    """What is simulated: traffic, looks, base rates and spend, number of experiments."""

    visitors: int  # per arm, at the last look
    looks: int
    rate: float  # conversion rate of the control (and of every arm in A/A)
    mu: float  # lognormal spend per converter: log-scale mean
    sigma: float  # and log-scale standard deviation
    sims: int  # simulated experiments per row and scenario
    seed: int

    @property
    def mean_spend(self) -> float:
        """Expected spend of one converter."""
        return math.exp(self.mu + self.sigma**2 / 2)


@dataclass(frozen=True, slots=True)
class Task:
    """A chunk of simulated experiments of one row (arms, metric) and one scenario."""

    arms: int
    kind: MetricKind
    uplift: float
    first: int  # index of the first simulated experiment
    count: int


@dataclass(slots=True)
class Outcome:
    """What one simulated experiment's verdicts said, look after look."""

    ship_target_ever: bool = False  # A/A: any treatment; else the uplifted treatment
    ship_any_ever: bool = False  # a treatment or the control
    ship_target_last: bool = False
    ship_any_last: bool = False
    first_decision: int | None = None  # total visitors at the first decided look
    covered: list[bool] = field(default_factory=list)  # per treatment, at the last look
    reports: int = 0


def _experiment(arms: int, kind: MetricKind, seed: str) -> Experiment:
    keys = tuple(f"v{i}" for i in range(arms))
    return Experiment(key="bench", name="bench", variants=tuple(Variant(k, 1.0) for k in keys),
                      control=keys[0], metric=Metric("m", kind), mode=Mode.AB, seed=seed)


def _report_rng(e: Experiment) -> np.random.Generator:
    # As server.services.reports seeds every report: by the experiment, the same each look.
    return np.random.default_rng(int(e.seed or "0", 16))


def simulate(s: Settings, arms: int, kind: MetricKind, uplift: float, index: int) -> Outcome:
    """Run one simulated experiment through all looks and collect its verdicts."""
    row = ARMS.index(arms) * len(KINDS) + KINDS.index(kind)
    rng = np.random.default_rng([s.seed, row, UPLIFTS.index(uplift), index])
    e = _experiment(arms, kind, f"{int(rng.integers(2**32)):08x}")
    rates = np.full(arms, s.rate)
    rates[1] *= 1 + uplift  # the treatment with the true uplift (none in A/A)
    truth = rates * (s.mean_spend if kind is MetricKind.REVENUE else 1.0)
    targets = set(e.variant_keys[1:]) if uplift == 0 else {e.variant_keys[1]}
    n = np.zeros(arms, dtype=np.int64)
    c = np.zeros(arms, dtype=np.int64)
    value, square = np.zeros(arms), np.zeros(arms)
    log_sum, log_square = np.zeros(arms), np.zeros(arms)
    out = Outcome()
    for look in range(1, s.looks + 1):
        added = round(s.visitors * look / s.looks) - n
        converted = rng.binomial(added, rates)
        n += added
        c += converted
        if kind is MetricKind.REVENUE:
            for i in range(arms):
                spend = rng.lognormal(s.mu, s.sigma, int(converted[i]))
                value[i] += spend.sum()
                square[i] += (spend**2).sum()
                log_sum[i] += np.log(spend).sum()
                log_square[i] += (np.log(spend) ** 2).sum()
        last = look == s.looks
        if out.ship_target_ever and not last:
            continue  # every "ever" question is answered; only the last look is still needed
        cells = {("p", "default", "web", key, 0): CellCounts(
            int(n[i]), float(n.sum() / arms),
            # The counters' slots (experiments.report.METRIC_SLOTS); every buyer's total is
            # its one spend, so buyers are converters.
            {"m": [int(c[i]), float(value[i]), float(square[i]), int(c[i]), float(log_sum[i]),
                   float(log_square[i]), 0.0, float(value[i])]})
            for i, key in enumerate(e.variant_keys)}
        report = build_report(e, cells, _report_rng(e), OPTIONS)
        out.reports += 1
        verdict = report["verdict"]
        ship = verdict["decision"] == "ship"
        ship_target = ship and verdict["winner"] in targets
        out.ship_target_ever |= ship_target
        out.ship_any_ever |= ship
        if out.first_decision is None and verdict["decision"] != "keep_running":
            out.first_decision = int(n.sum())
        if last:
            out.ship_target_last, out.ship_any_last = ship_target, ship
            for i, variant in enumerate(report["variants"][1:], start=1):
                interval = variant["uplift"]["absolute"]
                out.covered.append(interval["lower"] <= truth[i] - truth[0] <= interval["upper"])
    return out


def _run(args: tuple[Settings, Task]) -> tuple[Task, list[Outcome]]:
    s, t = args
    return t, [simulate(s, t.arms, t.kind, t.uplift, i) for i in range(t.first,
                                                                      t.first + t.count)]


def _tasks(s: Settings) -> Iterator[Task]:
    # Dearest first (revenue, many arms), so that the workers finish together.
    for arms in sorted(ARMS, reverse=True):
        for kind in reversed(KINDS):
            for uplift in UPLIFTS:
                for first in range(0, s.sims, CHUNK):
                    yield Task(arms, kind, uplift, first, min(CHUNK, s.sims - first))


def run_all(s: Settings, jobs: int) -> dict[tuple[int, MetricKind, float], list[Outcome]]:
    """Every simulated experiment of every row and scenario, by (arms, kind, uplift)."""
    results: dict[tuple[int, MetricKind, float], list[tuple[int, list[Outcome]]]] = {}
    work = [(s, t) for t in _tasks(s)]
    with ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else nullcontext() as pool:
        for t, outcomes in pool.map(_run, work) if pool else map(_run, work):
            results.setdefault((t.arms, t.kind, t.uplift), []).append((t.first, outcomes))
    return {k: [o for _, chunk in sorted(v, key=lambda x: x[0]) for o in chunk]
            for k, v in results.items()}


def _share(flags: Sequence[bool]) -> str:
    return f"{100 * sum(flags) / len(flags):5.1f}%" if flags else "    -"


def _median_visitors(outcomes: Sequence[Outcome], most: int) -> str:
    # An experiment that never decided counts as "more than the last look".
    reached = sorted(o.first_decision if o.first_decision is not None else math.inf
                     for o in outcomes)
    m = float(np.median(reached))
    return f">{most:,}" if math.isinf(m) else f"{m:,.0f}"


HEADER = """\
Columns (rates are shares of the simulated experiments of that row and scenario):
  A/A 1 look   false "ship" at the last look only (what you get reading the report once at
               the planned sample size): T = ship a treatment, T|C = ship a treatment or keep
               the control (either side), both wrong since every arm is identical
  A/A L looks  the same, but the verdict is read at every look: did it EVER say ship?
  power        the uplifted treatment is ever shipped within the looks, at a true relative
               uplift of +10% / +20% of its conversion rate (so also of revenue per visitor)
  median n     median visitors, all arms together, at the first look whose verdict is not
               keep_running, in the +20% experiments ('>' = more than half never decided)
  coverage     share of last-look 95% intervals of a treatment's absolute uplift over the
               control that contain the true difference (every treatment, all scenarios)"""


def print_table(s: Settings, results: dict[tuple[int, MetricKind, float], list[Outcome]],
                ) -> None:
    """The table of false ship rates, power, visitors to a decision and coverage."""
    looks = f"{s.looks} looks"
    print(f"{'':12}| {'A/A 1 look':^15}| {'A/A ' + looks:^15}| {'power':^15}| "
          f"{'median n':>10} | {'coverage':>8}")
    print(f"{'arms metric':12}| {'T':>6} {'T|C':>7} | {'T':>6} {'T|C':>7} | "
          f"{'+10%':>6} {'+20%':>7} | {'(+20%)':>10} | {'':>8}")
    print("-" * 83)
    for arms in ARMS:
        for kind in KINDS:
            aa, up10, up20 = (results[(arms, kind, u)] for u in UPLIFTS)
            covered = [f for u in UPLIFTS for o in results[(arms, kind, u)] for f in o.covered]
            print(f"{arms} {kind.value:10}| {_share([o.ship_target_last for o in aa])} "
                  f"{_share([o.ship_any_last for o in aa]):>7} | "
                  f"{_share([o.ship_target_ever for o in aa])} "
                  f"{_share([o.ship_any_ever for o in aa]):>7} | "
                  f"{_share([o.ship_target_ever for o in up10])} "
                  f"{_share([o.ship_target_ever for o in up20]):>7} | "
                  f"{_median_visitors(up20, s.visitors * arms):>10} | {_share(covered):>8}")


def main(argv: Sequence[str] | None = None) -> int:
    """Simulate, then print the settings, the table and the time taken."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=None,
                        help=f"experiments per row and scenario (default {DEFAULT_SIMS}, "
                             f"--quick {QUICK_SIMS})")
    parser.add_argument("--looks", type=int, default=30, help="looks, equally spaced")
    parser.add_argument("--visitors", type=int, default=20_000,
                        help="visitors per arm at the last look")
    parser.add_argument("--rate", type=float, default=0.05, help="control conversion rate")
    parser.add_argument("--mu", type=float, default=3.0, help="lognormal spend: mu")
    parser.add_argument("--sigma", type=float, default=1.2, help="lognormal spend: sigma")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (default: up to 2)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a fast look: {QUICK_SIMS} experiments per row and scenario")
    args = parser.parse_args(argv)
    sims = args.sims if args.sims is not None else QUICK_SIMS if args.quick else DEFAULT_SIMS
    if sims < 1 or args.looks < 1 or args.visitors < args.looks:
        parser.error("need --sims >= 1, --looks >= 1 and --visitors >= --looks")
    s = Settings(args.visitors, args.looks, args.rate, args.mu, args.sigma, sims, args.seed)
    d = DecisionSettings()
    print("Verdict bench: the report's current verdict (experiments.report.build_report), "
          "A/B mode, pooled posteriors")
    print(f"  {s.sims} simulated experiments per row and scenario "
          f"({s.sims * len(UPLIFTS) * len(ARMS) * len(KINDS)} in all), seed {s.seed}, "
          f"{args.jobs} worker process(es)")
    print(f"  {s.visitors:,} visitors per arm at the last look, {s.looks} equally spaced looks "
          f"(+{s.visitors / s.looks:,.0f} per arm each)")
    print(f"  conversion: rate {s.rate:.1%}; revenue: {s.rate:.1%} convert, spend "
          f"lognormal(mu={s.mu:g}, sigma={s.sigma:g}) per converter "
          f"(mean {s.mean_spend:.2f}, revenue per visitor {s.rate * s.mean_spend:.3f})")
    print(f"  decision settings (defaults): alpha {d.alpha}, effect_scale {d.effect_scale}, "
          f"chance_to_be_best {d.chance_to_be_best}, loss_threshold {d.loss_threshold}, "
          f"rope {d.rope}, min_exposures {d.min_exposures}; report draws {OPTIONS.draws:,}")
    print(f"  a rate near 5% has a standard error of about "
          f"{100 * math.sqrt(0.05 * 0.95 / s.sims):.1f} points at this number of experiments")
    print(HEADER)
    print()
    start = time.perf_counter()
    results = run_all(s, args.jobs)
    elapsed = time.perf_counter() - start
    print_table(s, results)
    reports = sum(o.reports for v in results.values() for o in v)
    print()
    print(f"time: {elapsed:,.1f} s wall for {reports:,} reports "
          f"({1000 * elapsed * args.jobs / reports:.1f} ms of a worker each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
