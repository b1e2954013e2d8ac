"""The OpenAPI 3 document, generated from the marshmallow schemas the API validates with."""

from __future__ import annotations

from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from server import schemas as s

ERROR_STATUSES = {
    "400": "Invalid input; `fields` names each bad field",
    "401": "Missing or unknown API key",
    "403": "The key's role may not call this endpoint",
    "404": "Not found",
    "405": "Method not allowed",
    "409": "Conflicts with the current state",
    "413": "Body larger than the limit",
    "414": "URL longer than the limit",
    "415": "Body is not application/json",
    "429": "Rate limited (Retry-After)",
    "503": "The store is unavailable (Retry-After)",
}


class ErrorDetail(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    # "fields" would shadow marshmallow's own attribute: declare it under another name.
    field_errors = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                               data_key="fields")


class Error(Schema):
    error = fields.Nested(ErrorDetail, required=True)


class DecisionOut(Schema):
    experiment = fields.String(required=True)
    variant = fields.String(required=True)
    payload = fields.Raw(allow_none=True)
    decision_id = fields.String(required=True)
    propensity = fields.Float(allow_none=True)
    reason = fields.String(required=True)
    pending = fields.Boolean(required=True)  # confirm with /v1/expose once shown


class DecideOut(Schema):
    visitor_id = fields.String(required=True)
    persona = fields.String(required=True)
    decisions = fields.List(fields.Nested(DecisionOut), required=True)


class AttributionOut(Schema):
    experiment = fields.String(required=True)
    variant = fields.String(required=True)
    event_id = fields.String(required=True)


class RejectedOut(Schema):
    """An event of a batch that was refused, with the reasons per field."""

    index = fields.Integer(required=True)
    field_errors = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                               data_key="fields")


class TrackOut(Schema):
    accepted = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)
    attributed = fields.List(fields.Nested(AttributionOut), required=True)
    rejected = fields.List(fields.Nested(RejectedOut))  # batches: the events refused


class ExposeOut(Schema):
    """Confirmations counted now, counted before, or matching no pending decision."""

    exposed = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)
    ignored = fields.Integer(required=True)


class IdentifyOut(Schema):
    visitor_id = fields.String(required=True)


class AuditEntryOut(Schema):
    """One recorded change to an experiment, the personas or an API key."""

    at = fields.Integer(required=True)
    actor = fields.String(required=True)
    action = fields.String(required=True)
    target_type = fields.String(required=True)
    target = fields.String(required=True)
    details = fields.Dict(required=True)


class AuditPageOut(Schema):
    """Entries newest first; `next` is the `before` of the following page (null: no more)."""

    entries = fields.List(fields.Nested(AuditEntryOut), required=True)
    next = fields.String(required=True, allow_none=True)


def _field_types(plugin: MarshmallowPlugin) -> None:
    plugin.map_to_openapi_type(s.StrictNumber, "number", None)
    plugin.map_to_openapi_type(s.StrictBoolean, "boolean", None)
    plugin.map_to_openapi_type(s.Attributes, "object", None)
    plugin.map_to_openapi_type(s.RuleList, "array", None)
    plugin.map_to_openapi_type(s.LinkedIds, "object", None)


def _responses(ok: str, ok_schema: Any, description: str = "OK") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ok == "204":
        out[ok] = {"description": description}
    else:
        out[ok] = {"description": description,
                   "content": {"application/json": {"schema": ok_schema}}}
    for status, text in ERROR_STATUSES.items():
        out[status] = {"description": text,
                       "content": {"application/json": {"schema": {"$ref":
                                                                   "#/components/schemas/Error"}}}}
    return out


def _body(schema: Any) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


