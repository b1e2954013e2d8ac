"""Exporting an experiment's decision/outcome log (its 16 shard streams merged by time)."""

from __future__ import annotations

import csv
import heapq
import json
from collections.abc import Iterator
from typing import IO, Any

import redis

from experiments.model import Experiment
from server.keys import SHARDS, Keyspace

COLUMNS = ("id", "kind", "time_ms", "decision_id", "persona", "channel", "variant", "group",
           "propensity", "epoch", "metric", "value", "event_id")
_KINDS = {"d": "decision", "o": "outcome"}
_FIELDS = {"d": "decision_id", "p": "persona", "c": "channel", "v": "variant", "g": "group",
           "w": "propensity", "ep": "epoch", "m": "metric", "x": "value", "e": "event_id",
           "t": "time_ms"}


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _entries(client: redis.Redis, key: str, batch: int = 1000) -> Iterator[tuple[str, dict]]:
    start = "-"
    while True:
        chunk: list[tuple[str, dict]] = client.xrange(key, min=start, max="+", count=batch)  # type: ignore[assignment]
        yield from chunk
        if len(chunk) < batch:
            return
        start = "(" + chunk[-1][0]


def records(client: redis.Redis, keys: Keyspace, e: Experiment) -> Iterator[dict[str, Any]]:
    """Every logged decision and outcome of an experiment, oldest first."""
    streams = [_entries(client, keys.log(e.key, e.seed, s)) for s in range(SHARDS)]
    merged = heapq.merge(*streams, key=lambda item: _stream_id(item[0]))
    for entry_id, fields in merged:
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row["id"] = entry_id
        row["kind"] = _KINDS.get(fields.get("k", ""), fields.get("k"))
        for short, name in _FIELDS.items():
            if short in fields:
                row[name] = fields[short]
        for name in ("time_ms", "epoch"):
            if row[name] is not None:
                row[name] = int(row[name])
        for name in ("propensity", "value"):
            if row[name] is not None:
                row[name] = float(row[name])
        yield row


def write(rows: Iterator[dict[str, Any]], out: IO[str], fmt: str) -> int:
    """Write rows as JSON lines or CSV; return how many."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
    else:
        for row in rows:
            out.write(json.dumps(row) + "\n")
            count += 1
    return count
