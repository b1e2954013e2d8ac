"""The identity graph in Redis: resolving linked ids, locks, claims, merges, erasure.

A person is one canonical profile (the keys of ``Keyspace.visitor(canonical)``); every other
id linked to it keeps only a profile hash ``{alias: canonical}`` in its own shard, and the
canonical profile lists them in its ``ln`` hash. Merges move state between shards, so they
run under short per-profile locks that the decide and track scripts respect.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import redis

from server.errors import ProfileBusy
from server.identities import MAX_LINK_HOPS
from server.keys import ASSIGNMENT, ATTRIBUTE, EVENT, Keyspace
from server.scripts import Scripts
from server.stores import assignment_record

LOCK_MS = 10_000


@dataclass(frozen=True, slots=True)
class ProfileState:
    """Everything stored for one canonical profile."""

    profile: dict[str, str]
    attributes: dict[str, str]  # name -> JSON
    assignments: dict[str, str]  # experiment -> record line (server.stores.assignment_record)
    events: dict[str, str]  # event id -> ms it was counted
    linked: dict[str, str]

    @classmethod
    def of(cls, stored: dict[str, str], linked: dict[str, str],
           older_events: dict[str, str] | None = None) -> ProfileState:
        """The state of a visitor hash, split by field prefix, with its older event ids."""
        parts: dict[str, dict[str, str]] = {ATTRIBUTE: {}, ASSIGNMENT: {}, EVENT: {}}
        profile: dict[str, str] = {}
        for field, value in stored.items():
            part = parts.get(field[:2])
            if part is None:
                profile[field] = value
            else:
                part[field[2:]] = value
        return cls(profile, parts[ATTRIBUTE], parts[ASSIGNMENT],
                   {**(older_events or {}), **parts[EVENT]}, linked)


class IdentityStore:
    """Low-level operations of the identity graph."""

    def __init__(self, client: redis.Redis, keys: Keyspace, scripts: Scripts,
                 max_attributes: int, max_channels: int, events_keep_ms: int) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.max_attributes = max_attributes
        self.max_channels = max_channels
        self.events_keep_ms = events_keep_ms  # as track keeps the older event ids

    def owner(self, visitor_id: str) -> str | None:
        """The canonical profile an id belongs to, or None when the id is unknown."""
        return self.resolve(visitor_id)[0]

    def resolve(self, visitor_id: str,
                compact: bool = False) -> tuple[str | None, str | None]:
        """(canonical owner or None, the dead canonical a dangling link points at or None).

        With `compact` (identify) links passed on the way are pointed straight at the owner.
        """
        current = visitor_id
        passed: list[str] = []
        for _ in range(MAX_LINK_HOPS + 1):  # the id itself, then up to MAX_LINK_HOPS links
            vk = self.keys.visitor(current)
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(vk.profile, "alias")
            pipe.exists(vk.profile)
            alias, exists = pipe.execute()
            if alias:
                passed.append(current)
                current = alias
                continue
            if exists:
                if compact and len(passed) > 1:
                    self._compact(passed[:-1], current)
                return current, None
            # The id's link outlived the profile it pointed at (expired): a stranger again.
            return None, (current if current != visitor_id else None)
        raise ProfileBusy("linked ids form a chain too long", {"visitor_id": "loop"})

    def _compact(self, links: list[str], canonical: str) -> None:
        """Point links that took more than one hop straight at their canonical profile."""
        self.scripts.run_many(self.scripts.repoint, [
            ([self.keys.visitor(link).profile], [canonical]) for link in links])

    def linked_ids(self, canonical: str) -> set[str]:
        """The ids linked to a canonical profile."""
        return {str(k) for k in self.client.hkeys(self.keys.visitor(canonical).linked)}

    def facts(self, canonical: str) -> dict[str, str]:
        """The identity facts of a canonical profile: known, cid (customer id), eh."""
        values = self.client.hmget(self.keys.visitor(canonical).profile, ["known", "cid", "eh"])
        return {k: str(v) for k, v in zip(("known", "cid", "eh"), values, strict=True) if v}

    def lock(self, visitor_id: str) -> str | None:
        """Take the merge lock of a profile; a token to unlock with, or None if taken."""
        token = secrets.token_hex(8)
        ok = self.client.set(self.keys.visitor(visitor_id).lock, token, nx=True, px=LOCK_MS)
        return token if ok else None

    def unlock(self, visitor_id: str, token: str) -> None:
        """Release a merge lock we hold."""
        self.scripts.unlock(keys=[self.keys.visitor(visitor_id).lock], args=[token])

    def claim(self, value: str, canonical: str, ttl_ms: int, dangling: str | None) -> str:
        """Link an unowned id to a canonical profile; return whoever owns it now."""
        owner = self.scripts.claim(keys=[self.keys.visitor(value).profile],
                                   args=[canonical, ttl_ms, dangling or ""])
        return value if owner == "=" else str(owner)

    def read(self, visitor_id: str) -> ProfileState:
        """All state of a canonical profile, in one round trip."""
        vk = self.keys.visitor(visitor_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(vk.profile)
        pipe.zrange(vk.events, 0, -1, withscores=True)
        pipe.hgetall(vk.linked)
        stored, older, linked = pipe.execute()
        return ProfileState.of(stored, linked, {str(e): str(int(ms)) for e, ms in older})

    def merge(self, loser: str, winner: str, id_type: str, ttl_ms: int) -> None:
        """Move the loser's state into the winner, then leave the loser as a link."""
        state = self.read(loser)
        ids = dict(state.linked)
        ids[loser] = id_type
        blob = {
            "profile": {k: v for k, v in state.profile.items() if not k.startswith("merged:")},
            "attrs": state.attributes,
            # A carried record keeps the id its decision was made under: derived ids name
            # the visitor they were made for.
            "assignments": {exp: assignment_record.with_decision_id(raw, loser, exp)
                            for exp, raw in state.assignments.items()},
            "events": [[event, ms] for event, ms in state.events.items()],
            "ids": ids,
        }
        w = self.keys.visitor(winner)
        self.scripts.merge_into(
            keys=[w.profile, w.events, w.linked],
            args=[loser, json.dumps(blob, separators=(",", ":")), self.max_attributes,
                  self.max_channels, self.events_keep_ms],
        )
        lv = self.keys.visitor(loser)
        self.scripts.make_alias(
            keys=[lv.profile, lv.events, lv.linked],
            args=[winner, ttl_ms],
        )
        # Ids that pointed at the loser now point straight at the winner.
        pipe = self.client.pipeline(transaction=False)
        for linked_id in state.linked:
            if linked_id not in (loser, winner):
                pipe.hset(self.keys.visitor(linked_id).profile, "alias", winner)
        pipe.execute()

    def link(self, canonical: str, ids: dict[str, str], facts: dict[str, str],
             ttl_ms: int) -> None:
        """Record linked ids on the canonical profile; a known customer's keys never expire."""
        vk = self.keys.visitor(canonical)
        pipe = self.client.pipeline(transaction=False)
        if ids:
            pipe.hset(vk.linked, mapping=dict(ids))  # type: ignore[arg-type]
        if facts:
            pipe.hset(vk.profile, mapping=dict(facts))  # type: ignore[arg-type]
        pipe.execute()
        every = {str(k) for k in self.client.hkeys(vk.linked)}
        pipe = self.client.pipeline(transaction=False)
        own = (vk.profile, vk.linked)
        for key in own:
            if ttl_ms > 0:
                pipe.pexpire(key, ttl_ms)
            else:
                pipe.persist(key)
        for linked_id in every - {canonical}:
            stub = self.keys.visitor(linked_id).profile
            if ttl_ms > 0:
                pipe.pexpire(stub, ttl_ms)
            else:
                pipe.persist(stub)
        pipe.execute()

    def ensure_profile(self, canonical: str, now_ms: int, ttl_ms: int,
                       dangling: str | None) -> bool:
        """Create an empty canonical profile (an id seen first in identify), unless a link."""
        vk = self.keys.visitor(canonical)
        return bool(self.scripts.ensure_profile(keys=[vk.profile, vk.linked],
                                                args=[now_ms, ttl_ms, dangling or ""]))

    def set_attributes(self, canonical: str, attributes: dict[str, str]) -> None:
        """Write attributes (name -> JSON, '' deletes) of a canonical profile."""
        vk = self.keys.visitor(canonical)
        pipe = self.client.pipeline(transaction=False)
        for name, value in attributes.items():
            if value == "":
                pipe.hdel(vk.profile, ATTRIBUTE + name)
            else:
                pipe.hset(vk.profile, ATTRIBUTE + name, value)
        pipe.execute()

    def erase(self, canonical: str, linked: dict[str, str]) -> int:
        """Delete a profile and every linked id's keys; return the number of keys removed."""
        pipe = self.client.pipeline(transaction=False)
        for visitor_id in {canonical, *linked}:
            vk = self.keys.visitor(visitor_id)
            for key in (vk.profile, vk.events, vk.linked):
                pipe.delete(key)
        return int(sum(pipe.execute()))

    def attribute_names(self, canonical: str) -> set[str]:
        """Names of the attributes a profile holds."""
        fields = self.client.hkeys(self.keys.visitor(canonical).profile)
        return {str(k)[len(ATTRIBUTE):] for k in fields if str(k).startswith(ATTRIBUTE)}

