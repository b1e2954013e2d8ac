"""The Flask application factory."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from flask import Flask, Response, request

from server import embedded, identify_secret, observability
from server.cors import install_cors
from server.errors import (
    SECURITY_HEADERS,
    StoreUnavailable,
    envelope,
    register_error_handlers,
)
from server.keys import Keyspace
from server.redis_client import connect
from server.scripts import Scripts
from server.services.api_keys import ApiKeyService
from server.services.auth import Authenticator
from server.services.breaker import Breaker
from server.services.catalog import Catalog
from server.services.customer_value import CustomerValueService
from server.services.decisions import DecisionService
from server.services.experiments import ExperimentService
from server.services.identity import IdentityService
from server.services.moments import MomentService
from server.services.outcomes import OutcomeService
from server.services.personas import PersonaService
from server.services.refresh import RefreshService
from server.services.reports import ReportService
from server.settings import Settings
from server.stores.api_keys import ApiKeyStore
from server.stores.audit import AuditLog
from server.stores.counters import CounterStore
from server.stores.customer_value import CustomerValueStore
from server.stores.experiments import ExperimentStore
from server.stores.identity import IdentityStore
from server.stores.jobs import JobStore
from server.stores.moments import MomentStore
from server.stores.personas import PersonaStore
from server.stores.visitors import Limits, VisitorStore

DAY = 86400.0
MAX_URL_BYTES = 8192
STORE_MAX_COOLDOWN = 8.0  # seconds: how long a worker stops trying a store that keeps failing
DECIDE_FAILURES_TO_OPEN = 3  # failures in a row that open the decision path's breaker

# Endpoints that never wait on the general Redis client: decide has a breaker of its own.
STORELESS = frozenset({"api.decide", "health.healthz", "health.openapi", "prometheus_metrics"})


class UrlLimit:
    """Refuse over-long URLs before routing, with the JSON error envelope (414).

    Routing a megabyte of path costs the worker real time, and no endpoint takes more than a
    few hundred bytes of URL.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        size = len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", ""))
        if size <= MAX_URL_BYTES:
            return self.app(environ, start_response)
        body = json.dumps(envelope("uri_too_long",
                                   f"the URL is longer than {MAX_URL_BYTES} bytes",
                                   {"url": "too long"})).encode()
        start_response("414 URI Too Long", [("Content-Type", "application/json"),
                                            ("Content-Length", str(len(body))),
                                            *SECURITY_HEADERS])
        return [body]


@dataclass(frozen=True)
class Services:
    """Everything the views use, kept in app.extensions["centric"]."""

    settings: Settings
    redis: redis.Redis
    keys: Keyspace
    api_keys: ApiKeyStore
    key_admin: ApiKeyService  # audited key changes; no HTTP endpoint manages keys (yet)
    audit: AuditLog
    auth: Authenticator
    catalog: Catalog
    counters: CounterStore
    experiments: ExperimentService
    decisions: DecisionService
    outcomes: OutcomeService
    reports: ReportService
    identity: IdentityService
    personas: PersonaService
    customer_value: CustomerValueService
    moments: MomentService
    refresh: RefreshService  # the fit and the sweep, one host at a time
    store_breaker: Breaker  # the general client's: track, identify, expose, admin


