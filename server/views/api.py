"""SDK endpoints: decide, expose and track."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError

from server import deadline
from server.errors import Forbidden, InvalidInput
from server.observability import metrics
from server.schemas import (
    DecideSchema,
    ExposeSchema,
    TrackBatchSchema,
    TrackEventSchema,
    flatten_errors,
)
from server.services.auth import TRUSTED
from server.services.decisions import DecideRequest
from server.services.outcomes import Exposure, TrackEvent
from server.views.io import acting_as, json_body, load, require

bp = Blueprint("api", __name__, url_prefix="/v1")

_decide_schema = DecideSchema()
_expose_schema = ExposeSchema()
_event_schema = TrackEventSchema()
_batch_schema = TrackBatchSchema()


@bp.post("/decide")
def decide() -> ResponseReturnValue:
    """Variants for one visitor across many experiments."""
    services = current_app.extensions["centric"]
    # Everything on this path, the key check included, fits in the decide budget.
    with deadline.budget(services.settings.decide_budget_ms / 1000):
        role = require("sdk", fast=True)
        data = load(_decide_schema, json_body())
        acting_as(role, data["id_type"])
        experiments = data.get("experiments")
        result = services.decisions.decide(
            DecideRequest(
                visitor_id=data["visitor_id"],
                channel=data["channel"],
                experiments=tuple(experiments) if experiments is not None else None,
                attributes=data.get("attributes") or None,
                persona=data.get("persona"),
                id_type=data["id_type"],
                expose=data["expose"],
                trusted=role in TRUSTED,
            )
        )
    for d in result.decisions:
        metrics().decisions.labels(d.reason).inc()
    return jsonify({
        "visitor_id": result.visitor_id,
        "persona": result.persona,
        "decisions": [
            {"experiment": d.experiment, "variant": d.variant, "payload": d.payload,
             "decision_id": d.decision_id, "propensity": d.propensity, "reason": d.reason,
             "pending": d.pending}
            for d in result.decisions
        ],
    })


@bp.post("/expose")
def expose() -> ResponseReturnValue:
    """Confirm decisions the caller really showed (decide with expose=false stores them)."""
    role = require("sdk")
    data = load(_expose_schema, json_body())
    acting_as(role, data["id_type"])
    result = current_app.extensions["centric"].outcomes.expose(
        data["visitor_id"], data["id_type"],
        [Exposure(d["experiment"], d["decision_id"]) for d in data["decisions"]])
    return jsonify({"exposed": result.exposed, "duplicates": result.duplicates,
                    "ignored": result.ignored})


@bp.post("/track")
def track() -> ResponseReturnValue:
    """One outcome event or a batch of them; idempotent by (visitor, event_id).

    In a batch each invalid event is rejected on its own and the valid ones are recorded;
    only a batch without a single valid event is a 400.
    """
    role = require("sdk")
    body = json_body()
    batch = isinstance(body, dict) and "events" in body
    rejected: list[dict[str, Any]] = []
    if batch:
        raw_events = load(_batch_schema, body)["events"]
        loaded: list[tuple[int, dict[str, Any]]] = []
        for i, raw in enumerate(raw_events):
            try:
                loaded.append((i, _event(raw, role)))
            except (InvalidInput, Forbidden) as error:
                rejected.append({"index": i, "fields": error.fields})
        if not loaded:
            fields = {f"events.{r['index']}.{name}": why
                      for r in rejected for name, why in r["fields"].items()}
            raise InvalidInput("no valid event in the batch", fields)
    else:
        loaded = [(0, _event(body, role))]
    events = [
        TrackEvent(visitor_id=e["visitor_id"], metric=e["metric"], event_id=e["event_id"],
                   value=e.get("value"), timestamp_ms=e.get("timestamp"), age=e.get("age"),
                   id_type=e["id_type"])
        for _, e in loaded
    ]
    result = current_app.extensions["centric"].outcomes.track(events, role in TRUSTED)
    metrics().events.labels("accepted").inc(result.accepted)
    metrics().events.labels("duplicate").inc(result.duplicates)
    answer: dict[str, Any] = {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "attributed": [
            {"experiment": a.experiment, "variant": a.variant, "event_id": a.event_id}
            for a in result.attributed
        ],
    }
    if batch:
        answer["rejected"] = rejected
    return jsonify(answer)


def _event(raw: Any, role: str) -> dict[str, Any]:
    """One validated event; InvalidInput names its bad fields."""
    if not isinstance(raw, dict):
        raise InvalidInput("an event must be a JSON object", {"body": "must be an object"})
    try:
        event: dict[str, Any] = _event_schema.load(raw)
    except ValidationError as exc:
        fields = flatten_errors(exc.messages)
        raise InvalidInput("invalid " + ", ".join(sorted(fields)), fields) from exc
    acting_as(role, event["id_type"])
    settings = current_app.extensions["centric"].settings
    value = event.get("value") or 0
    if role not in TRUSTED and abs(value) > settings.max_sdk_value:
        # Anyone can send events with the public key: one of them must not outweigh a
        # variant's real revenue. Orders of any size come from the backend's server key.
        raise InvalidInput("value too large for an SDK key",
                           {"value": f"at most {settings.max_sdk_value:g} with an SDK key; "
                                     "report large orders with a server key"})
    if event["metric"] == settings.purchase_metric and value < 0:
        raise InvalidInput("a purchase is never negative",
                           {"value": "send a refund event (metric 'refund', the amount) "
                                     "instead of a negative purchase"})
    return event
