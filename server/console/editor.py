"""The experiment editor: an HTML form that becomes the HTTP API's experiment body.

The form only reshapes what people type (rows of variants, comma lists, JSON text) into the
body `POST /v1/experiments` takes; the API's schema validates it and its `fields` map is
the one source of every message shown next to a field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

MAX_VARIANTS = 20
EMPTY_ROWS = 2  # blank variant rows offered below the filled ones

NUMBERS = ("coverage", "holdout", "attribution_window_hours")
BANDIT_NUMBERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bandit-prior-alpha", ("prior", "alpha")), ("bandit-prior-beta", ("prior", "beta")),
    ("bandit-floor", ("floor",)))


def _number(raw: str) -> float | int:
    value = float(raw)
    return int(value) if value.is_integer() and "." not in raw and "e" not in raw.lower() \
        else value


def parse_json(raw: str, path: str, errors: dict[str, str]) -> Any:
    """Strict JSON (no NaN or Infinity); a problem goes into `errors` at `path`."""
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except ValueError as exc:
        errors[path] = f"invalid JSON: {exc}"
    except RecursionError:
        errors[path] = "invalid JSON: nested too deeply"
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _names(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def body_from_form(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str],
                                                     list[int]]:
    """(API body, errors of what is not even JSON or a number, form row of each variant)."""
    errors: dict[str, str] = {}
    body: dict[str, Any] = {"key": form.get("key", "").strip(),
                            "name": form.get("name", "").strip(),
                            "hypothesis": form.get("hypothesis", "").strip(),
                            "mode": form.get("mode", "bandit")}
    if form.get("control", "").strip():
        body["control"] = form["control"].strip()
    variants: list[dict[str, Any]] = []
    rows: list[int] = []
    for row in range(MAX_VARIANTS):
        key = form.get(f"variants-{row}-key", "").strip()
        weight = form.get(f"variants-{row}-weight", "").strip()
        payload = form.get(f"variants-{row}-payload", "").strip()
        if not (key or payload):
            continue
        path = f"variants.{len(variants)}"
        variant: dict[str, Any] = {"key": key}
        if weight:
            try:
                variant["weight"] = _number(weight)
            except ValueError:
                errors[f"{path}.weight"] = "must be a number"
        if payload:
            variant["payload"] = parse_json(payload, f"{path}.payload", errors)
        variants.append(variant)
        rows.append(row)
    body["variants"] = variants
    body["metric"] = {"name": form.get("metric-name", "").strip(),
                      "kind": form.get("metric-kind", "conversion")}
    if form.get("metric-within-days", "").strip():
        try:
            body["metric"]["within_days"] = _number(form["metric-within-days"])
        except ValueError:
            errors["metric.within_days"] = "must be a number"
    if form.get("guardrails", "").strip():
        body["guardrails"] = parse_json(form["guardrails"], "guardrails", errors)
    audience: dict[str, Any] = {}
    for name in ("personas", "channels"):
        if _names(form.get(f"audience-{name}", "")):
            audience[name] = _names(form[f"audience-{name}"])
    if form.get("audience-rules", "").strip():
        audience["rules"] = parse_json(form["audience-rules"], "audience.rules", errors)
    body["audience"] = audience
    for name in NUMBERS:
        raw = form.get(name, "").strip()
        if raw:
            try:
                body[name] = _number(raw)
            except ValueError:
                errors[name] = "must be a number"
    bandit: dict[str, Any] = {}
    for field, parts in BANDIT_NUMBERS:
        raw = form.get(field, "").strip()
        if not raw:
            continue
        try:
            value = _number(raw)
        except ValueError:
            errors["bandit." + ".".join(parts)] = "must be a number"
            continue
        target = bandit
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    body["bandit"] = bandit
    if form.get("decision", "").strip():
        body["decision"] = parse_json(form["decision"], "decision", errors)
    return body, errors, rows


def form_from_definition(d: Mapping[str, Any]) -> dict[str, str]:
    """The form's values for an existing definition (the API's JSON shape)."""
    values = {"key": d["key"], "name": d["name"], "hypothesis": d.get("hypothesis", ""),
              "mode": d["mode"], "control": d["control"],
              "metric-name": d["metric"]["name"], "metric-kind": d["metric"]["kind"],
              "metric-within-days": str(d["metric"].get("within_days") or ""),
              "coverage": str(d["coverage"]), "holdout": str(d["holdout"]),
              "attribution_window_hours": str(d["attribution_window_hours"]),
              "bandit-prior-alpha": str(d["bandit"]["prior"]["alpha"]),
              "bandit-prior-beta": str(d["bandit"]["prior"]["beta"]),
              "bandit-floor": str(d["bandit"]["floor"]),
              "decision": json.dumps(d["decision"], indent=2),
              "guardrails": json.dumps(d["guardrails"]) if d["guardrails"] else "",
              "audience-personas": ", ".join(d["audience"].get("personas") or []),
              "audience-channels": ", ".join(d["audience"].get("channels") or []),
              "audience-rules": (json.dumps(d["audience"]["rules"], indent=2)
                                 if d["audience"].get("rules") else "")}
    for row, v in enumerate(d["variants"]):
        values[f"variants-{row}-key"] = v["key"]
        values[f"variants-{row}-weight"] = str(v["weight"])
        if v.get("payload") is not None:
            values[f"variants-{row}-payload"] = json.dumps(v["payload"], indent=2)
    return values


def row_errors(errors: Mapping[str, str], rows: list[int]) -> dict[str, str]:
    """The API's errors with variant indexes turned into the form's row numbers."""
    out = {}
    for path, why in errors.items():
        parts = path.split(".")
        if parts[0] == "variants" and len(parts) > 1 and parts[1].isdigit() \
                and int(parts[1]) < len(rows):
            parts[1] = str(rows[int(parts[1])])
        out[".".join(parts)] = why
    return out


def variant_rows(values: Mapping[str, str]) -> int:
    """How many variant rows the form shows: the filled ones and a few blank ones."""
    filled = [row for row in range(MAX_VARIANTS)
              if values.get(f"variants-{row}-key") or values.get(f"variants-{row}-payload")]
    return min(MAX_VARIANTS, max(3, (max(filled) + 1 if filled else 0) + EMPTY_ROWS))
