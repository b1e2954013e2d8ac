"""WSGI entry point for gunicorn: ``gunicorn 'server.wsgi:make_app()'``.

Settings come from CENTRIC_* variables; the app is built when gunicorn calls the factory,
not at import time. With no CENTRIC_REDIS_URL the app expects the embedded Redis of
CENTRIC_DATA_DIR to be running (``centric serve`` starts it).
"""

import gc

from flask import Flask

from server.app import create_app
from server.observability import configure_logging
from server.settings import Settings


def make_app() -> Flask:
    """Build the app from the environment, with centric's JSON logs on stderr."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    app = create_app(settings)
    # What the app built lives as long as the worker: keep it out of the collector's scans,
    # which otherwise walk every module, schema and route on each full collection (about
    # 60 ms of a 12,000-cell report).
    gc.freeze()
    return app
