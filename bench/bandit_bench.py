"""How much the bandit loses while it learns, against baselines, in simulated traffic.

Runs centric's own allocation code (bandits.Learner over bandits.evidence: the functions the
decide path calls, without HTTP) and baselines on the same arrivals, the same outcome draws
and the same choice draws, in four scenarios with known truth. Every scenario has K=5
variants, 100,000 decisions, a posterior refresh every 500 decisions, base rates uniform in
2-8% and uneven segment traffic (Dirichlet(2) shares):

- A: 4 personas x 3 channels; in each segment the best variant is 20% better than the
  runner-up, and which variant is best differs between segments.
- B: 8 personas x 5 channels, likewise.
- C: 8 x 5 segments of which three quarters share one best variant.
- D: 4 x 3 segments as in A, but halfway through the best variant changes in half of the
  segments (the old best and another variant swap rates), and every conversion arrives a
  random 0-2,000 decisions after its exposure.

Traffic runs at TRAFFIC_PER_DAY decisions a day, so the run spans 50 days and the delays of D
reach a day: this is what gives centric's half-life and delay model their time scale.

Regret is expected regret: the best rate in the visitor's segment at that moment minus the
rate of the variant served, summed over decisions. Prints mean +- standard error over the
replications and the share of traffic served each segment's best variant, and writes a plot
of cumulative regret over time.

    python bench/bandit_bench.py                     # 20 replications (about 30 min)
    python bench/bandit_bench.py --reps 3 --plot /tmp/regret.png
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bandits.evidence import (
    DELAY_MEANS_SECONDS,
    DelayStats,
    Evidence,
    delay_mixture,
    fade_rate,
)
from bandits.learner import Learner
from bandits.thompson import prob_best_beta
from experiments.model import BanditSettings

K = 5
DECISIONS = 100_000
REFRESH = 500
TRAFFIC_PER_DAY = 2_000
MS_PER_DECISION = 86_400_000 / TRAFFIC_PER_DAY
MAX_DELAY = 2_000  # decisions (scenario D)


@dataclass(frozen=True)
class World:
    """Known truth of one replication: rates before and after the change, and the draws."""

    rates: np.ndarray  # 2 x S x K: before and after `change_at`
    change_at: int
    segment: np.ndarray  # per decision
    u_choice: np.ndarray
    u_outcome: np.ndarray
    delay: np.ndarray  # per decision, in decisions

    @property
    def segments(self) -> int:
        """Number of segments."""
        return self.rates.shape[1]

    def rates_at(self, i: np.ndarray) -> np.ndarray:
        """Rates of every variant for decisions i (len(i) x K)."""
        phase = (i >= self.change_at).astype(int)
        return self.rates[phase, self.segment[i]]


def _segment_rates(rng: np.random.Generator, best: int) -> np.ndarray:
    """Rates of K variants: runner-up at a base rate in 2-8%, the best 20% above it."""
    base = rng.uniform(0.02, 0.08)
    r = base * rng.uniform(0.75, 1.0, K)
    others = [k for k in range(K) if k != best]
    r[others[int(np.argmax(r[others]))]] = base
    r[best] = 1.2 * base
    return r


def world(name: str, rep: int) -> World:
    """The truth and the draws of scenario `name`, replication `rep`."""
    rng = np.random.default_rng([ord(name), rep])
    personas, channels = {"A": (4, 3), "B": (8, 5), "C": (8, 5), "D": (4, 3)}[name]
    s = personas * channels
    if name == "C":
        shared = int(rng.integers(K))
        own = rng.permutation(s)[: s // 4]
        bests = np.full(s, shared)
        bests[own] = [(shared + 1 + int(rng.integers(K - 1))) % K for _ in own]
    else:
        # Differs across segments: the bests cycle through the variants in a random order.
        bests = rng.permutation(np.resize(rng.permutation(K), s))
    before = np.array([_segment_rates(rng, int(b)) for b in bests])
    after = before.copy()
    change_at = DECISIONS
    if name == "D":
        change_at = DECISIONS // 2
        for seg in rng.permutation(s)[: s // 2]:
            old = int(bests[seg])
            new = (old + 1 + int(rng.integers(K - 1))) % K
            after[seg, [old, new]] = before[seg, [new, old]]
    shares = rng.dirichlet(np.full(s, 2.0))
    segment = rng.choice(s, size=DECISIONS, p=shares)
    delay = rng.uniform(0, MAX_DELAY, DECISIONS) if name == "D" else np.zeros(DECISIONS)
    return World(np.stack([before, after]), change_at, segment, rng.random(DECISIONS),
                 rng.random(DECISIONS), delay)


@dataclass
class History:
    """What a policy has served so far and what came of it."""

    segment: np.ndarray
    arm: np.ndarray
    converted: np.ndarray
    arrives: np.ndarray  # decision index at which the conversion is known

    def known(self, now: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment, arm, and converted-and-arrived flag of every decision before now."""
        seen = self.converted[:now] & (self.arrives[:now] <= now)
        return self.segment[:now], self.arm[:now], seen


