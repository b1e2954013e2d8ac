"""marshmallow schemas at the HTTP edge: validate bodies, then build frozen dataclasses."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from bandits.learner import POOLING
from experiments.model import (
    Audience,
    BanditSettings,
    DecisionSettings,
    Experiment,
    Metric,
    MetricKind,
    Mode,
    Variant,
)
from experiments.rules import validate_rule

NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,63}\Z"
NAME = validate.Regexp(NAME_RE, error="must match [a-z0-9][a-z0-9_-]{{0,63}}")
EXPERIMENT_KEY = re.compile(NAME_RE)
# 'other' is where traffic beyond an experiment's segment cap is counted: no caller may use it.
SEGMENT_NAME = [NAME, validate.NoneOf(["other"], error="'other' is reserved for traffic "
                                      "beyond an experiment's segment cap")]
ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_ID_LENGTH = 256
MAX_AGE_SECONDS = 30 * 86400
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_ATTRIBUTES = 100
MAX_VALUE = 1e12


class StrictNumber(fields.Field):
    """A finite JSON number; strings, booleans, NaN and infinities are rejected."""

    default_error_messages = {"invalid": "must be a finite number"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        try:
            number = float(value)
        except OverflowError as exc:
            raise self.make_error("invalid") from exc
        if not math.isfinite(number):
            raise self.make_error("invalid")
        return number


class StrictBoolean(fields.Field):
    """true or false; numbers (1 == True in Python) and strings are rejected."""

    default_error_messages = {"invalid": "must be true or false"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if value is not True and value is not False:
            raise self.make_error("invalid")
        return value


class Attributes(fields.Field):
    """Profile attributes: up to 100 names mapped to scalars, flat lists of scalars, or null."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict:
        if not isinstance(value, dict):
            raise ValidationError("must be an object")
        if len(value) > MAX_ATTRIBUTES:
            raise ValidationError(f"at most {MAX_ATTRIBUTES} attributes")
        errors: dict[str, list[str]] = {}
        for name, item in value.items():
            if not isinstance(name, str) or not ATTRIBUTE_NAME.fullmatch(name):
                errors[name] = ["attribute names must match [A-Za-z_][A-Za-z0-9_.-]{0,63}"]
            elif isinstance(item, list):
                if not 0 < len(item) <= 50 or not all(_attribute_scalar(x) for x in item):
                    errors[name] = ["lists hold 1-50 strings, finite numbers or booleans"]
                elif len(json.dumps(item, ensure_ascii=False)) > 4096:
                    errors[name] = ["a list attribute is at most 4096 characters of JSON"]
            elif item is not None and not _attribute_scalar(item):
                errors[name] = ["must be a string (<= 1024 chars), finite number, boolean, "
                                "list or null"]
        if errors:
            raise ValidationError(errors)
        return value


def _attribute_scalar(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) <= 10**15
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= 1e15
    return isinstance(value, str) and len(value) <= 1024


class StrictSchema(Schema):
    """Base schema: unknown fields are errors."""

    class Meta:
        unknown = RAISE


class VariantSchema(StrictSchema):
    key = fields.String(required=True, validate=NAME)
    weight = StrictNumber(load_default=1.0, validate=validate.Range(max=1e6))
    payload = fields.Raw(load_default=None, allow_none=True)

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("weight", 1.0) <= 0:
            raise ValidationError("must be positive", "weight")
        size = len(json.dumps(data.get("payload"), separators=(",", ":"),
                              ensure_ascii=False).encode())
        if size > MAX_PAYLOAD_BYTES:
            raise ValidationError(f"payload JSON is {size} bytes; the limit is 16 KiB", "payload")


class MetricSchema(StrictSchema):
    name = fields.String(required=True, validate=NAME)
    kind = fields.String(
        load_default="conversion", validate=validate.OneOf([k.value for k in MetricKind])
    )
    harmful = fields.String(validate=validate.OneOf(["increase", "decrease"]))
    within_days = fields.Float(validate=validate.Range(min=0, max=3650, min_inclusive=False),
                               allow_nan=False)

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        repeat = data.get("kind") == "repeat"
        if repeat and "within_days" not in data:
            raise ValidationError("a repeat metric needs within_days", "within_days")
        if not repeat and "within_days" in data:
            raise ValidationError("only a repeat metric takes within_days", "within_days")


