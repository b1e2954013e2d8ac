"""Offline policy evaluation of an experiment from its decision/outcome log.

One row per logged decision with a positive propensity, its reward joined from the outcomes
by decision id: for a conversion metric 1 if the decision has at least one outcome of the
primary metric, for a revenue metric the sum of that metric's values. Policy and holdout
decisions both count: the logged propensity already mixes the holdout's uniform share in.
Segments are the (persona, channel) pairs the log names (beyond an experiment's segment cap
that is other/other, as the counters and the bandit see it).
"""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from bandits import offline
from experiments.model import Experiment, MetricKind, Mode
from server import export
from server.keys import Keyspace
from server.services.catalog import fit_posterior
from server.stores.counters import CounterStore

LEVEL = 0.95
ESTIMATORS = ("ips", "snips", "dr")
# The allocation is Monte Carlo over the posterior: a fixed generator makes the same
# counters give the same "current" row every time the command runs.
ALLOCATION_SEED = 0


@dataclass(frozen=True, slots=True)
class LoggedData:
    """An experiment's log as arrays, with the names behind the indices."""

    log: offline.Log
    segments: tuple[tuple[str, str], ...]  # (persona, channel) of each segment index
    variants: tuple[str, ...]  # variant key of each action index
    skipped: int  # logged decisions left out: no propensity, unknown variant or a repeat


@dataclass(frozen=True, slots=True)
class PolicyValue:
    """One candidate policy and its estimated value under each estimator."""

    name: str
    description: str
    probabilities: np.ndarray | None  # segments x variants; None for the logged policy
    estimates: dict[str, offline.Estimate]
    ess: float  # effective number of logged decisions behind the importance weights


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Every candidate policy of one experiment, evaluated on its log."""

    experiment: Experiment
    data: LoggedData
    policies: tuple[PolicyValue, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as null)."""
        e, data = self.experiment, self.data
        return {
            "experiment": e.key, "mode": e.mode.value, "status": e.status.value,
            "metric": e.metric.name, "kind": e.metric.kind.value, "control": e.control,
            "decisions": len(data.log), "skipped": data.skipped, "level": LEVEL,
            "segments": [{"persona": p, "channel": c} for p, c in data.segments],
            "variants": list(data.variants),
            "policies": [_policy_dict(p, data) for p in self.policies],
        }


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _policy_dict(p: PolicyValue, data: LoggedData) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "description": p.description,
                           "ess": _number(p.ess)}
    for name in ESTIMATORS:
        est = p.estimates[name]
        out[name] = {"estimate": _number(est.estimate), "se": _number(est.se),
                     "lower": _number(est.lower), "upper": _number(est.upper), "n": est.n}
    out["probabilities"] = None if p.probabilities is None else [
        {"persona": persona, "channel": channel,
         "serving": dict(zip(data.variants, (float(x) for x in row), strict=True))}
        # An empty log still has one (unnamed) segment row: it names none.
        for (persona, channel), row in zip(data.segments,
                                           p.probabilities[:len(data.segments)], strict=True)]
    return out


def logged_data(rows: Iterable[dict[str, Any]], experiment: Experiment) -> LoggedData:
    """Decisions with a positive propensity as arrays, rewards joined from the outcomes."""
    variants = experiment.variant_keys
    index = {key: i for i, key in enumerate(variants)}
    decisions: dict[str, tuple[tuple[str, str], int, float]] = {}
    rewards: dict[str, float] = {}
    skipped = 0
    revenue = experiment.metric.kind is MetricKind.REVENUE
    for row in rows:
        if row["kind"] == "decision":
            propensity = row["propensity"]
            if (row["decision_id"] in decisions or row["variant"] not in index
                    or propensity is None or not 0 < propensity <= 1):
                skipped += 1
                continue
            decisions[row["decision_id"]] = ((row["persona"] or "", row["channel"] or ""),
                                             index[row["variant"]], float(propensity))
        elif row["kind"] == "outcome" and row["metric"] == experiment.metric.name:
            did = row["decision_id"]
            if revenue:
                rewards[did] = rewards.get(did, 0.0) + float(row["value"] or 0.0)
            else:
                rewards[did] = 1.0  # converted: at least one outcome, whatever its value
    segments = tuple(sorted({segment for segment, _, _ in decisions.values()}))
    seg_index = {segment: i for i, segment in enumerate(segments)}
    ids = list(decisions)
    log = offline.Log(
        np.array([seg_index[decisions[d][0]] for d in ids], dtype=np.int64),
        np.array([decisions[d][1] for d in ids], dtype=np.int64),
        np.array([decisions[d][2] for d in ids], dtype=float),
        np.array([rewards.get(d, 0.0) for d in ids], dtype=float),
        max(len(segments), 1), len(variants))
    return LoggedData(log, segments, variants, skipped)


def load(client: redis.Redis, keys: Keyspace, experiment: Experiment) -> LoggedData:
    """Read an experiment's log from Redis into arrays."""
    return logged_data(export.records(client, keys, experiment), experiment)