def _counts(h: History, now: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    seg, arm, seen = h.known(now)
    cell = seg * K + arm
    n = np.bincount(cell, minlength=s * K).reshape(s, K).astype(float)
    c = np.bincount(cell, weights=seen, minlength=s * K).reshape(s, K)
    return n, c


Policy = Callable[[History, int, World, np.random.Generator], np.ndarray]
# A policy's serving probabilities (segments x K), or the arms it served itself (1-D).


def uniform(h: History, now: int, w: World, rng: np.random.Generator) -> np.ndarray:
    """Equal split."""
    return np.full((w.segments, K), 1.0 / K)


def epsilon_greedy(h: History, now: int, w: World, rng: np.random.Generator) -> np.ndarray:
    """10% uniform exploration, otherwise the per-segment best observed rate."""
    n, c = _counts(h, now, w.segments)
    means = (c + 1e-9 * rng.random(c.shape)) / np.maximum(n, 1.0)
    q = np.full((w.segments, K), 0.1 / K)
    q[np.arange(w.segments), np.argmax(means, axis=1)] += 0.9
    return q


def global_thompson(h: History, now: int, w: World, rng: np.random.Generator) -> np.ndarray:
    """One Beta(1,1) Thompson sampler per experiment, blind to segments."""
    n, c = _counts(h, now, w.segments)
    p = prob_best_beta(1 + c.sum(0), 1 + (n - c).sum(0), rng)
    return np.tile(p, (w.segments, 1))


def segment_thompson(h: History, now: int, w: World, rng: np.random.Generator) -> np.ndarray:
    """Independent Beta(1,1) Thompson sampling per segment (centric's earlier default)."""
    n, c = _counts(h, now, w.segments)
    return np.array([prob_best_beta(1 + c[i], 1 + n[i] - c[i], rng)
                     for i in range(w.segments)])


def oracle(h: History, now: int, w: World, rng: np.random.Generator) -> np.ndarray:
    """The best variant of each segment at this moment."""
    phase = int(now >= w.change_at)
    q = np.zeros((w.segments, K))
    q[np.arange(w.segments), np.argmax(w.rates[phase], axis=1)] = 1.0
    return q


def centric(settings: BanditSettings) -> Policy:
    """The centric learner with these settings, fed the sums Redis would hold."""
    fade = fade_rate(settings.half_life_hours * 3600 if settings.half_life_hours else None)
    floor = settings.floor

    def policy(h: History, now: int, w: World, rng: np.random.Generator) -> np.ndarray:
        seg, arm, seen = h.known(now)
        age_ms = (now - np.arange(now)) * MS_PER_DECISION
        weight = np.exp(-fade * age_ms)
        cell = seg * K + arm
        size = w.segments * K
        # The lazily decayed sums the scripts keep, in closed form.
        exposures = np.bincount(cell, weights=weight, minlength=size)
        conversions = np.bincount(cell, weights=weight * seen, minlength=size)
        delays = (h.arrives[:now][seen] - np.arange(now)[seen]) * MS_PER_DECISION / 1000.0
        stats = DelayStats(float(len(delays)), tuple(
            float(np.exp(-delays / theta).sum()) for theta in DELAY_MEANS_SECONDS))
        mixture = delay_mixture(stats)
        waiting = np.zeros(size)
        for j, theta in enumerate(DELAY_MEANS_SECONDS):
            waiting += mixture[1 + j] * np.bincount(
                cell, weights=weight * np.exp(-age_ms / (theta * 1000.0)), minlength=size)
        matured = np.maximum(exposures - waiting, 0.0).reshape(w.segments, K)
        names = tuple((str(i), "web") for i in range(w.segments))
        z = np.zeros_like(matured)
        ev = Evidence(names, matured, conversions.reshape(w.segments, K), z, z)
        learner = Learner.fit(ev, K, rng, pooling=settings.pooling,
                              prior_alpha=settings.prior_alpha, prior_beta=settings.prior_beta)
        return np.array([learner.allocation(name, floor) for name in names])

    return policy


def mabwiser_thompson() -> Policy:
    """MABWiser's Thompson sampling, one bandit per segment; it serves each decision itself.

    Without delays each refresh adds the last window's decisions (partial_fit); with delays
    the bandits are refitted on everything known so far, as per-segment Thompson does.
    """
    from mabwiser.mab import MAB, LearningPolicy

    bandits: dict[int, MAB] = {}
    fitted = [0]

    def policy(h: History, now: int, w: World, rng: np.random.Generator) -> np.ndarray:
        seg, arm, seen = h.known(now)
        delayed = bool(w.delay.any())
        since = 0 if delayed else fitted[0]
        if delayed or not bandits:
            bandits.clear()
            for i in range(w.segments):
                mab = MAB(list(range(K)), LearningPolicy.ThompsonSampling(),
                          seed=int(rng.integers(2**31)))
                # MABWiser needs every arm once to start; an equal dummy prior of 0 rewards.
                mab.fit(decisions=list(range(K)), rewards=[0] * K)
                bandits[i] = mab
        for i, mab in bandits.items():
            mine = np.flatnonzero(seg[since:] == i) + since
            if len(mine):
                mab.partial_fit(decisions=arm[mine], rewards=seen[mine].astype(int))
        fitted[0] = now
        block = w.segment[now:now + REFRESH]
        return np.array([bandits[int(i)].predict() for i in block], dtype=np.int64)

    return policy


def run(make: Callable[[], Policy], w: World, seed: int) -> tuple[np.ndarray, float]:
    """Cumulative regret per decision and the share served each segment's best variant."""
    rng = np.random.default_rng(seed)
    policy = make()
    h = History(w.segment, np.zeros(DECISIONS, int), np.zeros(DECISIONS, bool),
                np.zeros(DECISIONS))
    idx = np.arange(DECISIONS)
    h.arrives = idx + w.delay
    for start in range(0, DECISIONS, REFRESH):
        q = policy(h, start, w, rng)
        block = idx[start:start + REFRESH]
        if q.ndim == 1:  # the policy served each decision itself
            arm = q
        else:
            cum = np.cumsum(q[w.segment[block]], axis=1)
            arm = np.minimum((w.u_choice[block, None] * cum[:, -1:] > cum).sum(axis=1), K - 1)
        h.arm[block] = arm
        rates = w.rates_at(block)
        h.converted[block] = w.u_outcome[block] < rates[np.arange(len(block)), arm]
    rates = w.rates_at(idx)
    regret = rates.max(axis=1) - rates[idx, h.arm]
    best = rates[idx, h.arm] == rates.max(axis=1)
    return np.cumsum(regret), float(best.mean())


def policies() -> dict[str, Callable[[], Policy]]:
    """A maker of a fresh policy per run for every row of the table, centric's default first."""
    return {
        "centric default": lambda: centric(BanditSettings()),
        "centric, pooling none": lambda: centric(BanditSettings(pooling="none")),
        "centric, half-life 14 days": lambda: centric(BanditSettings(half_life_hours=336.0)),
        "per-segment Thompson": lambda: segment_thompson,
        "MABWiser Thompson per segment": mabwiser_thompson,
        "global Thompson": lambda: global_thompson,
        "epsilon-greedy 10%": lambda: epsilon_greedy,
        "uniform": lambda: uniform,
        "oracle": lambda: oracle,
    }


def _task(task: tuple[str, str, int]) -> tuple[str, str, float, float, np.ndarray]:
    name, label, rep = task
    path, share = run(policies()[label], world(name, rep), seed=rep)
    return name, label, float(path[-1]), share, path[::REFRESH]


def main(argv: list[str] | None = None) -> int:
    """Run every scenario and policy, print the table and write the plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--scenarios", default="ABCD")
    parser.add_argument("--policies", default="", help="subset of the names, separated by ;")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--plot", default="docs/bandit_regret.png")
    args = parser.parse_args(argv)
    labels = [k for k in policies() if not args.policies or k in args.policies.split(";")]
    tasks = [(name, label, rep) for name in args.scenarios for label in labels
             for rep in range(args.reps)]
    started = time.perf_counter()
    with multiprocessing.Pool(args.jobs) as pool:
        results = pool.map(_task, tasks, chunksize=1)
    print(f"K={K}, {DECISIONS:,} decisions, refresh every {REFRESH}, {args.reps} "
          f"replications, {TRAFFIC_PER_DAY:,} decisions a day "
          f"({time.perf_counter() - started:.0f} s)")
    curves: dict[str, dict[str, np.ndarray]] = {}
    for name in args.scenarios:
        curves[name] = {}
        print(f"\nScenario {name}")
        print(f"{'policy':32s} {'regret (mean ± se)':>22s} {'best-variant share':>19s}")
        for label in labels:
            mine = [r for r in results if r[0] == name and r[1] == label]
            f = np.array([r[2] for r in mine])
            se = f.std(ddof=1) / math.sqrt(len(f)) if len(f) > 1 else float("nan")
            curves[name][label] = np.mean([r[4] for r in mine], axis=0)
            print(f"{label:32s} {f.mean():12.1f} ± {se:6.1f} "
                  f"{np.mean([r[3] for r in mine]):18.1%}")
    if args.plot:
        _plot(curves, Path(args.plot))
        print(f"\nplot: {args.plot}")
    return 0


def _plot(curves: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.6), squeeze=False)
    for ax, (name, by_policy) in zip(axes[0], curves.items(), strict=True):
        for label, curve in by_policy.items():
            ax.plot(np.arange(len(curve)) * REFRESH, curve, label=label, lw=1.4)
        ax.set_title(f"Scenario {name}")
        ax.set_xlabel("decisions")
        ax.set_ylabel("cumulative regret (conversions)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