class RuleList(fields.Field):
    """A list of rule trees (all must hold), checked by experiments.rules."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list:
        if not isinstance(value, list) or len(value) > 50:
            raise ValidationError("must be a list of at most 50 rules")
        if len(json.dumps(value, ensure_ascii=False)) > 16 * 1024:
            raise ValidationError("rules are at most 16 KiB of JSON")
        errors: dict[str, str] = {}
        for i, rule in enumerate(value):
            errors.update(validate_rule(rule, str(i)))
        if errors:
            raise ValidationError({path: [msg] for path, msg in errors.items()})
        return value


class AudienceSchema(StrictSchema):
    personas = fields.List(fields.String(validate=SEGMENT_NAME), load_default=list,
                           validate=validate.Length(max=50))
    channels = fields.List(fields.String(validate=SEGMENT_NAME), load_default=list,
                           validate=validate.Length(max=50))
    rules = RuleList(load_default=list)


class PriorSchema(StrictSchema):
    alpha = StrictNumber(load_default=1.0, validate=validate.Range(min=1e-6, max=1e6))
    beta = StrictNumber(load_default=1.0, validate=validate.Range(min=1e-6, max=1e6))


class BanditSchema(StrictSchema):
    prior = fields.Nested(PriorSchema, load_default=lambda: {"alpha": 1.0, "beta": 1.0})
    floor = StrictNumber(load_default=0.01, validate=validate.Range(min=0.0, max=0.5))
    pooling = fields.String(load_default="auto", validate=validate.OneOf(POOLING))
    # Ten years at most: beyond that fading is indistinguishable from never (null).
    half_life_hours = StrictNumber(load_default=2160.0, allow_none=True,
                                   validate=validate.Range(min=0.1, max=87600.0))


class DecisionSchema(StrictSchema):
    chance_to_be_best = StrictNumber(load_default=0.95, validate=validate.Range(min=0.5, max=1))
    loss_threshold = StrictNumber(load_default=0.01, validate=validate.Range(min=0, max=10))
    rope = StrictNumber(load_default=0.05, validate=validate.Range(min=0, max=10))
    alpha = StrictNumber(load_default=0.05, validate=validate.Range(min=1e-6, max=0.5))
    effect_scale = StrictNumber(load_default=0.25, validate=validate.Range(min=1e-4, max=10))
    min_exposures = fields.Integer(load_default=100, strict=True,
                                   validate=validate.Range(min=0, max=10**9))


class ExperimentSchema(StrictSchema):
    """The experiment definition: what POST and PUT /v1/experiments accept."""

    key = fields.String(required=True, validate=NAME)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    hypothesis = fields.String(load_default="", validate=validate.Length(max=2000))
    mode = fields.String(load_default="bandit", validate=validate.OneOf([m.value for m in Mode]))
    variants = fields.List(
        fields.Nested(VariantSchema),
        required=True,
        validate=validate.Length(min=2, max=20, error="2-20 variants"),
    )
    control = fields.String(validate=NAME)
    metric = fields.Nested(MetricSchema, required=True)
    guardrails = fields.List(fields.Nested(MetricSchema), load_default=list,
                             validate=validate.Length(max=10))
    audience = fields.Nested(AudienceSchema, load_default=dict)
    coverage = StrictNumber(load_default=1.0, validate=validate.Range(min=0.0, max=1.0))
    holdout = StrictNumber(load_default=0.0, validate=validate.Range(min=0.0, max=1.0))
    attribution_window_hours = StrictNumber(
        load_default=168.0, validate=validate.Range(min=0.01, max=24 * 366)
    )
    bandit = fields.Nested(BanditSchema, load_default=dict)
    decision = fields.Nested(DecisionSchema, load_default=dict)

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        variants = data.get("variants") or []
        keys = [v["key"] for v in variants]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValidationError(f"variant keys must be unique; repeated: {duplicates}",
                                  "variants")
        control = data.get("control")
        if control is None and "control" not in keys and keys:
            raise ValidationError("name the control variant (or call one variant 'control')",
                                  "control")
        if control is not None and keys and control not in keys:
            raise ValidationError(f"'{control}' is not one of the variants {keys}", "control")
        floor = (data.get("bandit") or {}).get("floor", 0.01)
        if keys and floor * len(keys) > 1.0:
            raise ValidationError("floor x number of variants must be at most 1", "bandit.floor")
        names = [data["metric"]["name"]] if "metric" in data else []
        names += [g["name"] for g in data.get("guardrails", [])]
        if len(set(names)) != len(names):
            raise ValidationError("guardrail metrics must differ from each other and the "
                                  "primary metric", "guardrails")

    @post_load
    def _build(self, data: dict[str, Any], **kwargs: Any) -> Experiment:
        control = data.get("control") or "control"
        return Experiment(
            key=data["key"],
            name=data["name"],
            hypothesis=data["hypothesis"],
            mode=Mode(data["mode"]),
            variants=tuple(Variant(v["key"], v["weight"], v["payload"]) for v in data["variants"]),
            control=control,
            metric=_metric(data["metric"]),
            guardrails=tuple(_metric(g) for g in data["guardrails"]),
            audience=Audience(
                personas=tuple(data["audience"].get("personas", ())),
                channels=tuple(data["audience"].get("channels", ())),
                rules=tuple(data["audience"].get("rules", ())),
            ),
            coverage=data["coverage"],
            holdout=data["holdout"],
            attribution_window_hours=data["attribution_window_hours"],
            bandit=BanditSettings(
                prior_alpha=data["bandit"].get("prior", {}).get("alpha", 1.0),
                prior_beta=data["bandit"].get("prior", {}).get("beta", 1.0),
                floor=data["bandit"].get("floor", 0.01),
                pooling=data["bandit"].get("pooling", "auto"),
                half_life_hours=data["bandit"].get("half_life_hours", 2160.0),
            ),
            decision=DecisionSettings(**data["decision"]) if data["decision"]
            else DecisionSettings(),
        )


def _metric(data: dict[str, Any]) -> Metric:
    return Metric(name=data["name"], kind=MetricKind(data.get("kind", "conversion")),
                  harmful=data.get("harmful", ""), within_days=data.get("within_days"))


class StopSchema(StrictSchema):
    winner = fields.String(validate=NAME, allow_none=True, load_default=None)


def visitor_id(value: str) -> None:
    """1-256 printable characters and no raw e-mail address; the length is checked first."""
    if not 0 < len(value) <= MAX_ID_LENGTH:
        raise ValidationError(f"must be 1-{MAX_ID_LENGTH} printable characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationError(f"must be 1-{MAX_ID_LENGTH} printable characters")
    no_email(value)


def id_type(value: str) -> None:
    """An id type such as visitor_id, customer_id or device_id."""
    if len(value) > 32 or not ID_TYPE.fullmatch(value):
        raise ValidationError("id types match [a-z][a-z0-9_]{0,31}")


class DecideSchema(StrictSchema):
    """Body of POST /v1/decide."""

    visitor_id = fields.String(required=True, validate=visitor_id)
    id_type = fields.String(load_default="visitor_id", validate=id_type)
    channel = fields.String(required=True, validate=SEGMENT_NAME)
    experiments = fields.List(fields.String(validate=NAME), validate=validate.Length(max=50))
    attributes = Attributes(load_default=dict)
    persona = fields.String(validate=SEGMENT_NAME)
    expose = StrictBoolean(load_default=True)


class ExposureSchema(StrictSchema):
    """One decision a caller confirms it showed."""

    experiment = fields.String(required=True, validate=NAME)
    decision_id = fields.String(required=True, validate=validate.Regexp(
        r"^[0-9a-f]{32}\Z", error="must be a decision id from decide (32 hex characters)"))


class ExposeSchema(StrictSchema):
    """Body of POST /v1/expose."""

    visitor_id = fields.String(required=True, validate=visitor_id)
    id_type = fields.String(load_default="visitor_id", validate=id_type)
    decisions = fields.List(fields.Nested(ExposureSchema), required=True,
                            validate=validate.Length(min=1, max=50))


class Timestamp(fields.Field):
    """Epoch seconds (number) or an ISO-8601 string with a time zone; returns epoch ms."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise ValidationError("must be epoch seconds or an ISO-8601 date-time")
        if isinstance(value, int | float):
            if (isinstance(value, int) and not 0 <= value < MAX_EPOCH) or not (
                    math.isfinite(value) and 0 <= value < MAX_EPOCH):
                raise ValidationError(EPOCH_RANGE)
            return int(value * 1000)
        if isinstance(value, str) and len(value) <= 64:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is not None:
                seconds = parsed.timestamp()
                # The same range as epoch seconds: year 1 or 9999 is a bug, not an event time.
                if not 0 <= seconds < MAX_EPOCH:
                    raise ValidationError(EPOCH_RANGE)
                return int(seconds * 1000)
        raise ValidationError("must be epoch seconds or an ISO-8601 date-time with time zone")


