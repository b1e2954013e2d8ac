"""Moment definitions and their members.

Formats owned here: the definitions JSON list at ``{P:cfg}:moments``, the generations hash,
each moment's members zset (node -> entry sequence number), its entries hash (node ->
``entries|entered ms``) and its sequence counter, which ``server/lua/moment_sweep.lua``
maintains.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from server.keys import Keyspace
from server.scripts import Scripts

SWEEP_CHUNK = 100  # customers per membership script


@dataclass(frozen=True, slots=True)
class Moment:
    """A named rule over lifecycle and prediction facts, and what to send to its members."""

    name: str
    when: dict[str, Any]
    channel: str = "email"
    experiment: str | None = None  # decides the message of a first entry
    followup_experiment: str | None = None  # decides it on every later entry
    cooldown_days: float | None = None  # a member still in after this enters again
    description: str = ""

    def experiment_for(self, entries: int) -> str | None:
        """The experiment that picks the message for a member's n-th entry."""
        if entries > 1 and self.followup_experiment:
            return self.followup_experiment
        return self.experiment

    def to_json(self) -> dict[str, Any]:
        """The moment as the API shows it and as it is stored."""
        return {"name": self.name, "description": self.description, "when": self.when,
                "channel": self.channel, "experiment": self.experiment,
                "followup_experiment": self.followup_experiment,
                "cooldown_days": self.cooldown_days}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Moment:
        """Parse a stored (already validated) moment."""
        return cls(name=d["name"], when=d["when"], channel=d.get("channel", "email"),
                   experiment=d.get("experiment"),
                   followup_experiment=d.get("followup_experiment"),
                   cooldown_days=d.get("cooldown_days"), description=d.get("description", ""))


@dataclass(frozen=True, slots=True)
class Member:
    """One current member: its node, the entry's sequence number, count and time."""

    node: str
    seq: int
    entries: int
    entered_ms: int


class MomentStore:
    """Persists moment definitions and membership."""

    def __init__(self, client: redis.Redis, keys: Keyspace, scripts: Scripts) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts

    def load(self) -> list[Moment]:
        """Every moment, in the order they were put."""
        raw = self.client.get(self.keys.moments)
        return [Moment.from_json(d) for d in json.loads(raw)] if raw else []

    def save(self, moments: Sequence[Moment]) -> None:
        """Replace the definitions; membership of moments no longer defined is deleted.

        A name defined anew gets a new generation, so a sweep still running on the old
        definition writes nothing. The sequence numbers stay: a job's cursor never points
        back, whatever was deleted and defined again.
        """
        names = {m.name for m in moments}
        current = self.generations()
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.moments,
                 json.dumps([m.to_json() for m in moments], separators=(",", ":")))
        for name in set(current) - names:
            pipe.hdel(self.keys.moment_generations, name)
            pipe.delete(self.keys.moment_members(name), self.keys.moment_entries(name))
        for name in names - set(current):
            pipe.hset(self.keys.moment_generations, name, secrets.token_hex(8))
        pipe.execute()

    def generations(self) -> dict[str, str]:
        """Moment name -> the generation its definition was put under."""
        raw = self.client.hgetall(self.keys.moment_generations)
        return {str(k): str(v) for k, v in raw.items()}

    def sweep(self, moment: Moment, generation: str, now_ms: int,
              holds: Sequence[tuple[str, bool]]) -> tuple[int, int]:
        """Apply one batch of rule outcomes to a moment's membership: (entered, left)."""
        cooldown = 0 if moment.cooldown_days is None else round(moment.cooldown_days * 86400_000)
        keys = [self.keys.moment_members(moment.name), self.keys.moment_entries(moment.name),
                self.keys.moment_sequence(moment.name), self.keys.moment_generations]
        calls = []
        # Small scripts, so that no single one holds Redis for more than a millisecond or two.
        for start in range(0, len(holds), SWEEP_CHUNK):
            args: list[Any] = [now_ms, cooldown, moment.name, generation]
            for node, ok in holds[start:start + SWEEP_CHUNK]:
                args += [node, "1" if ok else "0"]
            calls.append((keys, args))
        if not calls:
            return 0, 0
        answers = self.scripts.run_many(self.scripts.moment_sweep, calls)
        # -1: the moment was deleted or defined anew meanwhile, and nothing was written.
        return (sum(max(int(a[0]), 0) for a in answers),
                sum(max(int(a[1]), 0) for a in answers))

    def remove(self, name: str, nodes: Sequence[str]) -> None:
        """Take nodes that are nobody's profile any more out of a moment."""
        self.client.zrem(self.keys.moment_members(name), *nodes)

    def members(self, name: str, after: int, limit: int) -> list[Member]:
        """Up to ``limit`` current members whose entry came after sequence number ``after``.

        O(log N + limit) in Redis, however many members there are.
        """
        found: list[tuple[str, float]] = self.client.zrange(  # type: ignore[assignment]
            self.keys.moment_members(name), f"({after}", "+inf", byscore=True, offset=0,
            num=limit, withscores=True)
        if not found:
            return []
        nodes = [str(node) for node, _ in found]
        states = self.client.hmget(self.keys.moment_entries(name), nodes)
        out = []
        for (node, seq), state in zip(found, states, strict=True):
            count, _, since = str(state or "1|0").partition("|")
            out.append(Member(str(node), int(seq), int(count), int(since)))
        return out

    def count(self, name: str) -> int:
        """How many members a moment has now."""
        return int(self.client.zcard(self.keys.moment_members(name)))

    def forget(self, nodes: Sequence[str]) -> None:
        """Remove erased people from every moment."""
        names = [m.name for m in self.load()]
        if not names or not nodes:
            return
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.zrem(self.keys.moment_members(name), *nodes)
            pipe.hdel(self.keys.moment_entries(name), *nodes)
        pipe.execute()
