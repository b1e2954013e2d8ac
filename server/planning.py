"""Planning an experiment before it runs: an A/B split against the bandit, by simulation.

`centric simulate` answers a product owner's questions about an experiment with known truth:
how many days until the report decides, how many conversions the experiment costs against
always serving the best variant, and how often the decision is the right one. It runs the
server's own code on simulated traffic: the bandit's serving probabilities come from
``bandits.learner.Learner`` (what the decide path calls), the decision from
``experiments.report.build_report`` on cells shaped as ``server.stores.counters.parse_cells``
builds them from the Redis counters. It needs no Redis and no running server; the figure is
``server.plots.planning``.

The model, kept simple on purpose:

- **Truth.** The control converts at ``base_rate``; variant 2 (``v2``) at
  ``base_rate * (1 + uplift)``; any further treatment at the base rate. Every segment shares
  the truth.
- **Traffic.** ``daily_traffic`` visitors a day, spread evenly over the hours of the day and
  over the persona x channel segments: each segment's visitors in an hour are a Poisson draw
  with mean ``daily_traffic / 24 / segments``. Every visitor is new and is exposed at once;
  a conversion happens with the variant's rate and is counted at once (no delay).
- **A/B split.** Equal weights; each visitor's variant is a multinomial draw with them (the
  server hashes the visitor id, which is the same split in distribution).
- **Bandit.** Default ``BanditSettings`` (pooling "auto", floor 1%, half-life 90 days). The
  allocation is refreshed every ``refresh_hours`` simulated hours (the server refreshes
  every half second, so the simulated bandit reacts a little later than a real one): the
  evidence is the plain exposure and conversion counts so far, each hour's counts faded by
  the half-life (``bandits.evidence.fade_rate``), with no delay model since conversions
  arrive at once. Visitors then draw their variant from each segment's allocation.
- **Cells and epochs.** Exposures, expected exposures (the visitor count times each
  variant's serving probability, what ``lib_exposure.lua`` adds up) and conversions per
  (group "p", persona, channel, variant, epoch), as ``parse_cells`` returns them. For the
  bandit one epoch is one allocation refresh (``ReportOptions.epoch_seconds`` set to match),
  so each stratum of the report has one allocation. The A/B report pools its cells whatever
  the epochs (its allocation never changes), so its cells use one epoch per day, which keeps
  the report fast without changing its verdict.
- **Decision.** After every simulated day the report is read; the experiment is decided
  the first day its verdict (``report["verdict"]["decision"]``) is no longer
  ``keep_running``: ``ship`` (of ``report["verdict"]["winner"]``, a treatment or the
  control) or ``no_difference``. The verdict is an always-valid sequential test, so reading
  it daily keeps its error rate. (While a variant has fewer than ``min_exposures`` visitors
  the verdict is ``keep_running`` by its first rule; the report is not built then.) The
  report runs with 5,000 Monte Carlo draws instead of the server's 20,000 (see
  ``REPORT_DRAWS``).
- **Lost conversions** are expected ones: for every visitor, the best rate minus the rate of
  the variant served. "Until the decision" counts the experiment itself; "over the horizon"
  adds the days after the decision, when every visitor gets the shipped variant (the control
  after "no difference"), so a quick test that ships the best variant costs little.
"""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bandits.evidence import Evidence, fade_rate
from bandits.learner import Learner
from experiments.model import Experiment, Metric, Mode, Status, Variant
from experiments.report import (
    METRIC_SLOTS,
    CellCounts,
    CellKey,
    ReportOptions,
    build_report,
    json_safe,
)

MODES = (Mode.AB, Mode.BANDIT)
MODE_NAMES = {Mode.AB: "A/B split", Mode.BANDIT: "bandit"}
METRIC = "conversion"
CHANNEL = "web"
HOUR_MS = 3_600_000.0
MAX_VARIANTS = 20
MAX_SEGMENTS = 64  # the server's default cap of persona x channel segments per experiment
MAX_DAYS = 365
MAX_DAILY_TRAFFIC = 1e9
MAX_RUNS = 10_000
# Monte Carlo sizes of the report (the server's are 20,000 and 2,000 draws). The verdict's
# chance to be best and expected loss are exact for conversion rates; the draws only set the
# interval widths its variances come from, which 5,000 draws give within about 1.5%. A
# quarter of the draws makes each daily report about twice as fast.
REPORT_DRAWS = 5_000
SEGMENT_DRAWS = 1_000
# Outcomes of one simulated experiment.
OUTCOMES = ("best", "other", "no_difference", "undecided")
WIDTH = 92  # of the printed table's notes


