"""CORS: browsers on configured origins may call the SDK endpoints; admin ones never."""

from __future__ import annotations

from flask import Flask, Response, request

SDK_PATHS = frozenset({"/v1/decide", "/v1/track", "/v1/identify"})


def install_cors(app: Flask, origins: str) -> None:
    """Answer preflights and add CORS headers on SDK endpoints for the allowed origins."""
    allowed = {o.strip().rstrip("/") for o in origins.split(",") if o.strip()}

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if not origin or request.path not in SDK_PATHS:
            return response
        if "*" in allowed or origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Max-Age"] = "600"
        response.vary.add("Origin")
        return response
