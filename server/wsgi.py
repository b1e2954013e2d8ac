"""WSGI entry point for gunicorn: ``gunicorn 'server.wsgi:make_app()'``.

Settings come from CENTRIC_* variables; the app is built when gunicorn calls the factory,
not at import time. With no CENTRIC_REDIS_URL the app expects the embedded Redis of
CENTRIC_DATA_DIR to be running (``centric serve`` starts it).
"""

from flask import Flask

from server.app import create_app
from server.settings import Settings


def make_app() -> Flask:
    """Build the app from the environment."""
    return create_app(Settings.from_env())
