"""Reading an experiment's counters: summed over the visitor shards and parsed into tallies."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis

from bandits.evidence import DELAY_MEANS_SECONDS, CellState, DelayStats, fade_rate
from experiments.model import Experiment, Mode
from experiments.report import CellCounts, CellKey
from server.keys import SHARDS, Keyspace


@dataclass
class Tally:
    """Visitors, converting visitors, value sum and per-visitor sum of squares."""

    exposures: int = 0
    conversions: int = 0
    value_sum: float = 0.0
    value_sq_sum: float = 0.0


def fade_per_ms(e: Experiment) -> float:
    """The decay rate per ms of an experiment's learning sums (0 when they never fade)."""
    hours = e.bandit.half_life_hours
    return fade_rate(hours * 3600.0 if hours else None)


def learning_fade(e: Experiment) -> str:
    """That rate as the scripts take it: '' for an A/B experiment, which keeps no sums."""
    return repr(fade_per_ms(e)) if e.mode is Mode.BANDIT else ""


# Learning fields of a (persona, channel, variant) cell: prefix -> CellState part.
_PENDING = tuple(f"bw{j + 1}" for j in range(len(DELAY_MEANS_SECONDS)))
_DELAYS = tuple(f"bd{j + 1}" for j in range(len(DELAY_MEANS_SECONDS)))
_LEARNING = ("bt", "bn", *_PENDING, "bc", "bs", "bq")


@dataclass
class Counts:
    """All counters of one experiment: (metric, group, persona, channel, variant) -> Tally.

    Exposures do not depend on the metric; they are copied into every metric's tally.
    `learning` holds the bandit's lazily decayed sums per (persona, channel, variant) in
    each shard (they decay from each shard's own last update), `delays` the delay sums.
    """

    exposures: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    metrics: dict[tuple[str, str, str, str, str], Tally] = field(default_factory=dict)
    learning: list[dict[tuple[str, str, str], CellState]] = field(default_factory=list)
    delays: DelayStats = field(default_factory=DelayStats)

    def learning_cells(self, experiment: Experiment, now_ms: float
                       ) -> dict[tuple[str, str], list[CellState]]:
        """Per segment, the learning sums of every variant summed over shards as of now_ms."""
        fade = fade_per_ms(experiment)
        keys = experiment.variant_keys
        out: dict[tuple[str, str], list[CellState]] = {}
        for shard in self.learning:
            for (persona, channel, variant), state in shard.items():
                if variant not in keys:
                    continue
                row = out.setdefault((persona, channel), [CellState(now_ms)] * len(keys))
                j = keys.index(variant)
                row[j] = _add(row[j], state.aged(now_ms, fade))
        return out

    def tally(self, metric: str, group: str, persona: str, channel: str, variant: str) -> Tally:
        """Counters of one cell (zeros when nothing was recorded)."""
        t = self.metrics.get((metric, group, persona, channel, variant), Tally())
        n = self.exposures.get((group, persona, channel, variant), 0)
        return Tally(n, t.conversions, t.value_sum, t.value_sq_sum)



def _add(a: CellState, b: CellState) -> CellState:
    """Two cells' sums as of the same moment, added."""
    return CellState(a.at_ms, a.exposures + b.exposures,
                     tuple(x + y for x, y in zip(a.pending, b.pending, strict=True)),
                     a.conversions + b.conversions, a.value + b.value, a.value_sq + b.value_sq)


def _learning_state(fields: dict[str, float]) -> CellState:
    return CellState(fields.get("bt", 0.0), fields.get("bn", 0.0),
                     tuple(fields.get(name, 0.0) for name in _PENDING),
                     fields.get("bc", 0.0), fields.get("bs", 0.0), fields.get("bq", 0.0))


