"""Admin endpoints for experiments: admin and viewer keys read, only admin keys change."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from experiments.codec import to_dict
from server.errors import InvalidInput, NotFound
from server.schemas import (
    EXPERIMENT_KEY,
    AuditQuerySchema,
    EmptySchema,
    ExperimentSchema,
    StopSchema,
)
from server.services.experiments import ExperimentService
from server.stores.counters import Counts
from server.views.audit import audit_page
from server.views.io import actor, json_body, load, require

bp = Blueprint("experiments", __name__, url_prefix="/v1/experiments")

_schema = ExperimentSchema()
_stop_schema = StopSchema()
_empty_schema = EmptySchema()
_audit_schema = AuditQuerySchema()


def _service() -> ExperimentService:
    return current_app.extensions["centric"].experiments


@bp.before_request
def _check_key() -> None:
    # Reads (reports, plots and counters are aggregates: no visitor's data) are open to
    # viewer keys; every other method changes something and needs an admin key.
    require("read" if request.method in ("GET", "HEAD") else "admin")
    key = (request.view_args or {}).get("key")
    if key is not None and not EXPERIMENT_KEY.match(key):
        # Names are short by construction: an odd one is unknown, and never reaches Redis.
        raise NotFound("no such experiment", {"key": "unknown experiment"})


@bp.get("")
def list_experiments() -> ResponseReturnValue:
    """Every experiment."""
    return jsonify({"experiments": [to_dict(e) for e in _service().list()]})


@bp.post("")
def create_experiment() -> ResponseReturnValue:
    """Define a new experiment (a draft)."""
    experiment = _service().create(load(_schema, json_body()), actor())
    return jsonify(to_dict(experiment)), 201


@bp.get("/<key>")
def get_experiment(key: str) -> ResponseReturnValue:
    """One experiment."""
    return jsonify(to_dict(_service().get(key)))


@bp.put("/<key>")
def replace_experiment(key: str) -> ResponseReturnValue:
    """Replace an experiment's definition."""
    return jsonify(to_dict(_service().replace(key, load(_schema, json_body()), actor())))


@bp.delete("/<key>")
def delete_experiment(key: str) -> ResponseReturnValue:
    """Delete an experiment that is not running."""
    _service().delete(key, actor())
    return "", 204


@bp.post("/<key>/start")
def start(key: str) -> ResponseReturnValue:
    """draft|paused -> running."""
    load(_empty_schema, json_body(allow_empty=True))
    return jsonify(to_dict(_service().transition(key, "start", actor())))


@bp.post("/<key>/pause")
def pause(key: str) -> ResponseReturnValue:
    """Running -> paused."""
    load(_empty_schema, json_body(allow_empty=True))
    return jsonify(to_dict(_service().transition(key, "pause", actor())))


@bp.post("/<key>/stop")
def stop(key: str) -> ResponseReturnValue:
    """running|paused -> stopped, optionally shipping a winner to everyone."""
    data = load(_stop_schema, json_body(allow_empty=True))
    return jsonify(to_dict(_service().transition(key, "stop", actor(), data.get("winner"))))


@bp.get("/<key>/counters")
def counters(key: str) -> ResponseReturnValue:
    """Raw counters per segment and variant (the Bayesian report builds on these)."""
    services = current_app.extensions["centric"]
    experiment = _service().get(key)
    counts: Counts = services.counters.read(experiment)
    rows: list[dict[str, object]] = []
    cells = sorted({(g, p, c) for (g, p, c, _) in counts.exposures})
    for group, persona, channel in cells:
        for variant in experiment.variant_keys:
            metrics: dict[str, dict[str, float]] = {}
            for m in experiment.metrics:
                t = counts.tally(m.name, group, persona, channel, variant)
                metrics[m.name] = {"conversions": t.conversions, "value_sum": t.value_sum,
                                   "value_sq_sum": t.value_sq_sum}
            rows.append({
                "group": "holdout" if group == "h" else "policy", "persona": persona,
                "channel": channel, "variant": variant,
                "exposures": counts.exposures.get((group, persona, channel, variant), 0),
                "metrics": metrics,
            })
    return jsonify({"experiment": key, "rows": rows})


@bp.get("/<key>/report")
def report(key: str) -> ResponseReturnValue:
    """The Bayesian report as JSON, or `?format=csv` for a flat table."""
    reports = current_app.extensions["centric"].reports
    fmt = request.args.get("format", "json")
    if fmt == "csv":
        return Response(reports.csv(key), mimetype="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{key}.csv"'})
    if fmt != "json":
        raise InvalidInput(f"unknown format '{fmt}'", {"format": "json or csv"})
    return jsonify(reports.report(key))


@bp.get("/<key>/report/plots/<name>.<fmt>")
def plot(key: str, name: str, fmt: str) -> ResponseReturnValue:
    """A report figure: posteriors, uplift or allocation; `?persona=&channel=` for a segment."""
    image = current_app.extensions["centric"].reports.plot(
        key, name, fmt, request.args.get("persona"), request.args.get("channel"))
    return Response(image, mimetype="image/svg+xml" if fmt == "svg" else "image/png")


@bp.get("/<key>/audit")
def audit(key: str) -> ResponseReturnValue:
    """One experiment's history in the audit log, newest first (also once it is deleted)."""
    query = load(_audit_schema, request.args.to_dict())
    audit_log = current_app.extensions["centric"].audit
    return jsonify(audit_page(audit_log.page(query["limit"], query["before"],
                                             target=("experiment", key))))
