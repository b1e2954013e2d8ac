"""Recognising one person across devices and channels: identify, export, erase.

Ids are typed (server.identities): the graph links node names ``<type>:<value>``. Trust: a
caller with the public SDK key acts only as an anonymous device; it may link a known
customer (``customer_id`` or ``email_sha256``) only with a ``signature`` from the shop's
backend (HMAC-SHA256 of that id under the identify secret), and may never pull a profile
that already belongs to a known customer into its own without that proof.

Merge policy (deterministic): when an identify call brings together ids that belong to
different profiles, the profile that already holds the call's ``customer_id`` (else its
``email_sha256``) wins; if none does, a known customer's profile wins; otherwise the profile
of the calling ``visitor_id``. Two profiles of different known customers are never merged
(409).
Merging keeps the winner's assignment of each experiment and carries the loser's over where
the winner has none (so a visitor never jumps variant on login), lets the attributes of the
more recently seen profile win, and adds up counts and lifecycle facts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from server import identify_secret, identities
from server.errors import Conflict, Forbidden, InvalidInput, NotFound, ProfileBusy
from server.identities import KNOWN_FIELDS, KNOWN_TYPES
from server.stores import assignment_record
from server.stores.customer_value import read_prediction
from server.stores.identity import IdentityStore, ProfileState

ATTEMPTS = 50


def _id_facts(ids: dict[str, str]) -> dict[str, str]:
    """Profile facts an identify call establishes: the customer id and e-mail hash."""
    return {KNOWN_FIELDS[kind]: ids[kind] for kind in KNOWN_TYPES if kind in ids}


class IdentityService:
    """Links ids to one canonical profile and answers privacy requests."""

    def __init__(self, store: IdentityStore, clock: Callable[[], float], ttl_seconds: float,
                 max_attributes: int, secret: str = "", max_linked_ids: int = 32,
                 forget: Callable[[list[str]], None] = lambda nodes: None,
                 became_known: Callable[[str], object] = lambda node: None) -> None:
        self.store = store
        self.forget = forget  # removes an erased person from indexes outside the profile
        self.became_known = became_known  # indexes a profile a known id was just linked to
        self.clock = clock
        self.ttl_ms = int(ttl_seconds * 1000)
        self.max_attributes = max_attributes
        self.secret = secret
        self.max_linked_ids = max_linked_ids

    def identify(self, visitor_id: str, ids: dict[str, str], attributes: dict[str, str],
                 *, id_type: str = identities.VISITOR, signature: str | None = None,
                 signature_expires: int | None = None, trusted: bool = True) -> str:
        """Link `ids` (type -> value) with the caller's id; return the id to use from now on.

        For a trusted caller that is the canonical profile's id when it is a visitor id (no
        extra hop), else the caller's own `visitor_id`, which now resolves to the person. An
        untrusted (SDK key) caller always gets its own id back: another device's id is a
        credential it must not learn. Untrusted calls must prove every known id with
        `signature`.
        """
        if not trusted:
            self._check_proof(visitor_id, ids, signature, signature_expires)
        me = identities.node(id_type, visitor_id)
        wanted = {me: id_type}
        typed = {kind: identities.node(kind, value) for kind, value in ids.items()}
        for kind, name in typed.items():
            wanted.setdefault(name, kind)
        pause = 0.002
        for _ in range(ATTEMPTS):
            canonical = self._attempt(me, wanted, ids, typed, attributes, trusted)
            if canonical is not None:
                if any(kind in KNOWN_TYPES for kind in ids) or id_type in KNOWN_TYPES:
                    self.became_known(canonical)
                kind, value = identities.parse(canonical)
                return value if trusted and kind == identities.VISITOR else visitor_id
            time.sleep(pause)  # another merge holds one of the profiles: try again
            pause = min(pause * 2, 0.05)
        raise ProfileBusy("the profiles are busy being merged; retry",
                               {"visitor_id": "busy"})

    def _check_proof(self, visitor_id: str, ids: dict[str, str], signature: str | None,
                     expires: int | None) -> None:
        """An SDK call links its own device to one known id, with the backend's signature.

        It may not name any other id: an anonymous id it cannot prove it owns (another
        cookie, a device id) could be a victim's, and a later login would merge the
        attacker's profile into the victim's.
        """
        others = sorted(kind for kind in ids if kind not in KNOWN_TYPES)
        if others:
            raise Forbidden("an SDK key links only a signed customer_id or email_sha256 to its "
                            "own visitor id; link other ids from the backend with a server key",
                            {f"ids.{kind}": "needs a server key" for kind in others})
        known = [kind for kind in KNOWN_TYPES if kind in ids]
        if len(known) > 1:
            raise Forbidden("with an SDK key, link one known id per call (customer_id)",
                            {"ids.email_sha256": "link it from the backend with a server key, "
                                                 "or in a separate signed call"})
        kind = known[0]
        if expires is not None and expires < self.clock():
            raise Forbidden("the signature has expired", {"signature_expires": "in the past"})
        if (not signature or not self.secret
                or not identify_secret.verify(self.secret, ids[kind], signature, kind,
                                              visitor_id, expires)):
            raise Forbidden(
                f"linking a {kind} with an SDK key needs the shop backend's signature",
                {"signature": f"must be the hex HMAC-SHA256 of the {kind} under the "
                              "identify secret"})

    def _attempt(self, me: str, wanted: dict[str, str], ids: dict[str, str],
                 typed: dict[str, str], attributes: dict[str, str],
                 trusted: bool) -> str | None:
        resolved = {name: self.store.resolve(name, compact=True) for name in wanted}
        owners = {name: r[0] for name, r in resolved.items()}
        canonicals = sorted({o for o in owners.values() if o is not None})
        facts = {c: self.store.facts(c) for c in canonicals}
        self._refuse_two_people(ids, owners, facts)
        if not trusted:
            self._refuse_unproven(ids, facts)
        winner = self._winner(me, owners, typed, canonicals, facts)
        locked: dict[str, str] = {}
        try:
            for c in sorted({*canonicals, winner}):  # one global order: no deadlock
                token = self.store.lock(c)
                if token is None:
                    return None
                locked[c] = token
            # Someone may have merged or linked these while we were looking.
            if any(self.store.resolve(v) != r for v, r in resolved.items()):
                return None
            if any(self.store.facts(c) != facts[c] for c in canonicals):
                return None
            # Under the locks: concurrent calls cannot both squeeze past the cap.
            self._check_link_room(wanted, canonicals)
            known_now = dict(_id_facts(ids))
            known = bool(known_now) or any(f.get("known") == "1" for f in facts.values())
            ttl = 0 if known else self.ttl_ms
            if owners.get(winner) is None and not self.store.ensure_profile(
                    winner, int(self.clock() * 1000), ttl,
                    resolved[winner][1] if winner in resolved else None):
                return None
            if attributes:
                self._check_attribute_room(winner, canonicals, attributes)
            for loser in canonicals:
                if loser != winner:
                    self.store.merge(loser, winner, wanted.get(loser, "visitor_id"), ttl)
            for value, owner in owners.items():
                if owner is None and value != winner:
                    if self.store.claim(value, winner, ttl, resolved[value][1]) != winner:
                        return None  # claimed by someone else meanwhile
            if known:
                known_now["known"] = "1"
            self.store.link(winner, {v: k for v, k in wanted.items() if v != winner},
                            known_now, ttl)
            if attributes:
                self.store.set_attributes(winner, attributes)
            return winner
        finally:
            for c, token in locked.items():
                self.store.unlock(c, token)

    @staticmethod
    def _refuse_unproven(ids: dict[str, str], facts: dict[str, dict[str, str]]) -> None:
        """An SDK call reaches a known customer's profile only with that customer's proof."""
        for f in facts.values():
            if f.get("known") != "1":
                continue
            proven = any(kind in ids and f.get(field) == ids[kind]
                         for kind, field in KNOWN_FIELDS.items())
            if not proven:
                raise Forbidden("these ids belong to a known customer; identify them with the "
                                "customer's signed id",
                                {"signature": "link the customer_id with its signature"})

    def _check_link_room(self, wanted: dict[str, str], canonicals: list[str]) -> None:
        """A person links a bounded number of ids, merges included."""
        linked: set[str] = set(wanted)
        for c in canonicals:
            linked |= {c, *self.store.linked_ids(c)}
        if len(linked) > self.max_linked_ids:
            raise Conflict("one person may link at most "
                           f"{self.max_linked_ids} ids", {"ids": "too many linked ids"})

    @staticmethod
    def _refuse_two_people(ids: dict[str, str], owners: dict[str, str | None],
                           facts: dict[str, dict[str, str]]) -> None:
        """Never merge two known people: a second customer id or e-mail hash is a conflict."""
        for field, kind in (("cid", "customer_id"), ("eh", "email_sha256")):
            held = {f[field] for f in facts.values() if field in f}
            if kind in ids:
                held.add(ids[kind])
            if len(held) > 1:
                raise Conflict(
                    "these ids belong to different customers; after a logout start a new "
                    "visitor id instead of identifying the old one as someone else",
                    {f"ids.{kind}" if kind in ids else "visitor_id": "belongs to another "
                     "customer"})

    def _check_attribute_room(self, winner: str, canonicals: list[str],
                              attributes: dict[str, str]) -> None:
        names: set[str] = set()
        for c in {winner, *canonicals}:
            names |= self.store.attribute_names(c)
        names |= {k for k, v in attributes.items() if v != ""}
        names -= {k for k, v in attributes.items() if v == ""}
        if len(names) > self.max_attributes:
            raise InvalidInput("too many attributes for one profile",
                               {"attributes": f"the limit is {self.max_attributes}"})

    @staticmethod
    def _winner(me: str, owners: dict[str, str | None], typed: dict[str, str],
                canonicals: list[str], facts: dict[str, dict[str, str]]) -> str:
        for kind in KNOWN_TYPES:
            name = typed.get(kind)
            if name is not None and owners.get(name):
                return str(owners[name])
        known = [c for c in canonicals if facts[c].get("known") == "1"]
        if known:
            return known[0]
        if owners.get(me):
            return str(owners[me])
        return canonicals[0] if canonicals else me

    def stored(self, visitor_id: str) -> ProfileState | None:
        """What is stored for the person an id belongs to (None for an unknown id)."""
        canonical = self.store.owner(visitor_id)
        return None if canonical is None else self.store.read(canonical)

    def export(self, visitor_id: str) -> dict[str, Any]:
        """Everything stored about the person an id belongs to (right of access)."""
        canonical = self.store.owner(visitor_id)
        if canonical is None:
            raise NotFound("no such visitor", {"id": "unknown visitor"})
        s = self.store.read(canonical)
        p = s.profile

        def ms(field: str) -> float | None:
            return int(p[field]) / 1000 if field in p else None

        kind, value = identities.parse(canonical)
        return {
            "visitor_id": value,
            "id_type": kind,
            "ids": [{"id": identities.parse(i)[1], "type": t}
                    for i, t in sorted(s.linked.items())],
            "known": p.get("known") == "1",
            "first_seen": ms("first_seen"),
            "last_seen": ms("last_seen"),
            "channels": {k[3:]: int(v) / 1000 for k, v in sorted(p.items())
                         if k.startswith("ch:")},
            "attributes": {k: json.loads(v) for k, v in sorted(s.attributes.items())},
            "lifecycle": {
                "first_purchase": ms("fp"),
                "last_purchase": ms("lp"),
                "purchase_count": int(p.get("pc", 0)),
                "lifetime_value": float(p.get("ltv", 0.0)),
            },
            "predictions": _predictions(p),
            "assignments": [
                {"experiment": exp, "variant": a.variant, "persona": a.persona,
                 "channel": a.channel, "group": "holdout" if a.group == "h" else "policy",
                 "assigned_at": int(a.assigned_ms) / 1000,
                 "decision_id": assignment_record.decision_id_of(a, canonical, exp),
                 "propensity": float(a.propensity), "outcomes": a.outcome_totals()}
                for exp, a in sorted((e, assignment_record.decode(r))
                                     for e, r in s.assignments.items())
            ],
        }

    def erase(self, visitor_id: str) -> int:
        """Delete the person everywhere: profile, linked ids, assignments, dedupe entries."""
        for _ in range(ATTEMPTS):
            canonical = self.store.owner(visitor_id)
            if canonical is None:
                raise NotFound("no such visitor", {"id": "unknown visitor"})
            token = self.store.lock(canonical)
            if token is None:
                time.sleep(0.01)
                continue
            try:
                if self.store.owner(canonical) != canonical:
                    continue
                linked = self.store.read(canonical).linked
                removed = self.store.erase(canonical, linked)
                self.forget([canonical, *linked])
                return removed
            finally:
                self.store.unlock(canonical, token)
        raise ProfileBusy("the profile is busy being merged; retry", {"id": "busy"})


def _predictions(profile: dict[str, str]) -> dict[str, Any] | None:
    """The customer-value predictions a fit stored on the profile (None before any)."""
    p = read_prediction(profile)
    if p is None:
        return None
    return {"p_alive": p.p_alive, "expected_purchases_90d": p.expected_purchases_90d,
            "predicted_clv_365d": p.predicted_clv_365d, "predicted_at": p.at_ms / 1000}