def parse(hashes: Iterable[dict[str, str]]) -> Counts:
    """Sum counter hashes (one per shard) into Counts."""
    exposures: dict[tuple[str, str, str, str], int] = defaultdict(int)
    metrics: dict[tuple[str, str, str, str, str], Tally] = defaultdict(Tally)
    learning: list[dict[tuple[str, str, str], CellState]] = []
    delay_count, laplace = 0.0, [0.0] * len(DELAY_MEANS_SECONDS)
    for h in hashes:
        cells: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
        for name, raw in h.items():
            parts = name.split("|")
            if parts[0] in _LEARNING and len(parts) == 4:
                cells[(parts[1], parts[2], parts[3])][parts[0]] = float(raw)
            elif name == "bdk":
                delay_count += float(raw)
            elif name in _DELAYS:
                laplace[_DELAYS.index(name)] += float(raw)
            elif parts[0] == "n" and len(parts) == 5:
                exposures[(parts[1], parts[2], parts[3], parts[4])] += int(raw)
            elif len(parts) == 6:
                t = metrics[(parts[1], parts[2], parts[3], parts[4], parts[5])]
                if parts[0] == "c":
                    t.conversions += int(raw)
                elif parts[0] == "s":
                    t.value_sum += float(raw)
                elif parts[0] == "q":
                    t.value_sq_sum += float(raw)
        learning.append({cell: _learning_state(f) for cell, f in cells.items()})
    return Counts(dict(exposures), dict(metrics), learning,
                  DelayStats(delay_count, tuple(laplace)))


class CounterStore:
    """Reads counters of experiments."""

    def __init__(self, client: redis.Redis, keys: Keyspace) -> None:
        self.client = client
        self.keys = keys

    def read_many(self, experiments: list[Experiment]) -> dict[str, Counts]:
        """Counts of several experiments in one pipelined round trip."""
        pipe = self.client.pipeline(transaction=False)
        for e in experiments:
            for key in self.keys.all_counters(e.key, e.seed):
                pipe.hgetall(key)
        answers = pipe.execute() if experiments else []
        out: dict[str, Counts] = {}
        for i, e in enumerate(experiments):
            out[e.key] = parse(answers[i * SHARDS:(i + 1) * SHARDS])
        return out

    def read(self, experiment: Experiment) -> Counts:
        """Counts of one experiment."""
        return self.read_many([experiment])[experiment.key]

    def read_cells(self, experiment: Experiment) -> dict[CellKey, CellCounts]:
        """Per-epoch cells of one experiment (for reports), summed over the shards."""
        pipe = self.client.pipeline(transaction=False)
        for shard in range(SHARDS):
            pipe.hgetall(self.keys.epoch_counters(experiment.key, experiment.seed, shard))
        return parse_cells(pipe.execute())


# Per-epoch metric counter prefix -> its slot in a CellCounts.metrics tally (the report's
# METRIC_SLOTS order): converting visitors, value sum, sum of squared visitor totals,
# positive visitors, sum of ln totals, sum of ln^2 totals, sum of covariate x outcome, sum
# of the positive totals.
COUNTER_SLOTS = {"c": 0, "s": 1, "q": 2, "p": 3, "l": 4, "ll": 5, "xy": 6, "ps": 7}
# Per-epoch exposure counter prefixes: exposures, expected exposures, covariate sum and sum
# of squares.
EXPOSURE_FIELDS = frozenset({"n", "e", "x", "xx"})


def parse_cells(hashes: Iterable[dict[str, str]]) -> dict[CellKey, CellCounts]:
    """Sum per-epoch counter hashes (one per shard) into report cells."""
    cells: dict[CellKey, CellCounts] = {}
    # A cell's "group|persona|channel|variant|epoch" ends several fields in every shard:
    # each distinct ending is split and looked up once (None: not a cell's ending).
    by_ending: dict[str, CellCounts | None] = {}
    slots = len(COUNTER_SLOTS)
    for h in hashes:
        for name, raw in h.items():
            prefix, _, rest = name.partition("|")
            exposure = prefix in EXPOSURE_FIELDS
            if exposure:
                metric, ending = "", rest
            elif prefix in COUNTER_SLOTS:
                metric, _, ending = rest.partition("|")
            else:
                # Prefixes this version does not know are skipped: counters written by newer
                # scripts must not break the reports of workers not yet upgraded.
                continue
            if ending not in by_ending:
                parts = ending.split("|")
                by_ending[ending] = None if len(parts) != 5 else cells.setdefault(
                    (parts[0], parts[1], parts[2], parts[3], int(parts[4])), CellCounts())
            cell = by_ending[ending]
            if cell is None:
                continue
            if exposure:
                if prefix == "n":
                    cell.exposures += int(raw)
                elif prefix == "e":
                    cell.expected += float(raw)
                else:
                    cell.covariate[0 if prefix == "x" else 1] += float(raw)
            else:
                tally = cell.metrics.get(metric)
                if tally is None:
                    tally = cell.metrics[metric] = [0.0] * slots
                tally[COUNTER_SLOTS[prefix]] += float(raw)
    return cells