@dataclass(frozen=True, slots=True)
class Plan:
    """The experiment to plan and the simulation's size."""

    base_rate: float
    uplift: float
    daily_traffic: float
    variants: int = 2
    segments: int = 1
    days: int = 60
    runs: int = 10
    seed: int = 0
    refresh_hours: int = 4

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.base_rate) and 0.0 < self.base_rate < 1.0):
            problems.append(f"--base-rate must lie strictly between 0 and 1 (a conversion "
                            f"rate such as 0.04), not {self.base_rate:g}")
        if not (math.isfinite(self.uplift) and self.uplift > -1.0):
            problems.append(f"--uplift must be a relative uplift above -1 (0.10 for +10%), "
                            f"not {self.uplift:g}")
        elif not problems and self.base_rate * (1.0 + self.uplift) > 1.0:
            problems.append(f"--base-rate x (1 + --uplift) = "
                            f"{self.base_rate * (1.0 + self.uplift):g} is not a rate (above 1)")
        if not (math.isfinite(self.daily_traffic)
                and 0 < self.daily_traffic <= MAX_DAILY_TRAFFIC):
            problems.append(f"--daily-traffic must be a positive number of visitors a day "
                            f"(at most {MAX_DAILY_TRAFFIC:,.0f}), not {self.daily_traffic:g}")
        bounds = (("variants", 2, MAX_VARIANTS, "arms including the control"),
                  ("segments", 1, MAX_SEGMENTS, "persona x channel segments"),
                  ("days", 1, MAX_DAYS, "days"), ("runs", 1, MAX_RUNS, "replications"),
                  ("refresh_hours", 1, 24, "hours between allocation refreshes"))
        for name, low, high, what in bounds:
            value = getattr(self, name)
            if not low <= value <= high:
                problems.append(f"--{name.replace('_', '-')} must be from {low} to {high} "
                                f"({what}), not {value}")
        if self.seed < 0:
            problems.append(f"--seed must not be negative, not {self.seed}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def keys(self) -> tuple[str, ...]:
        """Variant keys: the control, then v2, v3, ..."""
        return ("control", *(f"v{i}" for i in range(2, self.variants + 1)))

    @property
    def rates(self) -> np.ndarray:
        """True conversion rate of every variant (variant 2 carries the uplift)."""
        rates = np.full(self.variants, self.base_rate)
        rates[1] = self.base_rate * (1.0 + self.uplift)
        return rates

    @property
    def segment_names(self) -> tuple[tuple[str, str], ...]:
        """The (persona, channel) of every simulated segment."""
        return tuple((f"persona{i + 1}", CHANNEL) for i in range(self.segments))

    def to_dict(self) -> dict[str, Any]:
        """The inputs, JSON-ready."""
        return {"base_rate": self.base_rate, "uplift": self.uplift,
                "daily_traffic": self.daily_traffic, "variants": self.variants,
                "segments": self.segments, "days": self.days, "runs": self.runs,
                "seed": self.seed, "refresh_hours": self.refresh_hours}


def experiment(plan: Plan, mode: Mode) -> Experiment:
    """The experiment definition the server would hold: equal weights, default settings."""
    return Experiment(key="simulated", name="simulated experiment",
                      variants=tuple(Variant(k, 1.0) for k in plan.keys), control="control",
                      metric=Metric(METRIC), mode=mode, status=Status.RUNNING)


@dataclass(frozen=True, slots=True)
class Run:
    """One simulated experiment."""

    day: int | None  # day of the decision (1 = after the first day); None: none in the horizon
    decision: str | None  # the verdict's decision: "ship" or "no_difference"; None: undecided
    winner: str | None  # the shipped variant
    outcome: str  # one of OUTCOMES
    lost_during: float  # expected lost conversions until the decision (or the horizon)
    lost_total: float  # ... over the whole horizon, the shipped variant serving after it
    best_share: float  # share of the experiment's visitors served a truly best variant
    visitors: int  # visitors in the experiment until the decision (or the horizon)
    lost_by_day: np.ndarray = field(repr=False)  # cumulative lost conversions, end of each day

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the daily series)."""
        return {"day": self.day, "decision": self.decision, "winner": self.winner,
                "outcome": self.outcome, "lost_during": self.lost_during,
                "lost_total": self.lost_total, "best_share": self.best_share,
                "visitors": self.visitors}


def _outcome(plan: Plan, decision: str | None, winner: str | None) -> str:
    """Whether a decision shipped a truly best variant (a treatment only if it beats control)."""
    if decision is None:
        return "undecided"
    if decision != "ship" or winner is None:
        return "no_difference"
    rates = plan.rates
    w = plan.keys.index(winner)
    right = rates[w] == rates.max() and (w == 0 or rates[w] > rates[0])
    return "best" if right else "other"


def _bandit_allocation(e: Experiment, segments: Sequence[tuple[str, str]], exposures: np.ndarray,
                       conversions: np.ndarray, seen: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """Serving probabilities (segments x variants) from the server's learner on these counts."""
    k = len(e.variants)
    rows = np.flatnonzero(seen)
    if len(rows):
        zeros = np.zeros((len(rows), k))
        evidence = Evidence(tuple(segments[int(i)] for i in rows), exposures[rows],
                            conversions[rows], zeros, zeros.copy())
    else:
        evidence = Evidence.empty(k)
    settings = e.bandit
    learner = Learner.fit(evidence, k, rng, kind=e.metric.kind.value, pooling=settings.pooling,
                          prior_alpha=settings.prior_alpha, prior_beta=settings.prior_beta)
    return np.array([learner.allocation(segment, settings.floor) for segment in segments])


