"""OPTIONS and CORS: browsers on configured origins may call the SDK endpoints; admin ones never.

OPTIONS on any route answers 204 with ``Allow`` listing its methods, before any key check (a
preflight never carries credentials); unknown paths answer the 404 envelope. CORS headers are
added only on SDK paths and only for allowed origins.
"""

from __future__ import annotations

from flask import Flask, Response, current_app, request

SDK_PATHS = frozenset({"/v1/decide", "/v1/track", "/v1/identify", "/v1/expose"})


def install_cors(app: Flask, origins: str) -> None:
    """Answer OPTIONS uniformly and add CORS headers on SDK endpoints for the allowed origins."""
    allowed = {o.strip().rstrip("/") for o in origins.split(",") if o.strip()}
    flask_options = app.make_default_options_response

    def options_response() -> Response:
        # Flask's own answer (Allow: every method of every rule of the path) but 204: an
        # OPTIONS answer has no content.
        response = flask_options()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response

    # Flask answers OPTIONS itself with this method (the documented override point).
    app.make_default_options_response = options_response  # type: ignore[method-assign]

    def answer_options() -> Response | None:
        rule = request.url_rule
        if request.method == "OPTIONS" and getattr(rule, "provide_automatic_options", False):
            return current_app.make_default_options_response()
        return None

    # Blueprint hooks (the admin key check) run after the app's own (request id, timing) and
    # would refuse an OPTIONS request before Flask answers it: answer first in each blueprint.
    for name in app.blueprints:
        app.before_request_funcs.setdefault(name, []).insert(0, answer_options)

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if not origin or request.path not in SDK_PATHS:
            return response
        if "*" in allowed or origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Expose-Headers"] = "Retry-After, X-Request-ID"
            response.headers["Access-Control-Max-Age"] = "600"
        response.vary.add("Origin")
        return response
