"""Request parsing shared by views: strict JSON bodies, schema loading, auth."""

from __future__ import annotations

import json
from typing import Any

from flask import current_app, request
from marshmallow import Schema, ValidationError

from server import identities, schemas
from server.errors import Forbidden, InvalidInput, MalformedJSON, UnsupportedMediaType
from server.identities import VISITOR
from server.schemas import flatten_errors
from server.services.auth import TRUSTED


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_body(allow_empty: bool = False) -> Any:
    """The request body parsed as strict JSON (no NaN/Infinity, UTF-8 only)."""
    raw = request.get_data(cache=True)
    if not raw and allow_empty:
        return {}
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send the body as application/json",
                                   {"content-type": "must be application/json"})
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        raise UnsupportedMediaType("JSON bodies are UTF-8",
                                   {"content-type": "charset must be utf-8 (or left out)"})
    try:
        text = raw.decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant)
        if "\\u" in text:
            # Escapes may hide lone surrogates, which Redis (and every UTF-8 consumer) rejects.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        return data
    except UnicodeEncodeError as exc:
        raise MalformedJSON("the body holds an invalid \\u escape (a lone surrogate)",
                            {"body": "invalid unicode escape"}) from exc
    except UnicodeDecodeError as exc:
        raise MalformedJSON("the body is not UTF-8", {"body": "not UTF-8"}) from exc
    except RecursionError as exc:
        raise MalformedJSON("the body nests too deeply", {"body": "nested too deeply"}) from exc
    except ValueError as exc:
        raise MalformedJSON(f"the body is not valid JSON: {exc}", {"body": "invalid JSON"}) from exc


def load(schema: Schema, data: Any) -> Any:
    """Validate data with a schema; errors become InvalidInput naming each field."""
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", {"body": "must be an object"})
    try:
        return schema.load(data)
    except ValidationError as exc:
        fields = flatten_errors(exc.messages)
        raise InvalidInput("invalid " + ", ".join(sorted(fields)), fields) from exc
    except RecursionError as exc:
        raise InvalidInput("the body nests too deeply", {"body": "nested too deeply"}) from exc


def require(kind: str, fast: bool = False) -> str:
    """Authenticate the request for an endpoint of a kind (sdk, read or admin); return the role.

    `fast` checks the key on the decision path's client, within the decide budget.
    """
    services = current_app.extensions["centric"]
    return services.auth.require(request.headers.get("Authorization"), kind, fast)


def actor() -> str:
    """Who makes this (authenticated) request, as the audit log names them."""
    services = current_app.extensions["centric"]
    return services.auth.actor(request.headers.get("Authorization"))


def acting_as(role: str, id_type: str) -> None:
    """An SDK key only ever acts as an anonymous device: other id types need a server key."""
    if id_type != VISITOR and role not in TRUSTED:
        raise Forbidden("SDK keys act only as an anonymous device (id type visitor_id)",
                        {"id_type": "needs a server key"})


def typed_node(raw_id: str, kind: str) -> str:
    """The typed node of an id and its type, each checked as the API checks them."""
    errors = {}
    for name, check, value in (("id", schemas.visitor_id, raw_id),
                               ("id_type", schemas.id_type, kind)):
        try:
            check(value)
        except ValidationError as exc:
            errors[name] = "; ".join(str(m) for m in exc.messages)
    if errors:
        raise InvalidInput("invalid " + ", ".join(sorted(errors)), errors)
    return identities.node(kind, raw_id)
