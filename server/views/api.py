"""SDK endpoints: decide and track."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from server.observability import metrics
from server.schemas import DecideSchema, TrackBatchSchema, TrackEventSchema
from server.services.decisions import DecideRequest
from server.services.outcomes import TrackEvent
from server.views.io import json_body, load, require

bp = Blueprint("api", __name__, url_prefix="/v1")

_decide_schema = DecideSchema()
_event_schema = TrackEventSchema()
_batch_schema = TrackBatchSchema()


@bp.post("/decide")
def decide() -> ResponseReturnValue:
    """Variants for one visitor across many experiments."""
    require("sdk")
    data = load(_decide_schema, json_body())
    experiments = data.get("experiments")
    result = current_app.extensions["centric"].decisions.decide(
        DecideRequest(
            visitor_id=data["visitor_id"],
            channel=data["channel"],
            experiments=tuple(experiments) if experiments is not None else None,
            attributes=data.get("attributes") or None,
            persona=data.get("persona"),
        )
    )
    for d in result.decisions:
        metrics().decisions.labels(d.reason).inc()
    return jsonify({
        "visitor_id": result.visitor_id,
        "persona": result.persona,
        "decisions": [
            {"experiment": d.experiment, "variant": d.variant, "payload": d.payload,
             "decision_id": d.decision_id, "propensity": d.propensity, "reason": d.reason}
            for d in result.decisions
        ],
    })


@bp.post("/track")
def track() -> ResponseReturnValue:
    """One outcome event or a batch of them; idempotent by (visitor, event_id)."""
    require("sdk")
    body = json_body()
    batch = isinstance(body, dict) and "events" in body
    if batch:
        raw_events = load(_batch_schema, body)["events"]
    else:
        raw_events = [load(_event_schema, body)]
    events = [
        TrackEvent(visitor_id=e["visitor_id"], metric=e["metric"], event_id=e["event_id"],
                   value=e.get("value"), timestamp_ms=e.get("timestamp"))
        for e in raw_events
    ]
    result = current_app.extensions["centric"].outcomes.track(events)
    metrics().events.labels("accepted").inc(result.accepted)
    metrics().events.labels("duplicate").inc(result.duplicates)
    return jsonify({
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "attributed": [
            {"experiment": a.experiment, "variant": a.variant, "event_id": a.event_id}
            for a in result.attributed
        ],
    })
