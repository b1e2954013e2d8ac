"""Prometheus metrics and structured (JSON) request logs with a request id.

Under gunicorn every worker has its own counters; `centric serve` points
PROMETHEUS_MULTIPROC_DIR at a directory in the data dir so that /metrics adds up all
workers (prometheus_client's multiprocess mode). Without it, a process reports its own.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from functools import cache
from types import SimpleNamespace
from typing import Any

from flask import Flask, Response, g, request


@cache
def metrics() -> SimpleNamespace:
    """The metric objects, created on first use.

    prometheus_client decides at import whether it runs in multiprocess mode, so it is
    imported here, in the worker, after `centric serve` has set PROMETHEUS_MULTIPROC_DIR.
    """
    from prometheus_client import Counter, Histogram

    return SimpleNamespace(
        requests=Counter("centric_requests_total", "HTTP requests",
                         ["endpoint", "method", "status"]),
        latency=Histogram("centric_request_duration_seconds", "Time to answer a request",
                          ["endpoint"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                 0.25, 0.5, 1, 2.5)),
        decisions=Counter("centric_decisions_total", "Decisions served, by reason",
                          ["reason"]),
        redis_errors=Counter("centric_redis_errors_total", "Redis failures seen", ["path"]),
        events=Counter("centric_events_total", "Outcome events, by result", ["result"]),
    )


access_log = logging.getLogger("centric.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any extra fields."""

    fields = ("request_id", "method", "path", "status", "duration_ms", "endpoint")

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        data: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.fields:
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)


def configure_logging(level: str) -> None:
    """JSON logs on stderr for the centric loggers."""
    # Every request logs a line, so skip what the lines never show: the caller's file and
    # line (a stack walk per record), thread and multiprocessing names. The process id
    # stays: gunicorn's own log lines print it.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("centric", "centric.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def install(app: Flask, access_logs: bool) -> None:
    """Request ids, per-endpoint metrics and access logs; the /metrics endpoint."""

    @app.before_request
    def _start() -> None:
        g.request_id = (request.headers.get("X-Request-ID") or "")[:64] or uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        m = metrics()
        # Label values come from a fixed set: made-up methods must not create new series.
        method = request.method if request.method in KNOWN_METHODS else "other"
        m.requests.labels(endpoint, method, str(response.status_code)).inc()
        m.latency.labels(endpoint).observe(elapsed)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if access_logs:
            access_log.info("request", extra={
                "request_id": g.get("request_id"), "method": request.method[:16],
                "path": request.path, "endpoint": endpoint, "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 2)})
        return response

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        """Prometheus metrics (all gunicorn workers when PROMETHEUS_MULTIPROC_DIR is set)."""
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            generate_latest,
            multiprocess,
        )

        metrics()  # the families exist even before the first request of this worker
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
