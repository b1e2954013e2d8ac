"""Moving visitors stored by centric 0.1 into the visitor hash (``centric migrate``).

0.1 kept each visitor's attributes and assignments in two hashes of their own, with JSON
assignment records. A server of this version does not read them, so without this step it
would assign those visitors afresh and count their exposures a second time. Run it once,
with the servers stopped, before starting this version; running it again changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from server.keys import ASSIGNMENT, ATTRIBUTE, SHARDS, Keyspace
from server.stores import assignment_record
from server.stores.assignment_record import AssignmentRecord


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """How many visitors, attributes and assignments moved."""

    visitors: int
    attributes: int
    assignments: int


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def record_from_json(raw: str) -> str:
    """A 0.1 JSON assignment record as a record line."""
    a = json.loads(raw)
    pending = bool(a.get("pe"))
    return assignment_record.encode(AssignmentRecord(
        seed_tag=assignment_record.seed_tag(str(a["u"])), variant=str(a["v"]),
        group=str(a["g"]), persona=str(a["p"]), channel=str(a["c"]), epoch=_text(a["ep"]),
        assigned_ms=_text(a["t"]), decision_id=str(a["d"]), propensity=_text(a["w"]),
        covariate=_text(a.get("cx")), left_ms=_text(a.get("x")),
        # 0.1 spelled the kind out ("purchase|conversion"); records keep its first letter.
        outcomes={k.split("|")[0] + "|" + k.split("|")[1][:1]: _text(v)
                  for k, v in (a.get("m") or {}).items()},
        pending_variants=_text(a.get("vs")) if pending else None,
        pending_serving=_text(a.get("s")) if pending else None))


def migrate(client: redis.Redis, keys: Keyspace) -> MigrationResult:
    """Move every 0.1 attribute and assignment hash into its visitor hash, then drop it.

    The 0.1 dedupe set stays where it is: it is this version's overflow set of counted event
    ids, under the same key and with the same scores.
    """
    nodes: set[str] = set()
    for shard in range(SHARDS):
        start = len(keys.shard_tag(shard)) + len(":as:")
        for name in client.scan_iter(match=keys.legacy_visitor_pattern(shard), count=1000):
            nodes.add(str(name)[start:])
    attributes = assignments = 0
    for node in sorted(nodes):
        old = keys.legacy_visitor(node)
        profile = keys.visitor(node).profile
        if not client.exists(profile):
            # Expired meanwhile (they expire together): nothing to carry over, and writing
            # would leave a visitor hash without its TTL.
            client.delete(*old)
            continue
        attrs: dict[str, str] = client.hgetall(old[0])  # type: ignore[assignment]
        records: dict[str, str] = client.hgetall(old[1])  # type: ignore[assignment]
        pipe = client.pipeline(transaction=False)
        # HSETNX: whatever this version wrote already is newer and wins.
        for name, value in attrs.items():
            pipe.hsetnx(profile, ATTRIBUTE + name, value)
        for experiment, raw in records.items():
            pipe.hsetnx(profile, ASSIGNMENT + experiment, record_from_json(raw))
        pipe.delete(*old)
        pipe.execute()
        attributes += len(attrs)
        assignments += len(records)
    return MigrationResult(len(nodes), attributes, assignments)
