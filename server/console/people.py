"""Console pages about people and access: personas, visitors, API keys and the audit log."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Response, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from experiments.rule_eval import build_facts, choose_persona
from server import identities, schemas
from server.console import editor
from server.console.forms import ActionForm
from server.console.views import admin_only, bp, checked, services
from server.errors import InvalidInput, NotFound
from server.stores.api_keys import MAX_NAME
from server.views.io import load, typed_node

AUDIT_PAGE = 50
KEY_ROLES = ("admin", "viewer", "server", "sdk")
KEY_ID_CHARS = 16  # of the SHA-256 hex digest: unique among any realistic number of keys
# Suggested id types (any [a-z][a-z0-9_]* type works, as in the API).
ID_TYPES = (identities.VISITOR, *identities.KNOWN_TYPES, "device_id")


# --- personas -----------------------------------------------------------------------------


def _test_persona(personas: list[dict[str, Any]], raw_id: str, kind: str, channel: str
                  ) -> dict[str, Any]:
    """Which persona a visitor resolves to now, which rule matched, with the facts used."""
    state = services().identity.stored(typed_node(raw_id, kind))
    profile = dict(state.profile) if state else {}
    attributes = dict(state.attributes) if state else {}
    facts = build_facts(profile, attributes, now_ms=int(time.time() * 1000), channel=channel,
                        known_id=kind in identities.KNOWN_TYPES)
    choice = choose_persona(personas, facts)
    return {"known": state is not None, "persona": choice.name, "index": choice.index,
            "matched": choice.matched.to_json() if choice.matched else None,
            "tried": [t.to_json() for t in choice.tried], "facts": facts}


@bp.route("/personas", methods=["GET", "POST"])
def personas() -> ResponseReturnValue:
    """The ordered persona rules (admins edit them) and a tester against a real visitor."""
    app_services = services()
    current = app_services.personas.get()
    text = json.dumps(current, indent=2)
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        admin_only()
        checked(ActionForm())
        text = request.form.get("personas", "")
        problems: dict[str, str] = {}
        body = editor.parse_json(text, "personas", problems)
        if problems:
            errors = problems
        else:
            if not isinstance(body, list):
                errors = {"personas": "must be a JSON list of {name, when}"}
            else:
                try:
                    data = load(schemas.PersonaListSchema(), {"personas": body})
                except InvalidInput as exc:
                    errors = exc.fields
                else:
                    app_services.personas.put([{"name": p["name"], "when": p["when"]}
                                           for p in data["personas"]], g.principal.name)
                    return redirect(url_for("console.personas"))
        status = 400
    test = None
    if request.args.get("id") and g.principal.can_change:
        # A visitor's profile is personal data: the tester is for admins only.
        test = _test_persona(current, request.args["id"],
                             request.args.get("id_type", identities.VISITOR),
                             request.args.get("channel", "web") or "web")
    return render_template("console/personas.html", text=text, errors=errors, test=test,
                           form=ActionForm(), id_types=ID_TYPES,
                           args=request.args), status


# --- visitors -----------------------------------------------------------------------------


@bp.get("/visitors")
def visitors() -> ResponseReturnValue:
    """Look a person up by any linked id: profile, facts, ids, assignments, persona."""
    admin_only()
    raw_id = request.args.get("id", "").strip()
    kind = request.args.get("id_type", identities.VISITOR)
    profile = persona = None
    if raw_id:
        node = typed_node(raw_id, kind)
        try:
            profile = services().identity.export(node)
        except NotFound:
            profile = None
        else:
            persona = _test_persona(services().personas.get(), raw_id, kind, "web")
    return render_template("console/visitors.html", profile=profile, persona=persona,
                           raw_id=raw_id, kind=kind, form=ActionForm(),
                           id_types=ID_TYPES, searched=bool(raw_id))


@bp.get("/visitors/export")
def export_visitor() -> ResponseReturnValue:
    """Everything stored about the person, as a JSON download (right of access)."""
    admin_only()
    raw_id = request.args.get("id", "")
    node = typed_node(raw_id, request.args.get("id_type", identities.VISITOR))
    data = services().identity.export(node)
    return Response(json.dumps(data, indent=2), mimetype="application/json",
                    headers={"Content-Disposition": 'attachment; filename="visitor.json"'})


@bp.route("/visitors/erase", methods=["GET", "POST"])
def erase_visitor() -> ResponseReturnValue:
    """Confirm, then erase the person everywhere."""
    admin_only()
    raw_id = request.values.get("id", "")
    kind = request.values.get("id_type", identities.VISITOR)
    node = typed_node(raw_id, kind)
    if request.method == "POST":
        checked(ActionForm())
        removed = services().identity.erase(node)
        return render_template("console/erased.html", raw_id=raw_id, removed=removed)
    return render_template("console/erase.html", raw_id=raw_id, kind=kind, form=ActionForm())


# --- API keys -----------------------------------------------------------------------------


@bp.route("/keys", methods=["GET", "POST"])
def keys() -> ResponseReturnValue:
    """Every key without its secret; create one (shown once)."""
    admin_only()
    app_services = services()
    created = None
    errors: dict[str, str] = {}
    if request.method == "POST":
        checked(ActionForm())
        role = request.form.get("role", "")
        name = request.form.get("name", "").strip()
        if role not in KEY_ROLES:
            errors["role"] = f"one of {', '.join(KEY_ROLES)}"
        if len(name) > MAX_NAME or not name.isprintable():
            errors["name"] = f"at most {MAX_NAME} printable characters"
        if not errors:
            created = app_services.key_admin.create(role, name, g.principal.name)
    listed = sorted(app_services.api_keys.list(), key=lambda k: -(k.created_at or 0))
    return render_template("console/keys.html", keys=listed, created=created, errors=errors,
                           roles=KEY_ROLES, form=ActionForm(), key_id=key_id,
                           max_name=MAX_NAME), 400 if errors else 200


def key_id(digest: str) -> str:
    """A key's id in console URLs: the start of its digest (display prefixes can repeat)."""
    return digest[:KEY_ID_CHARS]


@bp.route("/keys/<ident>/revoke", methods=["GET", "POST"])
def revoke_key(ident: str) -> ResponseReturnValue:
    """Confirm, then revoke a key (it stops working within the key cache interval)."""
    admin_only()
    app_services = services()
    matches = [k for k in app_services.api_keys.list() if key_id(k.digest) == ident]
    info = matches[0] if len(matches) == 1 else None
    if info is None:
        raise NotFound("no such key", {"key": "unknown prefix"})
    if request.method == "POST":
        checked(ActionForm())
        app_services.key_admin.revoke(info, g.principal.name)
        return redirect(url_for("console.keys"))
    return render_template("console/revoke.html", info=info, form=ActionForm(),
                           mine=info.digest == g.principal.digest,
                           cache=app_services.settings.api_key_cache_seconds)


# --- audit log ----------------------------------------------------------------------------


@bp.get("/audit")
def audit() -> ResponseReturnValue:
    """Every recorded change, newest first."""
    before = request.args.get("before") or None
    if before is not None:
        load(schemas.AuditQuerySchema(), {"before": before})
    page = services().audit.page(AUDIT_PAGE, before)
    return render_template("console/audit.html", page=page)