MAX_EPOCH = 10**11  # seconds: about the year 5138; anything past it is a unit mistake
EPOCH_RANGE = "out of range: epoch seconds or a date-time between 1970 and 5138"


class TrackEventSchema(StrictSchema):
    """One outcome event."""

    visitor_id = fields.String(required=True, validate=visitor_id)
    id_type = fields.String(load_default="visitor_id", validate=id_type)
    metric = fields.String(required=True, validate=NAME)
    value = StrictNumber(load_default=None, allow_none=True,
                         validate=validate.Range(min=-MAX_VALUE, max=MAX_VALUE))
    event_id = fields.String(required=True, validate=validate.Regexp(
        r"^[A-Za-z0-9_.:-]{1,128}\Z", error="must be 1-128 characters of [A-Za-z0-9_.:-]"))
    timestamp = Timestamp(load_default=None, allow_none=True)
    # Seconds since the event, by the sender's clock: immune to a device clock that is off.
    age = StrictNumber(load_default=None, allow_none=True,
                       validate=validate.Range(min=0, max=MAX_AGE_SECONDS))

    @validates_schema
    def _one_time(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("timestamp") is not None and data.get("age") is not None:
            raise ValidationError("send either timestamp or age, not both", "age")


class TrackBatchSchema(StrictSchema):
    """A batch of outcome events; each event is validated on its own (TrackEventSchema)."""

    events = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1, max=500))


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, str]:
    """Turn marshmallow's nested error dict into {"variants.0.key": "message"}."""
    if isinstance(messages, dict):
        flat: dict[str, str] = {}
        for name, inner in messages.items():
            path = f"{prefix}.{name}" if prefix else str(name)
            if name == "_schema":
                path = prefix or "body"
            flat.update(flatten_errors(inner, path))
        return flat
    if isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            return {prefix or "body": "; ".join(messages)}
        flat = {}
        for item in messages:
            flat.update(flatten_errors(item, prefix))
        return flat
    return {prefix or "body": str(messages)}


