"""The audit log: who changed which experiment, the personas or an API key, and when.

One capped Redis stream, ``{P:cfg}:audit`` (server.keys), newest entries last. This module
owns its format: every entry is written through :func:`encode`, here or by the Lua scripts
that change definitions (they take :meth:`AuditLog.script_args`, so a change and its entry
are one atomic step), and read back through :func:`decode`.

Stream fields of one entry: ``at`` (epoch ms, decimal), ``actor``, ``action``,
``target_type``, ``target`` and ``details`` (a compact JSON object).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from server.keys import Keyspace

MAX_ID_PART = 2**64 - 1  # each half of a stream id is an unsigned 64-bit number
_SCAN_CHUNK = 500  # entries read per round trip while filtering one target's history


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded change."""

    at: int  # epoch milliseconds, from the app's clock
    actor: str  # the acting key's name and display prefix, or cli:<os user>
    action: str  # create, replace, delete, start, pause, stop, ship, revoke
    target_type: str  # experiment, personas, moments or api_key
    target: str  # the experiment key, "personas", or the key's display prefix
    details: dict[str, Any]  # a compact summary of the change


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Entries newest first, and the cursor to pass as `before` for older ones (or None)."""

    entries: list[AuditEntry]
    next: str | None


def encode(entry: AuditEntry) -> dict[str, str]:
    """The stream fields of an entry."""
    return {"at": str(entry.at), "actor": entry.actor, "action": entry.action,
            "target_type": entry.target_type, "target": entry.target,
            "details": json.dumps(entry.details, separators=(",", ":"), sort_keys=True)}


def decode(fields: dict[str, str]) -> AuditEntry:
    """An entry from its stream fields."""
    try:
        details = json.loads(fields.get("details") or "{}")
    except ValueError:
        details = {}  # never written so; one damaged entry must not hide the others
    try:
        at = int(fields.get("at") or 0)
    except ValueError:
        at = 0
    return AuditEntry(at=at, actor=fields.get("actor", ""), action=fields.get("action", ""),
                      target_type=fields.get("target_type", ""),
                      target=fields.get("target", ""),
                      details=details if isinstance(details, dict) else {})


def parse_id(raw: str) -> tuple[int, int] | None:
    """(milliseconds, sequence) of a stream id such as ``1790000000000-0``, or None."""
    ms, dash, seq = raw.partition("-")
    if not dash or not (ms.isdigit() and seq.isdigit()) or len(ms) > 20 or len(seq) > 20:
        return None
    # isdigit() also accepts other scripts' digits, which Redis would refuse: ASCII only.
    if not (ms.isascii() and seq.isascii()):
        return None
    parsed = int(ms), int(seq)
    return parsed if max(parsed) <= MAX_ID_PART else None


def _previous(stream_id: str) -> str | None:
    """The largest stream id before this one (XREVRANGE's exclusive bound, on any Redis)."""
    parsed = parse_id(stream_id)
    if parsed is None:
        return None
    ms, seq = parsed
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{MAX_ID_PART}" if ms > 0 else None


class AuditLog:
    """Appends to and pages through the audit stream."""

    def __init__(self, client: redis.Redis, keys: Keyspace, maxlen: int) -> None:
        self.client = client
        self.keys = keys
        self.maxlen = maxlen

    def script_args(self, entry: AuditEntry) -> list[str]:
        """The cap and the entry's field/value pairs, as the definition scripts take them."""
        pairs = [part for item in encode(entry).items() for part in item]
        return [str(self.maxlen), *pairs]

    def append(self, entry: AuditEntry) -> None:
        """Record an entry on its own (for changes outside the definitions' slot)."""
        fields: dict[Any, Any] = encode(entry)  # redis-py's own type is invariant in str
        # An exact cap: changes are rare, and the documented length is then exact too.
        self.client.xadd(self.keys.audit_log, fields, maxlen=self.maxlen, approximate=False)

    def page(self, limit: int, before: str | None = None,
             target: tuple[str, str] | None = None) -> AuditPage:
        """Up to `limit` entries older than the cursor `before`, newest first.

        With `target` (type, id) only that target's entries; the walk then reads the stream
        in chunks, at most the whole capped stream.
        """
        end: str | None = "+" if before is None else _previous(before)
        chunk = limit + 1 if target is None else max(limit + 1, _SCAN_CHUNK)
        found: list[tuple[str, AuditEntry]] = []
        while end is not None and len(found) <= limit:
            rows: Any = self.client.xrevrange(self.keys.audit_log, max=end, min="-",
                                              count=chunk)
            for stream_id, fields in rows:
                entry = decode(fields)
                if target is None or (entry.target_type, entry.target) == target:
                    found.append((stream_id, entry))
            if len(rows) < chunk:
                break  # the oldest entry has been read
            end = _previous(rows[-1][0])
        more = len(found) > limit
        found = found[:limit]
        return AuditPage(entries=[entry for _, entry in found],
                         next=found[-1][0] if more and found else None)
