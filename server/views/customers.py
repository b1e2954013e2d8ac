"""Customer value (the fitted model) and moments: admin endpoints and the member list."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from server import schemas
from server.errors import InvalidInput, NotFound
from server.stores.moments import Moment
from server.views.io import actor, json_body, load, require

bp = Blueprint("customers", __name__, url_prefix="/v1")

_moments_schema = schemas.MomentListSchema()
_members_schema = schemas.MembersQuerySchema()


@bp.get("/models/clv")
def get_model() -> ResponseReturnValue:
    """The last customer-value fit."""
    require("read")
    model = current_app.extensions["centric"].customer_value.model()
    if model is None:
        raise NotFound("no customer-value model has been fitted yet", {"model": "not fitted"})
    return jsonify(model.to_json())


@bp.post("/models/clv/fit")
def fit_model() -> ResponseReturnValue:
    """Fit the customer-value model now and score every known customer."""
    require("admin")
    return jsonify(current_app.extensions["centric"].refresh.fit().to_json())


@bp.get("/moments")
def get_moments() -> ResponseReturnValue:
    """Every moment definition."""
    require("admin")
    return jsonify([m.to_json() for m in current_app.extensions["centric"].moments.get()])


@bp.put("/moments")
def put_moments() -> ResponseReturnValue:
    """Replace the moment definitions."""
    require("admin")
    body = json_body()
    if not isinstance(body, list):
        raise InvalidInput("the body must be a JSON list of moments",
                           {"body": "must be a list of moments"})
    data = load(_moments_schema, {"moments": body})
    moments = [Moment.from_json(m) for m in data["moments"]]
    saved = current_app.extensions["centric"].moments.put(moments, actor())
    return jsonify([m.to_json() for m in saved])


@bp.post("/moments/sweep")
def sweep_moments() -> ResponseReturnValue:
    """Bring predictions and every moment's members up to date now."""
    require("admin")
    return jsonify(current_app.extensions["centric"].refresh.sweep().to_json())


@bp.get("/moments/<name>/members")
def moment_members(name: str) -> ResponseReturnValue:
    """A page of the customers in a moment now, each with the message decided for them."""
    require("trusted")
    query = load(_members_schema, request.args.to_dict())
    page = current_app.extensions["centric"].moments.members(
        name, int(query["cursor"]), query["limit"])
    return jsonify(page)