class EmptySchema(StrictSchema):
    """A body with no fields (status actions without options)."""


# One character each side is enough: the address shape is a@b.c, and a search for it with
# single characters cannot backtrack (callers check the length first anyway).
EMAIL_LIKE = re.compile(r"[^@\s]@[^@\s]+\.[^@\s]")
ID_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def no_email(value: str) -> None:
    """Refuse raw e-mail addresses wherever an id is taken (privacy by construction)."""
    if EMAIL_LIKE.search(value):
        raise ValidationError("looks like a raw e-mail address: send email_sha256 (hex SHA-256 "
                              "of the trimmed, lower-cased address) in identify instead")


class LinkedIds(fields.Field):
    """First-party ids to link: {type: value}; raw e-mail addresses are refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict:
        if not isinstance(value, dict) or not 0 < len(value) <= 10:
            raise ValidationError("must be an object of 1-10 ids, e.g. {\"customer_id\": \"42\"}")
        errors: dict[str, list[str]] = {}
        for kind, ident in value.items():
            if not isinstance(kind, str) or not ID_TYPE.fullmatch(kind):
                errors[str(kind)] = ["id types match [a-z][a-z0-9_]{0,31}"]
            elif kind in ("email", "e_mail", "mail", "email_address"):
                errors[kind] = ["raw e-mail addresses are refused: send email_sha256"]
            elif not isinstance(ident, str) or not 0 < len(ident) <= 256 or any(
                    ord(ch) < 32 or ord(ch) == 127 for ch in ident):
                errors[kind] = ["must be 1-256 printable characters"]
            elif EMAIL_LIKE.search(ident):
                errors[kind] = ["looks like a raw e-mail address: send email_sha256"]
            elif kind == "email_sha256" and not SHA256_HEX.fullmatch(ident):
                errors[kind] = ["must be 64 lower-case hex characters (SHA-256)"]
        if errors:
            raise ValidationError(errors)
        return value


class IdentifySchema(StrictSchema):
    """Body of POST /v1/identify."""

    visitor_id = fields.String(required=True, validate=visitor_id)
    id_type = fields.String(load_default="visitor_id", validate=id_type)
    ids = LinkedIds(required=True)
    attributes = Attributes(load_default=dict)
    signature = fields.String(validate=validate.Regexp(
        r"^[0-9a-fA-F]{64}\Z", error="must be the hex HMAC-SHA256 of the customer id"))
    # With an expiry the signature also covers the visitor id: one browser, for a while.
    signature_expires = fields.Integer(strict=True, validate=validate.Range(min=0, max=10**11))


class PersonaSchema(StrictSchema):
    """One persona: a name and the rule that selects it."""

    name = fields.String(required=True, validate=NAME)
    when = fields.Raw(required=True)

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("name") == "default":
            raise ValidationError("'default' is what matches when no persona does", "name")
        if data.get("name") == "other":
            raise ValidationError("'other' holds traffic beyond an experiment's segment cap",
                                  "name")
        errors = validate_rule(data.get("when"), "when", allow_persona=False)
        if errors:
            raise ValidationError({path: [msg] for path, msg in errors.items()})
        if len(json.dumps(data.get("when"), ensure_ascii=False)) > 16 * 1024:
            raise ValidationError("a persona rule is at most 16 KiB of JSON", "when")


class PersonaListSchema(StrictSchema):
    """Body of PUT /v1/personas (wrapped so that the list itself can be validated)."""

    personas = fields.List(fields.Nested(PersonaSchema), required=True,
                           validate=validate.Length(max=50))

    @validates_schema
    def _unique(self, data: dict[str, Any], **kwargs: Any) -> None:
        names = [p["name"] for p in data.get("personas", [])]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValidationError(f"persona names must be unique; repeated: {repeated}",
                                  "personas")


MAX_AUDIT_PAGE = 500
AUDIT_CURSOR = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


def audit_cursor(value: str) -> None:
    """A `next` value of an earlier page: a Redis stream id, two unsigned 64-bit numbers."""
    match = AUDIT_CURSOR.fullmatch(value)
    if match is None or max(int(match[1]), int(match[2])) >= 2**64:
        raise ValidationError("must be the 'next' value of an earlier page")


class AuditQuerySchema(Schema):
    """Query of the audit log endpoints (other query parameters are ignored, as elsewhere)."""

    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=50, strict=False,
                           validate=validate.Range(min=1, max=MAX_AUDIT_PAGE))
    before = fields.String(load_default=None, validate=audit_cursor)


class MomentSchema(StrictSchema):
    """One moment: a rule over lifecycle and prediction facts, and the message's experiments."""

    name = fields.String(required=True, validate=NAME)
    description = fields.String(load_default="", validate=validate.Length(max=1000))
    when = fields.Raw(required=True)
    channel = fields.String(load_default="email", validate=SEGMENT_NAME)
    experiment = fields.String(load_default=None, allow_none=True, validate=NAME)
    followup_experiment = fields.String(load_default=None, allow_none=True, validate=NAME)
    cooldown_days = fields.Float(load_default=None, allow_none=True, allow_nan=False,
                                 validate=validate.Range(min=0, max=3650, min_inclusive=False))

    @validates_schema
    def _check(self, data: dict[str, Any], **kwargs: Any) -> None:
        if len(json.dumps(data.get("when"), ensure_ascii=False)) > 16 * 1024:
            raise ValidationError("a moment's rule is at most 16 KiB of JSON", "when")
        errors = validate_rule(data.get("when"), "when")
        if errors:
            raise ValidationError({path: [msg] for path, msg in errors.items()})
        if data.get("followup_experiment") and not data.get("experiment"):
            raise ValidationError("a follow-up needs the first entry's experiment",
                                  "followup_experiment")


class MomentListSchema(StrictSchema):
    """Body of PUT /v1/moments (wrapped so that the list itself can be validated)."""

    moments = fields.List(fields.Nested(MomentSchema), required=True,
                          validate=validate.Length(max=50))

    @validates_schema
    def _unique(self, data: dict[str, Any], **kwargs: Any) -> None:
        names = [m["name"] for m in data.get("moments", [])]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValidationError(f"moment names must be unique; repeated: {repeated}",
                                  "moments")


MAX_MEMBER_PAGE = 1000


class MembersQuerySchema(StrictSchema):
    """Query of GET /v1/moments/<name>/members."""

    cursor = fields.String(load_default="0", validate=validate.Regexp(
        r"^[0-9]{1,15}\Z", error="must be a next_cursor from an earlier page"))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_MEMBER_PAGE))
