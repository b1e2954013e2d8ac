"""Targeting rules evaluated in Python, exactly as ``server/lua/decide.lua`` evaluates them.

Decisions evaluate rules inside Redis; this twin answers the same question without Redis (the
console's persona tester, offline checks) and explains the answer. The two are kept equal by
``tests/golden/rules.json``, which every case runs through both.

Facts are a mapping from fact name to value: ``attributes.<name>`` (the attribute's decoded
JSON value), ``channel``, ``persona`` and the lifecycle facts. An absent fact, or ``None``, is
missing. ``build_facts`` derives them from a stored profile the way the decide script does.

Lua's value model, which the semantics follow:

- JSON numbers are doubles: ``5`` equals ``5.0``, integers compare after rounding to a double,
  and a boolean is never a number (in Python ``True == 1``; in Lua they differ).
- ``eq``/``ne``/``in``/``nin`` need the same type and value, so ``"5"`` never equals ``5``; on
  a list attribute ``eq``/``in`` hold when any element matches (``ne``/``nin`` when none does).
- ``lt``/``lte``/``gt``/``gte`` hold only when fact and value are both numbers.
- A missing fact satisfies ``ne``, ``nin`` and ``exists: false`` and nothing else; ``false``,
  ``0`` and ``""`` are present.
- ``{"all": []}`` holds and ``{"any": []}`` does not (validation refuses both inside a rule;
  an empty audience list is the empty ``all``).

Rules are assumed valid (``experiments.rules.validate_rule``); the script is not defensive
about malformed ones either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PERSONA = "default"
DAY_MS = 86_400_000
ATTRIBUTE_PREFIX = "attributes."
# (fact, profile field) of the customer-value predictions, as the decide script reads them.
PREDICTION_FIELDS = (("p_alive", "pa"), ("expected_purchases_90d", "e90"),
                     ("predicted_clv_365d", "clv"))

Rule = Mapping[str, Any]
Facts = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LeafCheck:
    """One leaf as evaluated: the fact's value (None when missing) and the outcome."""

    path: str
    fact: str
    op: str
    value: Any
    actual: Any
    missing: bool
    result: bool

    def to_json(self) -> dict[str, Any]:
        """The check as a JSON-ready dict."""
        return {"path": self.path, "fact": self.fact, "op": self.op, "value": self.value,
                "actual": self.actual, "missing": self.missing, "result": self.result}


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a rule held or failed.

    ``decided_by`` is the path of the smallest part whose outcome alone settled the result:
    the leaf an ``all`` stopped at or an ``any`` succeeded with, or the group itself when every
    child had to agree. ``checks`` lists the leaves evaluated, in order (groups stop at the
    first child that settles them, as the script does), and ``facts`` the facts they read.
    """

    result: bool
    decided_by: str
    checks: tuple[LeafCheck, ...]
    facts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The explanation as a JSON-ready dict."""
        return {"result": self.result, "decided_by": self.decided_by,
                "checks": [c.to_json() for c in self.checks], "facts": dict(self.facts)}


@dataclass(frozen=True, slots=True)
class PersonaChoice:
    """The persona chosen, the index of its rule (None for the default) and every rule tried."""

    name: str
    index: int | None
    tried: tuple[Explanation, ...]

    @property
    def matched(self) -> Explanation | None:
        """The explanation of the rule that matched (None for the default)."""
        return self.tried[self.index] if self.index is not None else None


def evaluate(rule: Rule, facts: Facts) -> bool:
    """Whether a rule holds for the facts, with the decide script's semantics."""
    return _Evaluator(facts, trace=False).eval(rule, "")[0]


def evaluate_all(rules: Sequence[Rule], facts: Facts) -> bool:
    """Whether every rule of an audience list holds (an empty list always holds)."""
    return evaluate({"all": list(rules)}, facts)


def explain(rule: Rule, facts: Facts, path: str = "") -> Explanation:
    """Evaluate a rule and report the leaf or group that decided it and the facts read.

    ``path`` prefixes every reported path, e.g. ``"when"`` or ``"audience.rules"``, so paths
    read like validation errors (``when.any.1``).
    """
    evaluator = _Evaluator(facts, trace=True)
    result, decided_by = evaluator.eval(rule, path)
    return Explanation(result, decided_by, tuple(evaluator.checks), evaluator.read)


def choose_persona(personas: Sequence[Mapping[str, Any]], facts: Facts) -> PersonaChoice:
    """The first persona ``{"name", "when"}`` whose rule holds, else ``default``.

    Persona rules see the persona fact as ``default``: the script evaluates them before any
    persona is settled.
    """
    seen = {**facts, "persona": DEFAULT_PERSONA}
    tried = []
    for i, persona in enumerate(personas):
        explanation = explain(persona["when"], seen, f"{i}.when")
        tried.append(explanation)
        if explanation.result:
            return PersonaChoice(str(persona["name"]), i, tuple(tried))
    return PersonaChoice(DEFAULT_PERSONA, None, tuple(tried))


