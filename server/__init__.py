"""The centric HTTP server: Flask app, Redis stores and services."""

from server.app import create_app

__all__ = ["create_app"]
