"""Console pages: sign-in, the experiments list, the report and the lifecycle actions."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from experiments.codec import to_dict
from server.console import editor
from server.console.forms import ActionForm, ShipForm, SignInForm
from server.console.sessions import ConsoleSessions
from server.errors import (
    CentricError,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    StoreUnavailable,
    Unauthorized,
)
from server.keys import hash_api_key
from server.schemas import EXPERIMENT_KEY, ExperimentSchema
from server.views.io import load

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static")

# The console's own policy: its scripts, styles and images come from centric itself only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SIGN_IN_AGE = 24 * 3600.0  # seconds a sign-in lasts at most, however active the session
OPEN_PAGES = frozenset({"console.sign_in", "console.static"})
HISTORY = 10  # audit entries on an experiment's report page


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is signed in: the key's role and name (never the key)."""

    role: str
    name: str
    digest: str

    @property
    def can_change(self) -> bool:
        """Admins change things; viewers only read."""
        return self.role == "admin"


def services() -> Any:
    """The app's services (what the HTTP API's views use too)."""
    return current_app.extensions["centric"]


def admin_only() -> None:
    """Refuse a viewer: only admins change things."""
    if not g.principal.can_change:
        raise Forbidden("viewer keys may not change experiments",
                        {"authorization": "needs an admin key"})


def checked(form: Any) -> None:
    """Refuse a submitted form whose CSRF token (or a required field) is missing or wrong."""
    if not form.validate_on_submit():
        raise Forbidden("the form expired or is incomplete; reload the page",
                        {"csrf_token": "missing or invalid"})


def _signed_in() -> Principal | None:
    """The session's principal, if its key still works and the sign-in is recent enough."""
    digest = session.get("digest")
    if not isinstance(digest, str):
        return None
    if time.time() - float(session.get("at", 0)) > SIGN_IN_AGE:
        session.clear()
        return None
    try:
        role = services().auth.require_digest(digest, "read")
    except (Unauthorized, Forbidden):
        session.clear()  # revoked (or demoted) since: the session dies with the key
        return None
    return Principal(role, str(session.get("name", "")), digest)


@bp.before_request
def _guard() -> ResponseReturnValue | None:
    if getattr(session, "unavailable", False) and request.endpoint != "console.static":
        raise StoreUnavailable("the data store is unavailable, retry in a moment")
    if request.endpoint in OPEN_PAGES:
        return None
    key = (request.view_args or {}).get("key")
    if key is not None and not EXPERIMENT_KEY.match(key):
        # As in the API: an odd name is unknown, and never reaches Redis.
        raise NotFound("no such experiment", {"key": "unknown experiment"})
    principal = _signed_in()
    if principal is None:
        if request.method == "GET":
            return redirect(url_for("console.sign_in", next=request.full_path))
        raise Unauthorized("sign in to the console first", {"session": "missing or expired"})
    g.principal = principal
    return None


@bp.context_processor
def _page_context() -> dict[str, Any]:
    # Every page's header has the sign-out form, which needs its CSRF token.
    return {"sign_out_form": ActionForm() if g.get("principal") else None}


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    return response


@bp.errorhandler(CentricError)
def _error(exc: CentricError) -> ResponseReturnValue:
    # Pages answer in HTML for people; the status and the message stay the API's.
    headers = {"Retry-After": str(exc.retry_after)} if exc.status in (429, 503) else {}
    return render_template("console/error.html", error=exc), exc.status, headers


def _safe_next(target: str | None) -> str:
    """Only a plain console path: never an open redirect, never a header break."""
    if (target and target.startswith("/console/") and target.isprintable()
            and "\\" not in target and ".." not in target):
        return target
    return url_for("console.experiments")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> ResponseReturnValue:
    """The sign-in form; a valid admin or viewer key opens a session."""
    form = SignInForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        digest = hash_api_key(str(form.key.data).strip())
        role = services().auth.role_of(digest)
        if role in ("admin", "viewer"):
            session.clear()
            session.update(digest=digest, role=role, at=time.time(),
                           name=services().auth.actor_of_digest(digest))
            # A new session id for the signed-in session (after the update: Flask-Session
            # leaves an empty session's id as it is), so that an id planted before the
            # sign-in is worth nothing.
            current_app.session_interface.regenerate(session)  # type: ignore[attr-defined]
            return redirect(_safe_next(form.next.data))
        refusal = ("unknown key" if role is None else
                   f"{role} keys cannot sign in: use an admin or viewer key")
        form.key.errors = [*form.key.errors, refusal]
        return render_template("console/sign_in.html", form=form), 401
    return render_template("console/sign_in.html", form=form), 400 if form.errors else 200