def simulate_run(plan: Plan, mode: Mode, seed: np.random.SeedSequence) -> Run:
    """One experiment in one mode, hour by hour, read every day until it decides."""
    traffic_seed, learner_seed, report_seed = seed.spawn(3)
    traffic = np.random.default_rng(traffic_seed)
    learner_rng = np.random.default_rng(learner_seed)
    report_rng = np.random.default_rng(report_seed)
    e = experiment(plan, mode)
    bandit = mode is Mode.BANDIT
    keys, segments = plan.keys, plan.segment_names
    k, s = len(keys), len(segments)
    rates = plan.rates
    gap = rates.max() - rates  # expected conversions lost per visitor served each variant
    best = gap == 0.0
    epoch_hours = plan.refresh_hours if bandit else 24
    options = ReportOptions(draws=REPORT_DRAWS, segment_draws=SEGMENT_DRAWS,
                            epoch_seconds=epoch_hours * 3600.0)
    half_life = e.bandit.half_life_hours
    fade = math.exp(-fade_rate(half_life * 3600.0 if half_life else None) * HOUR_MS)
    per_hour = plan.daily_traffic / 24.0 / s

    q = np.tile(np.asarray(e.normalised_weights), (s, 1))
    evidence_n, evidence_c = np.zeros((s, k)), np.zeros((s, k))
    seen = np.zeros(s, dtype=bool)
    served = np.zeros(k)
    cells: dict[CellKey, CellCounts] = {}
    lost = 0.0
    lost_by_day = np.zeros(plan.days)
    for hour in range(plan.days * 24):
        if bandit and hour % plan.refresh_hours == 0:
            q = _bandit_allocation(e, segments, evidence_n, evidence_c, seen, learner_rng)
        visitors = traffic.poisson(per_hour, s)
        arms = traffic.multinomial(visitors, q)
        conversions = traffic.binomial(arms, rates)
        epoch = hour // epoch_hours
        for i in np.flatnonzero(visitors):
            persona, channel = segments[i]
            for j, key in enumerate(keys):
                cell = cells.get(("p", persona, channel, key, epoch))
                if cell is None:
                    cell = CellCounts(metrics={METRIC: [0.0] * len(METRIC_SLOTS)})
                    cells[("p", persona, channel, key, epoch)] = cell
                cell.exposures += int(arms[i, j])
                cell.expected += float(visitors[i] * q[i, j])
                cell.metrics[METRIC][0] += float(conversions[i, j])
        evidence_n = evidence_n * fade + arms
        evidence_c = evidence_c * fade + conversions
        seen |= visitors > 0
        hour_served = arms.sum(0)
        served += hour_served
        lost += float(hour_served @ gap)
        if hour % 24 != 23:
            continue
        day = hour // 24 + 1
        lost_by_day[day - 1] = lost
        if served.min() < e.decision.min_exposures:
            continue  # the verdict's first rule: keep running
        verdict = build_report(e, cells, report_rng, options)["verdict"]
        if verdict["decision"] == "keep_running":
            continue
        winner = verdict["winner"] if verdict["decision"] == "ship" else None
        after = plan.daily_traffic * float(gap[keys.index(winner or e.control)])
        lost_by_day[day:] = lost + after * np.arange(1, plan.days - day + 1)
        return Run(day, verdict["decision"], winner, _outcome(plan, verdict["decision"], winner),
                   lost, float(lost_by_day[-1]), _share(served, best), int(served.sum()),
                   lost_by_day)
    return Run(None, None, None, "undecided", lost, lost, _share(served, best),
               int(served.sum()), lost_by_day)


