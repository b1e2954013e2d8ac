"""The reference for bench/decide_bench.py: a bare Flask hello-world that answers JSON."""

from flask import Flask, jsonify


def make_app() -> Flask:
    """A Flask app with one JSON route, served by the same gunicorn settings as centric."""
    app = Flask(__name__)

    @app.post("/")
    @app.get("/")
    def hello():  # type: ignore[no-untyped-def]
        return jsonify(hello="world")

    return app