@bp.post("/sign-out")
def sign_out() -> ResponseReturnValue:
    """End the session (its server-side record goes too)."""
    checked(ActionForm())
    session.clear()
    return redirect(url_for("console.sign_in"))


def _summary(experiment: Any) -> dict[str, Any]:
    """What the list shows of one experiment: traffic (holdout included), leader, verdict."""
    overview = services().reports.overview(experiment.key, time.time())
    variants = overview["report"]["variants"]
    leader = max((v for v in variants if v["chance_to_be_best"] is not None),
                 key=lambda v: v["chance_to_be_best"], default=None)
    return {"exposures": overview["exposures"], "today": overview["today"], "leader": leader,
            "verdict": overview["report"]["verdict"]}


@bp.get("/")
def experiments() -> ResponseReturnValue:
    """Every experiment with its status, traffic and leader; filter by status, search."""
    status = request.args.get("status", "")
    query = request.args.get("q", "").strip().lower()
    rows = []
    for e in sorted(services().experiments.list(), key=lambda e: e.key):
        if status and e.status.value != status:
            continue
        if query and query not in e.key.lower() and query not in e.name.lower():
            continue
        rows.append({"experiment": e, **_summary(e)})
    return render_template("console/experiments.html", rows=rows, status=status,
                           query=request.args.get("q", ""),
                           statuses=("draft", "running", "paused", "stopped"))


@bp.get("/experiments/<key>")
def report(key: str) -> ResponseReturnValue:
    """The analyst's page: verdict, variants, plots, segments, health checks."""
    app_services = services()
    experiment = app_services.experiments.get(key)
    history = app_services.audit.page(HISTORY, None, ("experiment", key)).entries
    return render_template("console/report.html", e=experiment,
                           r=app_services.reports.report(key),
                           refresh=experiment.status.value == "running",
                           actions=_actions(experiment.status.value), form=ActionForm(),
                           history=history)


