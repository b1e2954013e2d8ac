"""Targeting rule trees: their grammar and validation.

A rule is a leaf ``{"fact": "attributes.plan", "op": "eq", "value": "pro"}`` or a group
``{"all": [rule, ...]}``, ``{"any": [rule, ...]}``, ``{"not": rule}``. Rules are evaluated
inside Redis (``server/lua/decide.lua``) next to the profile they read, so a decision never
needs a second round trip; this module only checks that a rule is well formed.

Semantics of a missing fact: ``exists`` false holds, ``ne``/``nin`` hold, everything else
fails. ``lt``/``lte``/``gt``/``gte`` compare numbers only. When the attribute is a list,
``eq``/``in`` hold if any element matches.
"""

from __future__ import annotations

import math
import re
from typing import Any

OPS = frozenset({"eq", "ne", "in", "nin", "lt", "lte", "gt", "gte", "exists"})
GROUPS = ("all", "any", "not")
MAX_DEPTH = 8
MAX_LIST = 100
LIFECYCLE_FACTS = ("days_since_first_purchase", "days_since_last_purchase",
                   "days_since_first_seen", "purchase_count", "lifetime_value", "known")
# Customer-value predictions (experiments.customer_value), missing until a fit scored the
# customer: P(alive), expected purchases in the next 90 days, expected value in 365 days.
PREDICTION_FACTS = ("p_alive", "expected_purchases_90d", "predicted_clv_365d")
FACT_PATTERN = re.compile(
    r"(attributes\.[A-Za-z_][A-Za-z0-9_.-]{0,63}|channel|persona|"
    + "|".join(LIFECYCLE_FACTS + PREDICTION_FACTS) + ")"
)


def _finite_number(value: Any) -> bool:
    """A JSON number Redis can hold: not bool, finite, and no huge integer."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= 10**15
    return isinstance(value, float) and math.isfinite(value)


def _scalar_ok(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return value is not None
    if isinstance(value, int | float):
        return _finite_number(value)
    return isinstance(value, str) and len(value) <= 1024


def validate_rule(rule: Any, path: str, depth: int = 0,
                  allow_persona: bool = True) -> dict[str, str]:
    """Return {path: message} for every problem in a rule tree (empty when valid)."""
    if depth > MAX_DEPTH:
        return {path: f"rules may nest at most {MAX_DEPTH} levels"}
    if not isinstance(rule, dict):
        return {path: "a rule must be an object"}
    groups = [g for g in GROUPS if g in rule]
    if groups:
        if len(rule) != 1:
            return {path: "a group rule has exactly one key: all, any or not"}
        group = groups[0]
        inner = rule[group]
        if group == "not":
            return validate_rule(inner, f"{path}.not", depth + 1, allow_persona)
        if not isinstance(inner, list) or not inner or len(inner) > MAX_LIST:
            return {f"{path}.{group}": f"must be a list of 1-{MAX_LIST} rules"}
        errors: dict[str, str] = {}
        for i, child in enumerate(inner):
            errors.update(validate_rule(child, f"{path}.{group}.{i}", depth + 1, allow_persona))
        return errors
    if not allow_persona and rule.get("fact") == "persona":
        return {f"{path}.fact": "a persona rule cannot depend on the persona"}
    return _validate_leaf(rule, path)


def _validate_leaf(rule: dict[str, Any], path: str) -> dict[str, str]:
    unknown = set(rule) - {"fact", "op", "value"}
    if unknown:
        return {f"{path}.{sorted(unknown)[0]}": "unknown field"}
    fact, op = rule.get("fact"), rule.get("op")
    if not isinstance(fact, str) or not FACT_PATTERN.fullmatch(fact):
        return {f"{path}.fact": "must be 'attributes.<name>', 'channel', 'persona' or one of "
                                + ", ".join(LIFECYCLE_FACTS + PREDICTION_FACTS)}
    if op not in OPS:
        return {f"{path}.op": f"must be one of {', '.join(sorted(OPS))}"}
    if "value" not in rule:
        return {f"{path}.value": "missing"}
    value = rule["value"]
    if op == "exists":
        ok = isinstance(value, bool)
        message = "must be true or false"
    elif op in {"in", "nin"}:
        ok = isinstance(value, list) and 0 < len(value) <= MAX_LIST and all(map(_scalar_ok, value))
        message = f"must be a list of 1-{MAX_LIST} strings, numbers or booleans"
    elif rule["fact"] == "known" and op in {"eq", "ne"}:
        ok = isinstance(value, bool)
        message = "must be true or false"
    elif op in {"lt", "lte", "gt", "gte"}:
        ok = _finite_number(value)
        message = "must be a number"
    else:
        ok = _scalar_ok(value)
        message = "must be a string, number or boolean"
    return {} if ok else {f"{path}.value": message}


def attribute_names(rule: Any) -> set[str]:
    """The attributes a rule tree reads (its `attributes.<name>` facts)."""
    if isinstance(rule, dict):
        if "fact" in rule:
            fact = str(rule["fact"])
            return {fact[len("attributes."):]} if fact.startswith("attributes.") else set()
        return set().union(*(attribute_names(v) for v in rule.values()))
    if isinstance(rule, list):
        return set().union(*(attribute_names(v) for v in rule))
    return set()