def build_facts(
    profile: Mapping[str, str],
    attributes: Mapping[str, str],
    *,
    now_ms: int,
    channel: str,
    request_attributes: Mapping[str, Any] | None = None,
    persona: str = DEFAULT_PERSONA,
    known_id: bool = False,
) -> dict[str, Any]:
    """The facts a decide call at ``now_ms`` sees, from the profile as stored before it.

    ``profile`` and ``attributes`` are the stored hashes (strings; attribute values JSON);
    ``request_attributes`` are the call's own (None deletes), applied on top as the script
    does before evaluating. ``known_id`` is true when the call's id is a customer id or an
    e-mail hash, which marks the profile known. A profile never seen gets ``first_seen`` now,
    so ``days_since_first_seen`` is 0 for it, never missing.
    """
    merged: dict[str, Any] = {}
    for name, raw in attributes.items():
        merged[name] = json.loads(raw)
    for name, value in (request_attributes or {}).items():
        if value is None:
            merged.pop(name, None)
        else:
            # The value makes the same JSON round trip as on its way into Redis.
            merged[name] = json.loads(json.dumps(value, separators=(",", ":")))
    facts: dict[str, Any] = {ATTRIBUTE_PREFIX + name: value for name, value in merged.items()
                             if value is not None}
    facts["channel"] = channel
    facts["persona"] = persona
    stored = dict(profile)
    stored.setdefault("first_seen", str(now_ms))
    if known_id:
        stored["known"] = "1"
    for fact, name in (("days_since_first_purchase", "fp"), ("days_since_last_purchase", "lp"),
                       ("days_since_first_seen", "first_seen")):
        stamp = _tonumber(stored.get(name))
        if stamp is not None:
            # Not rounded: 36 hours ago is 1.5 days.
            facts[fact] = (float(now_ms) - stamp) / DAY_MS
    for fact, name in (("purchase_count", "pc"), ("lifetime_value", "ltv")):
        number = _tonumber(stored.get(name, "0"))
        if number is not None:
            facts[fact] = number
    facts["known"] = stored.get("known") == "1"
    # Predictions are missing, not zero, until a customer-value fit has scored the profile.
    for fact, name in PREDICTION_FIELDS:
        number = _tonumber(stored.get(name))
        if number is not None:
            facts[fact] = number
    return facts


def _tonumber(text: str | None) -> float | None:
    """Lua's tonumber for the decimal strings Redis and the scripts write (None if not one)."""
    if text is None or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _lua_type(value: Any) -> str:
    """The Lua type a JSON value decodes to (cjson.null is a light userdata)."""
    if value is None:
        return "userdata"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "table"


def _as_number(value: int | float) -> float:
    """The double Lua holds for a JSON number (huge integers round, beyond range inf)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _same(a: Any, b: Any) -> bool:
    """Lua's ``type(a) == type(b) and a == b``; tables are never equal to a rule's value."""
    kind = _lua_type(a)
    if kind != _lua_type(b):
        return False
    if kind == "number":
        return _as_number(a) == _as_number(b)
    if kind == "table":
        return a is b
    return bool(a == b)


def _matches_any(actual: Any, wanted: Any) -> bool:
    """Whether the fact (each element of a list fact) equals any wanted value."""
    if isinstance(actual, list):
        values: Sequence[Any] = actual
    elif isinstance(actual, Mapping):
        values = ()  # ipairs over a decoded JSON object visits nothing
    else:
        values = (actual,)
    if not isinstance(wanted, list):
        return False
    return any(_same(x, w) for x in values for w in wanted)


def _leaf(op: Any, want: Any, actual: Any) -> bool:
    if actual is None:
        if op == "exists":
            return want is False
        return op in ("ne", "nin")
    if op == "exists":
        return want is True
    if op == "eq":
        return _matches_any(actual, [want])
    if op == "ne":
        return not _matches_any(actual, [want])
    if op == "in":
        return _matches_any(actual, want)
    if op == "nin":
        return not _matches_any(actual, want)
    if _lua_type(actual) != "number" or _lua_type(want) != "number":
        return False
    a, w = _as_number(actual), _as_number(want)
    if op == "lt":
        return a < w
    if op == "lte":
        return a <= w
    if op == "gt":
        return a > w
    if op == "gte":
        return a >= w
    return False


def _join(path: str, *parts: str | int) -> str:
    return ".".join([path, *map(str, parts)] if path else map(str, parts))


class _Evaluator:
    """One evaluation: reads facts once each and, when tracing, records every leaf."""

    def __init__(self, facts: Facts, trace: bool) -> None:
        self.facts = facts
        self.trace = trace
        self.checks: list[LeafCheck] = []
        self.read: dict[str, Any] = {}

    def eval(self, rule: Rule, path: str) -> tuple[bool, str]:
        """(result, path of the part that decided it), in the script's order of groups."""
        if "all" in rule:
            return self._group(rule["all"], _join(path, "all"), path, stop_on=False)
        if "any" in rule:
            return self._group(rule["any"], _join(path, "any"), path, stop_on=True)
        if "not" in rule:
            result, decided_by = self.eval(rule["not"], _join(path, "not"))
            return not result, decided_by
        fact, op, want = rule.get("fact"), rule.get("op"), rule.get("value")
        actual = self.facts.get(fact) if isinstance(fact, str) else None
        result = _leaf(op, want, actual)
        if self.trace:
            self.read[str(fact)] = actual
            self.checks.append(LeafCheck(path, str(fact), str(op), want, actual,
                                         actual is None, result))
        return result, path

    def _group(self, children: Sequence[Rule], prefix: str, path: str,
               stop_on: bool) -> tuple[bool, str]:
        # all stops at the first false child, any at the first true one.
        decided_by = path
        for i, child in enumerate(children):
            result, decided_by = self.eval(child, _join(prefix, i))
            if result is stop_on:
                return result, decided_by
        # Every child agreed: a lone child still decided alone, several decided together.
        return (not stop_on), (decided_by if len(children) == 1 else path)
