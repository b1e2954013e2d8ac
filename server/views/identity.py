"""Identify (SDK), the visitor privacy endpoints and personas (admin)."""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server import identities, schemas
from server.errors import InvalidInput
from server.services.auth import TRUSTED
from server.views.io import acting_as, actor, json_body, load, require, typed_node

bp = Blueprint("identity", __name__, url_prefix="/v1")

_identify_schema = schemas.IdentifySchema()
_personas_schema = schemas.PersonaListSchema()


@bp.post("/identify")
def identify() -> ResponseReturnValue:
    """Link first-party ids to one profile; answer with the canonical id."""
    role = require("sdk")
    data = load(_identify_schema, json_body())
    acting_as(role, data["id_type"])
    attributes = {
        name: "" if value is None else json.dumps(value, separators=(",", ":"))
        for name, value in (data.get("attributes") or {}).items()
    }
    canonical = current_app.extensions["centric"].identity.identify(
        data["visitor_id"], data["ids"], attributes, id_type=data["id_type"],
        signature=data.get("signature"), signature_expires=data.get("signature_expires"),
        trusted=role in TRUSTED)
    return jsonify({"visitor_id": canonical})


def _person(raw_id: str) -> str:
    """The typed node of a visitor path segment and its ?id_type= (default visitor_id)."""
    return typed_node(raw_id, request.args.get("id_type", identities.VISITOR))


@bp.get("/visitors/<path:visitor_id>")
def export_visitor(visitor_id: str) -> ResponseReturnValue:
    """Everything stored about a person (any of their ids works): right of access."""
    require("admin")  # personal data: not for viewer keys
    return jsonify(current_app.extensions["centric"].identity.export(_person(visitor_id)))


@bp.delete("/visitors/<path:visitor_id>")
def erase_visitor(visitor_id: str) -> ResponseReturnValue:
    """Erase a person everywhere (aggregate counters stay: they hold no personal data)."""
    require("admin")
    removed = current_app.extensions["centric"].identity.erase(_person(visitor_id))
    return jsonify({"erased": True, "keys_removed": removed})


@bp.get("/personas")
def get_personas() -> ResponseReturnValue:
    """The ordered persona rules."""
    require("read")
    return jsonify(current_app.extensions["centric"].personas.get())


@bp.put("/personas")
def put_personas() -> ResponseReturnValue:
    """Replace the ordered persona rules (first match wins; 'default' when none does)."""
    require("admin")
    body = json_body()
    if not isinstance(body, list):
        raise InvalidInput("the body must be a JSON list of personas",
                           {"body": "must be a list of {name, when}"})
    data = load(_personas_schema, {"personas": body})
    personas = [{"name": p["name"], "when": p["when"]} for p in data["personas"]]
    current_app.extensions["centric"].personas.put(personas, actor())
    return jsonify(personas)