def _share(served: np.ndarray, best: np.ndarray) -> float:
    total = float(served.sum())
    return float(served[best].sum()) / total if total else math.nan


@dataclass(frozen=True, slots=True)
class Summary:
    """The runs of one mode, summarised."""

    mode: Mode
    runs: tuple[Run, ...]
    days: int

    @property
    def decided(self) -> int:
        """Runs decided within the horizon."""
        return sum(r.day is not None for r in self.runs)

    def day_quantiles(self) -> tuple[float, float, float]:
        """10th, 50th and 90th percentile of the days to a decision (inf: not within days)."""
        days = np.array([math.inf if r.day is None else r.day for r in self.runs])
        lo, mid, hi = np.quantile(days, [0.1, 0.5, 0.9], method="inverted_cdf")
        return float(lo), float(mid), float(hi)

    def share(self, outcome: str) -> float:
        """Share of runs with this outcome."""
        return sum(r.outcome == outcome for r in self.runs) / len(self.runs)

    def mean(self, name: str) -> float:
        """Mean over the runs of a Run figure."""
        values = [getattr(r, name) for r in self.runs]
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    def decision_days(self) -> list[int | None]:
        """The day of every run's decision (None: none within the horizon)."""
        return [r.day for r in self.runs]

    def lost_by_day(self) -> np.ndarray:
        """Mean cumulative lost conversions at the end of every day."""
        return np.mean([r.lost_by_day for r in self.runs], axis=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (undecided days as null)."""
        lo, mid, hi = self.day_quantiles()

        def day(x: float) -> float | None:
            return None if math.isinf(x) else x

        return {
            "mode": self.mode.value, "runs": len(self.runs), "decided": self.decided,
            "undecided": len(self.runs) - self.decided,
            "days_to_decision": {"p10": day(lo), "median": day(mid), "p90": day(hi)},
            "outcomes": {o: self.share(o) for o in OUTCOMES},
            "lost_conversions_until_decision": self.mean("lost_during"),
            "lost_conversions_over_horizon": self.mean("lost_total"),
            "best_variant_traffic_share": self.mean("best_share"),
            "lost_conversions_by_day": [float(x) for x in self.lost_by_day()],
            "each_run": [r.to_dict() for r in self.runs],
        }


@dataclass(frozen=True, slots=True)
class Simulation:
    """Every run of both modes for one plan."""

    plan: Plan
    summaries: tuple[Summary, ...]
    seconds: float

    def summary(self, mode: Mode) -> Summary:
        """The summary of one mode."""
        return next(s for s in self.summaries if s.mode is mode)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        plan = self.plan
        return json_safe({
            "inputs": plan.to_dict(),
            "truth": {"variants": list(plan.keys), "rates": [float(r) for r in plan.rates],
                      "best": [k for k, g in zip(plan.keys, plan.rates == plan.rates.max(),
                                                 strict=True) if g]},
            "modes": {s.mode.value: s.to_dict() for s in self.summaries},
            "seconds": self.seconds,
        })


def simulate(plan: Plan) -> Simulation:
    """Run the plan's replications in both modes (independent random streams per run)."""
    start = time.perf_counter()
    root = np.random.SeedSequence(plan.seed)
    streams = root.spawn(len(MODES))
    summaries = []
    for mode, stream in zip(MODES, streams, strict=True):
        runs = tuple(simulate_run(plan, mode, child) for child in stream.spawn(plan.runs))
        summaries.append(Summary(mode, runs, plan.days))
    return Simulation(plan, tuple(summaries), time.perf_counter() - start)


def _days(x: float, days: int) -> str:
    return f">{days}" if math.isinf(x) else f"{x:.0f}"


def title(plan: Plan) -> str:
    """One line naming the scenario (for a figure)."""
    return (f"{plan.variants} variants, control {plan.base_rate:.2%}, v2 {plan.uplift:+.1%}, "
            f"{plan.daily_traffic:,.0f} visitors a day, {plan.segments} segment"
            f"{'s' if plan.segments > 1 else ''}, {plan.runs} runs per mode")


def table(sim: Simulation) -> str:
    """The comparison as a readable, aligned text table."""
    plan = sim.plan
    rates = plan.rates
    truth = ", ".join(f"{k} {r:.2%}" for k, r in zip(plan.keys, rates, strict=True))
    best = [k for k, g in zip(plan.keys, rates == rates.max(), strict=True) if g]
    heading = (f"centric simulate: {plan.variants} variants ({truth}; v2 {plan.uplift:+.1%}), "
               f"{plan.segments} segment{'s' if plan.segments > 1 else ''}, "
               f"{plan.daily_traffic:,.0f} visitors a day, up to {plan.days} days, "
               f"{plan.runs} runs per mode (seed {plan.seed}); truly best: {', '.join(best)}")
    lines = [*textwrap.wrap(heading, WIDTH), ""]
    rows: list[tuple[str, ...]] = [("", *(MODE_NAMES[s.mode] for s in sim.summaries))]

    def row(label: str, cell: Any) -> None:
        rows.append((label, *(cell(s) for s in sim.summaries)))

    def quantiles(s: Summary) -> str:
        lo, mid, hi = s.day_quantiles()
        return f"{_days(mid, plan.days)} [{_days(lo, plan.days)}, {_days(hi, plan.days)}]"

    row(f"decided within {plan.days} days", lambda s: f"{s.decided}/{len(s.runs)}")
    row("days to decision: median [10%, 90%]", quantiles)
    row("decision: shipped a truly best variant", lambda s: f"{s.share('best'):.0%}")
    row("          shipped a variant not best", lambda s: f"{s.share('other'):.0%}")
    row("          no meaningful difference", lambda s: f"{s.share('no_difference'):.0%}")
    row(f"          no decision in {plan.days} days", lambda s: f"{s.share('undecided'):.0%}")
    row("lost conversions until the decision", lambda s: f"{s.mean('lost_during'):,.1f}")
    row(f"lost conversions over {plan.days} days", lambda s: f"{s.mean('lost_total'):,.1f}")
    row("traffic share of the best variant", lambda s: f"{s.mean('best_share'):.1%}")
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join([r[0].ljust(widths[0]),
                                *(v.rjust(w) for v, w in zip(r[1:], widths[1:], strict=True))]))
    lines.append("")
    for note in (
        "days: the report is read after every simulated day; a decision is its verdict "
        "leaving keep_running (ship, or no meaningful difference)",
        "lost conversions: expected, against serving the best variant to everyone; over "
        f"{plan.days} days the shipped variant (the control after 'no difference') serves "
        "everyone after the decision",
        f"bandit: default settings, allocation refreshed every {plan.refresh_hours} h "
        f"(one report epoch each); simulated in {sim.seconds:.1f} s",
    ):
        lines += textwrap.wrap(note, WIDTH, subsequent_indent="  ")
    return "\n".join(lines) + "\n"
