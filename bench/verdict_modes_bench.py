"""False "ship" rates of the verdict outside plain A/B tests: under the bandit, and with CUPED.

Usage: python bench/verdict_modes_bench.py [--sims N] [--seed S] [--quick] [--only bandit|cuped]

`bench/verdict_bench.py` measures A/B experiments with pooled posteriors. This bench reads
the report's verdict at 30 looks of A/A experiments (every arm identical, 5% conversion) in
the two other situations the verdict meets:

1. Bandit mode, 2 and 3 arms: the server's own Thompson allocation
   (`bandits.Learner` with its defaults, exploration floor 1%) serves 1,400 visitors per arm
   and look, one allocation epoch per look, so the report uses its stratified estimates.
2. A/B mode with a pre-exposure covariate that correlates about 0.5 with the outcome
   (`bench/revenue_coverage.py`'s loyal visitors), 2 arms, conversion and revenue: the
   verdict then reads the CUPED-adjusted estimates.

It prints how often the verdict ever said "ship" a treatment (T) or either side (T|C).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bandits import Evidence, Learner  # noqa: E402
from experiments.model import Experiment, Metric, MetricKind, Mode, Variant  # noqa: E402
from experiments.report import CellCounts, ReportOptions, build_report  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import revenue_coverage  # noqa: E402  (its loyal visitors and counters)

LOOKS = 30
PER_LOOK = 1_400  # visitors per arm and look under the bandit
RATE = 0.05
CUPED_VISITORS = 20_000  # per arm at the last look
DEFAULT_SIMS = 300
QUICK_SIMS = 30
OPTIONS = ReportOptions(segment_draws=200)


def _experiment(arms: int, mode: Mode, kind: MetricKind = MetricKind.CONVERSION) -> Experiment:
    keys = tuple(f"v{i}" for i in range(arms))
    return Experiment(key="bench", name="bench", variants=tuple(Variant(k, 1.0) for k in keys),
                      control="v0", metric=Metric("m", kind), mode=mode, seed="0a")


def _verdict(e: Experiment, cells: dict) -> tuple[bool, bool]:
    """(shipped a treatment, shipped either side) at this look."""
    verdict = build_report(e, cells, np.random.default_rng(int(e.seed, 16)), OPTIONS)["verdict"]
    ship = verdict["decision"] == "ship"
    return ship and verdict["winner"] != e.control, ship


SEGMENT = (("default", "web"),)
ZERO = np.zeros((1, 5))


def bandit_aa(arms: int, rng: np.random.Generator) -> tuple[bool, bool]:
    """One A/A experiment under the bandit, read at every look."""
    e = _experiment(arms, Mode.BANDIT)
    cells: dict = {}
    totals = np.zeros((arms, 2), dtype=np.int64)
    for look in range(LOOKS):
        q = Learner.fit(Evidence(SEGMENT, totals[None, :, 0].astype(float),
                                 totals[None, :, 1].astype(float), ZERO[:, :arms],
                                 ZERO[:, :arms]), arms, rng, draws=2000).allocation(
            SEGMENT[0], 0.01)
        served = rng.multinomial(PER_LOOK * arms, q)
        converted = rng.binomial(served, RATE)
        for i, key in enumerate(e.variant_keys):
            cells[("p", "default", "web", key, look)] = CellCounts(
                int(served[i]), float(q[i] * PER_LOOK * arms), {"m": [int(converted[i])]})
        totals[:, 0] += served
        totals[:, 1] += converted
        treatment, either = _verdict(e, cells)
        if either:
            return treatment, either
    return False, False


def cuped_aa(kind: MetricKind, rng: np.random.Generator) -> tuple[bool, bool]:
    """One two-arm A/A experiment with a covariate, read at every look."""
    e = _experiment(2, Mode.AB, kind)
    arms = [revenue_coverage.loyal_visitors(rng, kind, CUPED_VISITORS, 0.0) for _ in range(2)]
    for look in range(1, LOOKS + 1):
        upto = CUPED_VISITORS * look // LOOKS
        cells = {("p", "default", "web", key, 0): revenue_coverage.cell(x[:upto], y[:upto])
                 for key, (x, y) in zip(e.variant_keys, arms, strict=True)}
        treatment, either = _verdict(e, cells)
        if either:
            return treatment, either
    return False, False


def main(argv: Sequence[str] | None = None) -> int:
    """Simulate and print the false ship rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=None,
                        help=f"experiments per row (default {DEFAULT_SIMS}, --quick "
                             f"{QUICK_SIMS})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("bandit", "cuped"), default=None,
                        help="run one group of rows")
    args = parser.parse_args(argv)
    sims = args.sims if args.sims is not None else QUICK_SIMS if args.quick else DEFAULT_SIMS
    start = time.perf_counter()
    print(f"A/A experiments read at {LOOKS} looks, {sims} per row, seed {args.seed}; a 5% "
          f"rate has a standard error of {100 * math.sqrt(0.05 * 0.95 / sims):.1f} points")
    print(f"{'situation':48} | {'ship T':>7} {'T|C':>7}")
    rows = [(f"bandit, {arms} arms, conversion", lambda r, a=arms: bandit_aa(a, r))
            for arms in (2, 3)]
    rows += [(f"A/B with CUPED (corr ~0.5), 2 arms, {kind.value}",
              lambda r, k=kind: cuped_aa(k, r))
             for kind in (MetricKind.CONVERSION, MetricKind.REVENUE)]
    # Row i keeps its seeds whichever rows run.
    chosen = [i for i, (label, _) in enumerate(rows)
              if args.only is None or label.startswith(args.only)
              or (args.only == "cuped" and "CUPED" in label)]
    for i in chosen:
        label, run = rows[i]
        outcomes = [run(np.random.default_rng([args.seed, i, s])) for s in range(sims)]
        treatment = sum(t for t, _ in outcomes) / sims
        either = sum(e for _, e in outcomes) / sims
        print(f"{label:48} | {treatment:7.1%} {either:7.1%}", flush=True)
    print(f"time: {time.perf_counter() - start:,.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
