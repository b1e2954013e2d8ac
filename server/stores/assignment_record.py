"""The assignment record: one visitor's assignment to one experiment, as Redis stores it.

The decide, expose and track scripts write it (their Lua twin is
``server/lua/lib_assignment.lua``); Python reads it for profiles, merges and the 0.1
migration. One line of space-separated fields, in this order, an empty field being empty:

seed tag, variant, group (``p`` policy, ``h`` holdout), persona (empty for ``default``),
channel, epoch, assigned at (ms, in base 36: 8 characters instead of 13), decision id (empty
when derived, see `decision_id_of`), propensity, outcomes (``metric|k=total`` joined by ``,``,
``k`` the metric kind's first letter), pre-exposure covariate (the profile's string, empty
when zero), left the audience at (ms, empty while inside), and only while the exposure waits
for the caller's confirmation: the variants (``|``-joined) and their serving probabilities
(``,``-joined). Without those, trailing empty fields are left out.
Names are restricted to ``[a-z0-9_-]``, so no field holds a separator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from experiments.rule_eval import DEFAULT_PERSONA

DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
SEED_TAG = 8  # characters of the experiment seed kept: tells a re-created experiment apart


def seed_tag(seed: str) -> str:
    """The part of an experiment seed an assignment record keeps."""
    return seed[:SEED_TAG]


@dataclass(frozen=True, slots=True)
class AssignmentRecord:
    """One stored assignment, its numbers kept as the exact strings Redis holds."""

    seed_tag: str
    variant: str
    group: str
    persona: str
    channel: str
    epoch: str
    assigned_ms: str
    decision_id: str  # '' when derived (decision_id_of)
    propensity: str
    covariate: str = ""
    left_ms: str = ""
    outcomes: dict[str, str] = field(default_factory=dict)  # "metric|k" -> total
    pending_variants: str | None = None  # set only while the exposure awaits confirmation
    pending_serving: str | None = None

    @property
    def pending(self) -> bool:
        """True while the exposure waits for the caller to confirm it was seen."""
        return self.pending_variants is not None

    def outcome_totals(self) -> dict[str, float]:
        """Each metric's total for this visitor (1 for a conversion once converted)."""
        return {key.split("|")[0]: float(total) for key, total in self.outcomes.items()}


def decision_id_of(record: AssignmentRecord, node: str, experiment: str) -> str:
    """The decision id of a record held by the visitor `node`.

    A decision is one (visitor, experiment incarnation, moment), so its id is derived from
    those and not stored; a record that a merge carried over from another id keeps the id it
    was made under, written out.
    """
    if record.decision_id:
        return record.decision_id
    text = f"{node}\n{experiment}\n{record.seed_tag}\n{record.assigned_ms}"
    return hashlib.sha1(text.encode()).hexdigest()[:32]


def with_decision_id(raw: str, node: str, experiment: str) -> str:
    """A stored line with its decision id written out, to move it to another visitor."""
    record = decode(raw)
    return encode(replace(record, decision_id=decision_id_of(record, node, experiment)))


def _base36(ms: str) -> str:
    n = int(ms)
    out = ""
    while True:
        n, digit = divmod(n, 36)
        out = DIGITS[digit] + out
        if n == 0:
            return out


def encode(record: AssignmentRecord) -> str:
    """The stored line of a record."""
    metrics = ",".join(sorted(f"{k}={v}" for k, v in record.outcomes.items()))
    persona = "" if record.persona == DEFAULT_PERSONA else record.persona
    fields = [record.seed_tag, record.variant, record.group, persona, record.channel,
              record.epoch, _base36(record.assigned_ms), record.decision_id, record.propensity,
              metrics, record.covariate, record.left_ms]
    if record.pending_variants is not None:
        fields += [record.pending_variants, record.pending_serving or ""]
    else:
        while fields[-1] == "":
            fields.pop()  # trailing empty fields are left out
    return " ".join(fields)


def decode(raw: str) -> AssignmentRecord:
    """A record from its stored line."""
    f = raw.split(" ")
    f += [""] * (12 - len(f))
    return AssignmentRecord(
        seed_tag=f[0], variant=f[1], group=f[2], persona=f[3] or DEFAULT_PERSONA,
        channel=f[4], epoch=f[5], assigned_ms=str(int(f[6], 36)), decision_id=f[7],
        propensity=f[8], outcomes=dict(pair.split("=", 1) for pair in f[9].split(",") if pair),
        covariate=f[10], left_ms=f[11],
        pending_variants=f[12] if len(f) > 12 else None,
        pending_serving=f[13] if len(f) > 13 else None)