@bp.get("/experiments/<key>/report.csv")
def report_csv(key: str) -> ResponseReturnValue:
    """The report's variant table as CSV."""
    return Response(services().reports.csv(key), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{key}.csv"'})


@bp.get("/experiments/<key>/plots/<name>.svg")
def plot(key: str, name: str) -> ResponseReturnValue:
    """A report figure, drawn by matplotlib on the server."""
    persona, channel = request.args.get("persona"), request.args.get("channel")
    svg = services().reports.plot(key, name, "svg", persona, channel)
    return Response(svg, mimetype="image/svg+xml")


def _actions(status: str) -> list[str]:
    """The lifecycle actions an experiment in this status offers."""
    return {"draft": ["start"], "running": ["pause", "stop", "ship"],
            "paused": ["start", "stop", "ship"]}.get(status, [])


def _consequence(action: str, experiment: Any, winner: str | None = None) -> str:
    """What visitors will see from then on, in words."""
    control = experiment.control
    return {
        "start": "Visitors in the audience will be assigned a variant and the experiment "
                 "starts learning from their outcomes.",
        "pause": f"Everyone will see the control '{control}'; visitors keep their assignments "
                 "and outcomes still count for them, but nobody new is assigned.",
        "stop": f"Everyone will see the control '{control}'; the experiment stops learning "
                "and cannot be started again.",
        "ship": f"Everyone will see '{winner}'; the experiment stops learning and cannot be "
                "started again." if winner else "Everyone will see the variant you choose; "
                "the experiment stops learning and cannot be started again.",
    }[action]


@bp.route("/experiments/<key>/<any(start, pause, stop, ship):action>", methods=["GET", "POST"])
def lifecycle(key: str, action: str) -> ResponseReturnValue:
    """Confirm, then start, pause, stop or ship (admins only)."""
    admin_only()
    app_services = services()
    experiment = app_services.experiments.get(key)
    form: ActionForm | ShipForm = ShipForm() if action == "ship" else ActionForm()
    if isinstance(form, ShipForm):
        form.winner.choices = [(k, k) for k in experiment.variant_keys]
    if request.method == "POST":
        checked(form)
        winner = form.winner.data if isinstance(form, ShipForm) else None
        app_services.experiments.transition(key, "stop" if action == "ship" else action,
                                            g.principal.name, winner)
        return redirect(url_for("console.report", key=key))
    return render_template("console/confirm.html", e=experiment, action=action, form=form,
                           consequence=_consequence(action, experiment))


NONE = "\u2013"  # an en dash stands for "no figure"


def _editor_page(values: dict[str, str], errors: dict[str, str], mode: str, key: str = "",
                 message: str = "", status: int = 200) -> ResponseReturnValue:
    return render_template("console/editor.html", values=values, errors=errors, mode=mode,
                           key=key, message=message, form=ActionForm(),
                           rows=editor.variant_rows(values)), status


def _save(mode: str, key: str = "") -> ResponseReturnValue:
    """Turn the submitted form into an API body; create or replace, or show the errors."""
    form = ActionForm()
    values = {k: v for k, v in request.form.items() if k != "csrf_token"}
    checked(form)
    body, errors, rows = editor.body_from_form(request.form)
    if errors:
        return _editor_page(values, editor.row_errors(errors, rows), mode, key,
                            "Fix the fields marked below.", 400)
    service = services().experiments
    try:
        definition = load(ExperimentSchema(), body)
        if mode == "edit":
            saved = service.replace(key, definition, g.principal.name)
        else:
            saved = service.create(definition, g.principal.name)
    except InvalidInput as exc:
        return _editor_page(values, editor.row_errors(exc.fields, rows), mode, key,
                            "Fix the fields marked below.", exc.status)
    except Conflict as exc:
        locked = [name for name in exc.fields if name != "status"]
        message = exc.message
        if locked:
            message = (f"This experiment is running, so its {', '.join(locked)} cannot change: "
                       "its counters and its verdict would mix two experiments. Pause it "
                       "first, then save, or duplicate it and start the copy.")
        return _editor_page(values, dict(exc.fields), mode, key, message, exc.status)
    return redirect(url_for("console.report", key=saved.key))


@bp.route("/experiments/new", methods=["GET", "POST"])
def new_experiment() -> ResponseReturnValue:
    """Create an experiment (a draft) from the form."""
    admin_only()
    if request.method == "POST":
        return _save("new")
    # The API's defaults, shown so that nothing is hidden.
    return _editor_page({"mode": "bandit", "metric-name": "purchase", "metric-kind": "conversion",
                         "variants-0-key": "control", "control": "control", "coverage": "1",
                         "holdout": "0", "attribution_window_hours": "168",
                         "bandit-prior-alpha": "1", "bandit-prior-beta": "1",
                         "bandit-floor": "0.01"}, {}, "new")


@bp.route("/experiments/<key>/edit", methods=["GET", "POST"])
def edit_experiment(key: str) -> ResponseReturnValue:
    """Change an experiment's definition."""
    admin_only()
    if request.method == "POST":
        return _save("edit", key)
    definition = to_dict(services().experiments.get(key))
    return _editor_page(editor.form_from_definition(definition), {}, "edit", key)


@bp.get("/experiments/<key>/duplicate")
def duplicate_experiment(key: str) -> ResponseReturnValue:
    """A new draft prefilled with an experiment's definition (saved under a new key)."""
    admin_only()
    values = editor.form_from_definition(to_dict(services().experiments.get(key)))
    values["key"] = f"{key}-copy"[:64]
    values["name"] = f"{values['name']} (copy)"[:200]
    return _editor_page(values, {}, "new")


def _pct(value: float | None) -> str:
    return NONE if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _when(ms_or_s: float | None) -> str:
    """A timestamp (epoch seconds, or milliseconds) as UTC text."""
    if ms_or_s is None:
        return NONE
    seconds = ms_or_s / 1000 if ms_or_s > 1e11 else ms_or_s
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def install(app: Flask) -> None:
    """Mount the console at /console/ and send a browser opening / there."""
    app_services = app.extensions["centric"]
    app.config.update(
        SESSION_COOKIE_NAME="centric_console", SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True,
        PERMANENT_SESSION_LIFETIME=app_services.settings.console_session_hours * 3600,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    app.session_interface = ConsoleSessions(app, app_services.redis, app_services.keys)
    app.jinja_env.filters["pct"] = _pct
    app.jinja_env.filters["num"] = _num
    app.jinja_env.filters["when"] = _when
    from server.console import people  # noqa: F401 - its pages join the blueprint

    app.register_blueprint(bp)

    @app.get("/")
    def root() -> ResponseReturnValue:
        return redirect("/console/")
