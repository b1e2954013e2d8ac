"""The web console at /console/: product owners run experiments, analysts read reports.

Server-rendered Jinja pages over the same services the HTTP API uses. Signing in with an
admin or viewer key opens a server-side session (Flask-Session, in Redis), whose cookie is
signed with a secret kept in Redis, so it survives restarts and works on every worker and
host; forms carry Flask-WTF's CSRF token.
"""
