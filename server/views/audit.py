"""The audit log: every change to experiments, personas and API keys (admin and viewer)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server.schemas import AuditQuerySchema
from server.stores.audit import AuditPage
from server.views.io import load, require

bp = Blueprint("audit", __name__, url_prefix="/v1/audit")

_schema = AuditQuerySchema()


def audit_page(page: AuditPage) -> dict[str, Any]:
    """The JSON answer of one page of the log."""
    return {"entries": [{"at": e.at, "actor": e.actor, "action": e.action,
                         "target_type": e.target_type, "target": e.target,
                         "details": e.details} for e in page.entries],
            "next": page.next}


@bp.get("")
def audit_log() -> ResponseReturnValue:
    """The newest entries first; `?before=<next>` for older ones, `?limit=` (1-500)."""
    require("read")
    query = load(_schema, request.args.to_dict())
    page = current_app.extensions["centric"].audit.page(query["limit"], query["before"])
    return jsonify(audit_page(page))
