"""Console sessions: Flask-Session's Redis sessions, for console paths only."""

from __future__ import annotations

import secrets
import warnings
from datetime import timedelta
from typing import Any

import redis
from flask import Flask, Request
from flask.sessions import SessionMixin
from flask_session.redis import RedisSessionInterface
from redis.exceptions import RedisError

from server.keys import Keyspace

PREFIX = "/console"
# A session nobody signed in with (the sign-in form's CSRF token) lives this long only, so
# loading the sign-in page again and again cannot fill Redis for hours.
ANONYMOUS_SECONDS = 600


class ConsoleSessions(RedisSessionInterface):
    """Server-side sessions signed with a secret kept in Redis, opened on console paths only.

    Only console pages read a session: every other request (decide above all) stays one
    Redis round trip even when a browser sends the console's cookie along.
    """

    def __init__(self, app: Flask, client: redis.Redis, keys: Keyspace) -> None:
        # Flask-Session 0.8 deprecates signing (its ids are 256-bit random already); the
        # signature still ties every cookie to this deployment's secret, so it stays on,
        # and the dependency is pinned below 0.9.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            # It also takes a RedisCluster for a stray localhost client (not a Redis
            # subclass): the store's own client replaces it below, before any use.
            warnings.simplefilter("ignore", RuntimeWarning)
            super().__init__(app, client=client, key_prefix=keys.console_sessions,
                             use_signer=True, permanent=True, serialization_format="json")
        self.client = client
        self._secret_key = keys.console_secret

    def _ensure_secret(self, app: Flask) -> None:
        # Made once for the whole deployment (SET NX), read by every worker on first use:
        # nothing talks to Redis when the app is built.
        if not app.secret_key:
            self.client.set(self._secret_key, secrets.token_urlsafe(48), nx=True)
            app.secret_key = self.client.get(self._secret_key)

    def open_session(self, app: Flask, request: Request) -> Any:
        """The console session of a console request; None (a null session) elsewhere.

        With Redis unreachable it is an empty session marked ``unavailable``: the session
        is opened before any view or error handler runs, so a failure here could only be a
        bare 500; the console's guard answers 503 for it instead.
        """
        if not request.path.startswith(PREFIX):
            return None
        try:
            self._ensure_secret(app)
            return super().open_session(app, request)
        except RedisError:
            session = self.session_class(sid=self._generate_sid(self.sid_length))
            session.unavailable = True  # type: ignore[attr-defined]
            return session

    def save_session(self, app: Flask, session: SessionMixin, response: Any) -> None:
        """Store the session of a console request (other requests have none)."""
        from flask import request

        if request.path.startswith(PREFIX) and not getattr(session, "unavailable", False):
            try:
                super().save_session(app, session, response)
            except RedisError:
                # The answer (a 503 or the page) stands; the session change is lost with
                # the store, as a sign-in during an outage would be anyway.
                app.logger.warning("console session not saved: the data store is unreachable")

    def _upsert_session(self, session_lifetime: Any, session: Any, store_id: str) -> None:
        if "digest" not in session:
            session_lifetime = timedelta(seconds=ANONYMOUS_SECONDS)
        super()._upsert_session(session_lifetime, session, store_id)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure over HTTPS, also behind a TLS-terminating proxy that says so."""
        from flask import request

        forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
        return request.is_secure or forwarded.lower() == "https"