def current_policy(client: redis.Redis, keys: Keyspace, experiment: Experiment,
                   segments: tuple[tuple[str, str], ...]) -> np.ndarray:
    """What the server's allocation code serves each segment now, segments x variants.

    A/B: the normalised weights. Bandit: the workers' own fit (fit_posterior) on the counters
    as they are now, aged to the wall clock (read here for any status, where a worker fits
    only running bandits).
    The holdout's uniform share is left out: this is the policy the holdout is compared to.
    """
    if experiment.mode is not Mode.BANDIT:
        weights = np.asarray(experiment.normalised_weights, dtype=float)
        return np.tile(weights, (max(len(segments), 1), 1))
    if not segments:
        return np.full((1, len(experiment.variants)), 1.0 / len(experiment.variants))
    learner = fit_posterior(experiment, CounterStore(client, keys).read(experiment),
                            time.time() * 1000.0, np.random.default_rng(ALLOCATION_SEED))
    return np.array([learner.allocation(segment, experiment.bandit.floor)
                     for segment in segments], dtype=float)


def candidates(experiment: Experiment, data: LoggedData,
               current: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """The target policies: control, each other variant, best per segment, current."""
    log = data.log
    order = [experiment.control, *[k for k in data.variants if k != experiment.control]]
    out = []
    for key in order:
        what = "the control for all" if key == experiment.control else f"{key} for all"
        out.append((f"all:{key}", what, offline.constant(data.variants.index(key), log)))
    out.append(("best-per-segment",
                "each segment's variant with the highest mean reward in the log "
                "(chosen on the same data: optimistic)", offline.best_per_segment(log)))
    source = ("the bandit's allocation from the counters now" if experiment.mode is Mode.BANDIT
              else "the A/B weights")
    out.append(("current", f"what the server serves now: {source}", current))
    return out


def evaluate(experiment: Experiment, data: LoggedData, current: np.ndarray) -> Evaluation:
    """Run every estimator on every candidate policy, the logged policy first."""
    log = data.log
    values = [PolicyValue("logged", "the policy that made the logged decisions (on-policy "
                          "mean: a sanity check)", None, offline.on_policy(log, LEVEL),
                          float(len(log)))]
    for name, description, pi in candidates(experiment, data, current):
        values.append(PolicyValue(name, description, pi, offline.evaluate(log, pi, LEVEL),
                                  offline.effective_sample_size(offline.weights(log, pi))))
    return Evaluation(experiment, data, tuple(values))


def run(client: redis.Redis, keys: Keyspace, experiment: Experiment) -> Evaluation:
    """Load an experiment's log and evaluate every candidate policy on it."""
    data = load(client, keys, experiment)
    current = current_policy(client, keys, experiment, data.segments)
    return evaluate(experiment, data, current)


def _decimals(evaluation: Evaluation) -> int:
    """Decimals that show three significant digits of the largest estimate."""
    # More would be noise: the intervals are wide in the second digit already.
    scale = max((abs(est.estimate) for p in evaluation.policies
                 for est in p.estimates.values() if math.isfinite(est.estimate)), default=0.0)
    if scale == 0:
        return 3
    return min(max(0, 2 - math.floor(math.log10(scale))), 8)


def table(evaluation: Evaluation) -> str:
    """The evaluation as a readable, aligned text table."""
    e, data = evaluation.experiment, evaluation.data
    digits = _decimals(evaluation)

    def cell(est: offline.Estimate) -> str:
        if not math.isfinite(est.estimate):
            return "n/a"
        if not math.isfinite(est.se):
            return f"{est.estimate:.{digits}f}"
        return f"{est.estimate:.{digits}f} [{est.lower:.{digits}f}, {est.upper:.{digits}f}]"

    level = f"{LEVEL:.0%}"
    header = ("POLICY", f"IPS [{level} CI]", f"SNIPS [{level} CI]", f"DR [{level} CI]",
              "ESS", "N")
    rows = [header] + [(p.name, *(cell(p.estimates[k]) for k in ESTIMATORS),
                        f"{p.ess:.0f}", str(p.estimates["ips"].n))
                       for p in evaluation.policies]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = [f"experiment {e.key} ({e.mode.value}, {e.status.value}): mean {e.metric.name} "
             f"({e.metric.kind.value}) per decision",
             f"{len(data.log)} logged decisions in {len(data.segments)} segments, "
             f"{data.skipped} skipped", ""]
    for r in rows:
        lines.append("  ".join([r[0].ljust(widths[0]),
                                *(v.rjust(w) for v, w in zip(r[1:], widths[1:], strict=True))]))
    lines.append("")
    notes = [f"{p.name}: {p.description}" for p in evaluation.policies]
    notes.append("ESS: effective number of logged decisions behind the importance weights; "
                 "N: logged decisions used")
    for note in notes:
        lines += textwrap.wrap(note, 96, subsequent_indent="  ")
    return "\n".join(lines) + "\n"