OBJECT = {"type": "object"}
KEY = [{"name": "key", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": s.NAME_RE}}]


class MemberOut(Schema):
    customer_id = fields.String(required=True)
    id_type = fields.String(required=True)
    entry = fields.Integer(required=True)
    entry_id = fields.String(required=True)
    entered_at = fields.Float(required=True)
    decision = fields.Dict(allow_none=True, required=True)


class MemberPageOut(Schema):
    moment = fields.String(required=True)
    members = fields.List(fields.Nested(MemberOut), required=True)
    next_cursor = fields.String(required=True)
    has_more = fields.Boolean(required=True)
    count = fields.Integer(required=True)


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document as a dict (built once per process)."""
    plugin = MarshmallowPlugin()
    spec = APISpec(title="centric", version="1", openapi_version="3.0.3", plugins=[plugin],
                   info={"description": "Personalization and experimentation server."})
    _field_types(plugin)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    for name, schema in [("Error", Error), ("DecideRequest", s.DecideSchema),
                         ("DecideResponse", DecideOut), ("TrackEvent", s.TrackEventSchema),
                         ("TrackBatch", s.TrackBatchSchema), ("TrackResponse", TrackOut),
                         ("IdentifyRequest", s.IdentifySchema),
                         ("IdentifyResponse", IdentifyOut), ("ExposeRequest", s.ExposeSchema),
                         ("ExposeResponse", ExposeOut), ("Experiment", s.ExperimentSchema),
                         ("Stop", s.StopSchema), ("Persona", s.PersonaSchema),
                         ("AuditPage", AuditPageOut), ("Moment", s.MomentSchema),
                         ("MemberPage", MemberPageOut)]:
        spec.components.schema(name, schema=schema)
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    spec.path("/v1/decide", operations={"post": {
        "summary": "Variants for a visitor", "security": secured,
        "requestBody": _body(_ref("DecideRequest")),
        "responses": _responses("200", _ref("DecideResponse"))}})
    spec.path("/v1/track", operations={"post": {
        "summary": "Record outcomes (idempotent by event id)", "security": secured,
        "requestBody": _body({"oneOf": [_ref("TrackEvent"), _ref("TrackBatch")]}),
        "responses": _responses("200", _ref("TrackResponse"))}})
    spec.path("/v1/expose", operations={"post": {
        "summary": "Confirm decisions that were shown (decide with expose=false)",
        "security": secured, "requestBody": _body(_ref("ExposeRequest")),
        "responses": _responses("200", _ref("ExposeResponse"))}})
    spec.path("/v1/identify", operations={"post": {
        "summary": "Link first-party ids", "security": secured,
        "requestBody": _body(_ref("IdentifyRequest")),
        "responses": _responses("200", _ref("IdentifyResponse"))}})
    spec.path("/v1/experiments", operations={
        "get": {"summary": "List experiments", "security": secured,
                "responses": _responses("200", OBJECT)},
        "post": {"summary": "Create an experiment", "security": secured,
                 "requestBody": _body(_ref("Experiment")),
                 "responses": _responses("201", OBJECT, "Created")}})
    spec.path("/v1/experiments/{key}", parameters=KEY, operations={
        "get": {"summary": "One experiment", "security": secured,
                "responses": _responses("200", OBJECT)},
        "put": {"summary": "Replace an experiment", "security": secured,
                "requestBody": _body(_ref("Experiment")),
                "responses": _responses("200", OBJECT)},
        "delete": {"summary": "Delete an experiment", "security": secured,
                   "responses": _responses("204", None, "Deleted")}})
    for action in ("start", "pause", "stop"):
        op: dict[str, Any] = {"summary": f"{action.title()} an experiment", "security": secured,
                              "responses": _responses("200", OBJECT)}
        if action == "stop":
            op["requestBody"] = {"required": False, "content": {
                "application/json": {"schema": _ref("Stop")}}}
        spec.path(f"/v1/experiments/{{key}}/{action}", parameters=KEY,
                  operations={"post": op})
    spec.path("/v1/experiments/{key}/report", parameters=KEY, operations={"get": {
        "summary": "The Bayesian report", "security": secured,
        "parameters": [{"name": "format", "in": "query", "schema": {
            "type": "string", "enum": ["json", "csv"]}}],
        "responses": {**_responses("200", OBJECT),
                      "200": {"description": "JSON report or CSV table", "content": {
                          "application/json": {"schema": OBJECT},
                          "text/csv": {"schema": {"type": "string"}}}}}}})
    plot = [*KEY,
            {"name": "name", "in": "path", "required": True,
             "schema": {"type": "string", "enum": ["posteriors", "uplift", "allocation"]}},
            {"name": "format", "in": "path", "required": True,
             "schema": {"type": "string", "enum": ["svg", "png"]}}]
    spec.path("/v1/experiments/{key}/report/plots/{name}.{format}", parameters=plot,
              operations={"get": {
                  "summary": "A report figure (one segment with persona and channel)",
                  "security": secured,
                  "parameters": [{"name": "persona", "in": "query", "schema": {"type": "string"}},
                                 {"name": "channel", "in": "query", "schema": {"type": "string"}}],
                  "responses": {**_responses("200", OBJECT), "200": {
                      "description": "The figure", "content": {
                          "image/svg+xml": {"schema": {"type": "string"}},
                          "image/png": {"schema": {"type": "string", "format": "binary"}}}}}}})
    spec.path("/v1/experiments/{key}/counters", parameters=KEY, operations={"get": {
        "summary": "Raw counters", "security": secured,
        "responses": _responses("200", OBJECT)}})
    audit_query = [{"name": "limit", "in": "query", "required": False, "schema": {
                        "type": "integer", "minimum": 1, "maximum": s.MAX_AUDIT_PAGE}},
                   {"name": "before", "in": "query", "required": False, "schema": {
                       "type": "string", "pattern": "^" + s.AUDIT_CURSOR.pattern + "$"}}]
    spec.path("/v1/audit", operations={"get": {
        "summary": "The audit log, newest first", "security": secured,
        "parameters": audit_query, "responses": _responses("200", _ref("AuditPage"))}})
    spec.path("/v1/experiments/{key}/audit", parameters=KEY, operations={"get": {
        "summary": "One experiment's history in the audit log", "security": secured,
        "parameters": audit_query, "responses": _responses("200", _ref("AuditPage"))}})
    spec.path("/v1/personas", operations={
        "get": {"summary": "Persona rules", "security": secured,
                "responses": _responses("200", {"type": "array", "items": OBJECT})},
        "put": {"summary": "Replace persona rules", "security": secured,
                "requestBody": _body({"type": "array", "items": _ref("Persona")}),
                "responses": _responses("200", {"type": "array", "items": OBJECT})}})
    visitor = [{"name": "visitor_id", "in": "path", "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 256}},
               {"name": "id_type", "in": "query", "required": False,
                "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}$"}}]
    spec.path("/v1/visitors/{visitor_id}", parameters=visitor, operations={
        "get": {"summary": "Export a person's profile", "security": secured,
                "responses": _responses("200", OBJECT)},
        "delete": {"summary": "Erase a person", "security": secured,
                   "responses": _responses("200", OBJECT)}})
    spec.path("/v1/models/clv", operations={"get": {
        "summary": "The last customer-value fit", "security": secured,
        "responses": _responses("200", OBJECT)}})
    spec.path("/v1/models/clv/fit", operations={"post": {
        "summary": "Fit the customer-value model now and score every known customer",
        "security": secured, "responses": _responses("200", OBJECT)}})
    spec.path("/v1/moments", operations={
        "get": {"summary": "Moment definitions", "security": secured,
                "responses": _responses("200", {"type": "array", "items": OBJECT})},
        "put": {"summary": "Replace the moment definitions", "security": secured,
                "requestBody": _body({"type": "array", "items": _ref("Moment")}),
                "responses": _responses("200", {"type": "array", "items": OBJECT})}})
    spec.path("/v1/moments/sweep", operations={"post": {
        "summary": "Bring predictions and moment members up to date now",
        "security": secured, "responses": _responses("200", OBJECT)}})
    moment = [{"name": "name", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": s.NAME_RE}}]
    spec.path("/v1/moments/{name}/members", parameters=moment, operations={"get": {
        "summary": "The customers in a moment now, each with the message decided for them",
        "security": secured,
        "parameters": [{"name": "cursor", "in": "query", "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"}},
                       {"name": "limit", "in": "query", "required": False, "schema": {
                           "type": "integer", "minimum": 1, "maximum": s.MAX_MEMBER_PAGE}}],
        "responses": _responses("200", _ref("MemberPage"))}})
    spec.path("/metrics", operations={"get": {"summary": "Prometheus metrics", "responses": {
        "200": {"description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}})
    spec.path("/openapi.json", operations={"get": {"summary": "This document", "responses": {
        "200": {"description": "OpenAPI 3", "content": {
            "application/json": {"schema": OBJECT}}}}}})
    for path, summary in (("/healthz", "Liveness"), ("/readyz", "Redis readiness")):
        spec.path(path, operations={"get": {"summary": summary, "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": OBJECT}}},
            "503": {"description": "Not ready",
                    "content": {"application/json": {"schema": OBJECT}}}}}})
    return _ecma_patterns(spec.to_dict())


def _ecma_patterns(node: Any) -> Any:
    """Python's end-of-string anchor \\Z is spelled $ in the ECMA regexes of JSON Schema."""
    if isinstance(node, dict):
        return {k: (v.replace("\\Z", "$") if k == "pattern" and isinstance(v, str)
                    else _ecma_patterns(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_ecma_patterns(v) for v in node]
    return node