def build_services(
    settings: Settings,
    client: redis.Redis | None = None,
    clock: Callable[[], float] = time.time,
    rng: np.random.Generator | None = None,
) -> Services:
    """Wire stores and services; nothing here talks to Redis yet."""
    budget = settings.decide_budget_ms / 1000
    if client is None:
        url = settings.redis_url or embedded.socket_url(settings.data_dir)
        client = connect(url, settings)
        # The decision path has its own client: every Redis call within the decide budget.
        fast = connect(url, settings, timeout=budget)
    else:
        fast = client  # an injected client (tests) serves every path
    # A generator per process: gunicorn workers build their own app after the fork.
    rng = rng if rng is not None else np.random.default_rng()
    keys = Keyspace(settings.key_prefix)
    scripts = Scripts(client)
    audit = AuditLog(client, keys, settings.audit_maxlen)
    experiment_store = ExperimentStore(client, keys, scripts, audit)
    counters = CounterStore(client, keys)
    ttl = settings.anonymous_ttl_days * DAY
    limits = Limits(
        ttl_ms=int(ttl * 1000),
        dedupe_ms=int(settings.dedupe_window_days * DAY * 1000),
        epoch_ms=int(settings.epoch_seconds * 1000),
        log_maxlen=settings.log_maxlen,
        max_attributes=settings.max_profile_attributes,
        purchase_metric=settings.purchase_metric,
        refund_metric=settings.refund_metric,
        max_channels=settings.max_profile_channels,
    )
    visitors = VisitorStore(client, keys, scripts, limits)
    fast_scripts = Scripts(fast) if fast is not client else scripts
    fast_visitors = VisitorStore(fast, keys, fast_scripts, limits, patience=budget)
    personas = PersonaStore(client, keys, scripts, audit)
    # Definitions are refreshed on the decision path, so they are read with the fast client;
    # posteriors are refreshed off it, and read with the general one.
    catalog = Catalog(ExperimentStore(fast, keys, fast_scripts), counters,
                      PersonaStore(fast, keys, fast_scripts), rng, settings.refresh_interval,
                      max_segments=settings.max_segments, clock=clock,
                      posterior_interval=settings.posterior_interval,
                      background=settings.posterior_background)
    api_keys = ApiKeyStore(client, keys)
    experiments = ExperimentService(experiment_store, catalog, clock, rng,
                                    settings.purchase_metric)
    # One breaker for the whole decision path: after a failure neither the key check nor
    # the decision waits on Redis again until the cool-down has passed.
    # It opens after a few failures in a row, not one: on a busy host a single decide may
    # overrun its budget while Redis is fine, and one breaker trip would send a whole
    # cool-down of decisions to the control. A dead Redis still trips it within 3 budgets.
    breaker = Breaker(settings.outage_cooldown, failures=DECIDE_FAILURES_TO_OPEN)
    store_breaker = Breaker(settings.outage_cooldown, max_cooldown=STORE_MAX_COOLDOWN)
    values = CustomerValueStore(client, keys, scripts)
    moment_store = MomentStore(client, keys, scripts)

    def forget(nodes: list[str]) -> None:
        values.forget(nodes)
        moment_store.forget(nodes)

    # Moment members get their message through the general client's decision path: a back-end
    # job can wait for Redis, and a fallback there would send everyone the control.
    member_decisions = DecisionService(catalog, visitors, rng, clock)
    customer_value = CustomerValueService(values, clock)
    moments = MomentService(moment_store, values, personas, experiments, member_decisions,
                            audit, clock)
    return Services(
        settings=settings,
        redis=client,
        keys=keys,
        api_keys=api_keys,
        key_admin=ApiKeyService(api_keys, audit, clock),
        audit=audit,
        auth=Authenticator(api_keys, settings.api_key_cache_seconds,
                           rate=settings.sdk_rate_limit, burst=settings.sdk_rate_burst,
                           fast_store=ApiKeyStore(fast, keys), breaker=breaker,
                           stale_seconds=settings.api_key_stale_seconds,
                           store_breaker=store_breaker),
        catalog=catalog,
        counters=counters,
        experiments=experiments,
        decisions=DecisionService(
            catalog, fast_visitors, rng, clock, breaker,
            channels=frozenset(c.strip() for c in settings.channels.split(",") if c.strip())),
        outcomes=OutcomeService(catalog, visitors, clock, settings.clock_skew_seconds),
        reports=ReportService(experiments, counters, settings.epoch_seconds,
                              settings.max_segments),
        identity=IdentityService(
            IdentityStore(client, keys, scripts, settings.max_profile_attributes,
                          settings.max_profile_channels, max(limits.dedupe_ms, limits.ttl_ms)),
            clock, ttl, settings.max_profile_attributes,
            secret=identify_secret.load(settings.identify_secret, settings.data_dir),
            max_linked_ids=settings.max_linked_ids, forget=forget,
            became_known=lambda node: values.sync_buyer(node, int(clock() * 1000))),
        personas=PersonaService(personas, catalog, clock),
        customer_value=customer_value,
        moments=moments,
        refresh=RefreshService(JobStore(client, keys, scripts, clock), customer_value, moments),
        store_breaker=store_breaker,
    )


def create_app(
    settings: Settings | None = None,
    *,
    redis_client: redis.Redis | None = None,
    clock: Callable[[], float] = time.time,
    rng: np.random.Generator | None = None,
) -> Flask:
    """Build the centric WSGI app; time and randomness are injectable for tests."""
    settings = settings or Settings()
    app = Flask("centric", static_folder=None)  # no /static route: nothing is served from disk
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # '//v1//decide' is a 404 like any unknown path, not a redirect with an HTML body.
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["centric"] = build_services(settings, redis_client, clock, rng)

    from server.console import views as console
    from server.views import api, audit, customers, experiments, health, identity

    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(identity.bp)
    app.register_blueprint(experiments.bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(customers.bp)
    console.install(app)
    register_error_handlers(app)
    install_cors(app, settings.cors_origins)
    observability.install(app, settings.access_log)
    services = app.extensions["centric"]

    def uses_store() -> bool:
        return (request.method != "OPTIONS" and request.endpoint is not None
                and request.endpoint not in STORELESS)

    @app.before_request
    def _skip_a_dead_store() -> None:
        # After Redis failed, answer 503 at once for a while: a sync worker that waits a
        # full timeout on a dead store also keeps every decide queued behind it waiting.
        if uses_store() and request.endpoint != "health.readyz" and services.store_breaker.open:
            raise StoreUnavailable("the data store is unavailable, retry later",
                                   retry_after=services.store_breaker.retry_after)

    @app.after_request
    def _store_answered(response: Response) -> Response:
        # Only an answer that needed Redis proves it is back (a 4xx may never have asked it).
        if uses_store() and 200 <= response.status_code < 300:
            services.store_breaker.succeeded()
        return response


    app.wsgi_app = UrlLimit(app.wsgi_app)  # type: ignore[method-assign]

    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS:
            response.headers.setdefault(name, value)
        return response

    return app
