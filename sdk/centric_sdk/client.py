"""The centric client: decide (with a safe fallback), identify, and non-blocking track."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from centric_sdk.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequest,
    TransportError,
)
from centric_sdk.transport import Response, Transport, UrllibTransport

log = logging.getLogger("centric_sdk")


@dataclass(frozen=True, slots=True)
class Decision:
    """The variant chosen for one experiment."""

    experiment: str
    variant: str
    payload: Any = None
    reason: str = "fallback"
    decision_id: str | None = None
    propensity: float | None = None


@dataclass(frozen=True, slots=True)
class Decisions:
    """The answer to decide(): look decisions up by experiment key."""

    visitor_id: str
    persona: str | None
    items: tuple[Decision, ...] = ()
    fallback: bool = False
    defaults: Mapping[str, str] = field(default_factory=dict)

    def get(self, experiment: str) -> Decision | None:
        """The decision for an experiment, or None when the server gave none."""
        return next((d for d in self.items if d.experiment == experiment), None)

    def variant(self, experiment: str, default: str | None = None) -> str:
        """The variant to show; the default (else the configured one, else 'control')."""
        d = self.get(experiment)
        if d is not None:
            return d.variant
        return default or self.defaults.get(experiment, "control")

    def payload(self, experiment: str, default: Any = None) -> Any:
        """The variant's content payload, or `default`."""
        d = self.get(experiment)
        return d.payload if d is not None and d.payload is not None else default

    def reason(self, experiment: str) -> str:
        """Why this variant: assigned, sticky, holdout, winner, not_targeted, ... fallback."""
        d = self.get(experiment)
        return d.reason if d is not None else ("fallback" if self.fallback else "not_targeted")


@dataclass
class _Event:
    body: dict[str, Any]
    attempts: int = 0


class Client:
    """A small, thread-safe centric client; use it as a context manager or call close()."""

    def __init__(
        self,
        base_url: str,
        sdk_key: str,
        *,
        timeout: float = 0.3,
        transport: Transport | None = None,
        raise_errors: bool = False,
        defaults: Mapping[str, str] | None = None,
        queue_size: int = 10_000,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_retries: int = 8,
        backoff: float = 0.25,
        max_backoff: float = 30.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"base_url must be http(s)://host[:port], got {base_url!r}")
        if not sdk_key:
            raise ConfigurationError("sdk_key is required")
        if timeout <= 0 or batch_size < 1 or batch_size > 500 or queue_size < 1:
            raise ConfigurationError("timeout > 0, 1 <= batch_size <= 500, queue_size >= 1")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.transport: Transport = transport or UrllibTransport()
        self.raise_errors = raise_errors
        self.defaults = dict(defaults or {})
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._headers = {"Authorization": f"Bearer {sdk_key}",
                         "Content-Type": "application/json", "User-Agent": "centric-sdk-py/0.1"}
        self._queue: queue.Queue[_Event] = queue.Queue(maxsize=queue_size)
        self._pending = 0
        self._pending_lock = threading.Condition()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self.dropped = 0  # events refused because the queue was full or the server rejected them

    # -- the request path -------------------------------------------------------------

    def decide(
        self,
        visitor_id: str,
        *,
        channel: str = "web",
        experiments: Sequence[str] | None = None,
        attributes: Mapping[str, Any] | None = None,
        persona: str | None = None,
        defaults: Mapping[str, str] | None = None,
    ) -> Decisions:
        """Variants for a visitor, with a safe fallback.

        On timeout, connection error, 5xx or 429: each experiment's default (else 'control')
        with reason 'fallback' — never an exception, unless raise_errors=True or the call
        itself is invalid (InvalidRequest).
        """
        _require_id(visitor_id)
        body: dict[str, Any] = {"visitor_id": visitor_id, "channel": channel}
        if experiments is not None:
            body["experiments"] = list(experiments)
        if attributes:
            body["attributes"] = dict(attributes)
        if persona:
            body["persona"] = persona
        fallback_defaults = {**self.defaults, **(defaults or {})}
        try:
            data = self._call("/v1/decide", body)
        except TransportError:
            if self.raise_errors:
                raise
            items = tuple(Decision(e, fallback_defaults.get(e, "control"))
                          for e in (experiments or ()))
            return Decisions(visitor_id, None, items, fallback=True, defaults=fallback_defaults)
        items = tuple(
            Decision(d["experiment"], d["variant"], d.get("payload"), d.get("reason", ""),
                     d.get("decision_id"), d.get("propensity"))
            for d in data.get("decisions", [])
        )
        return Decisions(data.get("visitor_id", visitor_id), data.get("persona"), items,
                         defaults=fallback_defaults)

    def identify(self, visitor_id: str, ids: Mapping[str, str],
                 attributes: Mapping[str, Any] | None = None) -> str:
        """Link first-party ids (e.g. customer_id on login); return the canonical id.

        On a transport failure the visitor_id comes back unchanged (or TransportError with
        raise_errors=True).
        """
        _require_id(visitor_id)
        if not ids:
            raise ConfigurationError("ids must name at least one id, e.g. {'customer_id': '42'}")
        body: dict[str, Any] = {"visitor_id": visitor_id, "ids": dict(ids)}
        if attributes:
            body["attributes"] = dict(attributes)
        try:
            return str(self._call("/v1/identify", body)["visitor_id"])
        except TransportError:
            if self.raise_errors:
                raise
            return visitor_id

    def track(self, visitor_id: str, metric: str, value: float | None = None, *,
              event_id: str | None = None, timestamp: float | None = None) -> str:
        """Queue an outcome and return at once.

        A background thread sends it in batches, retrying with backoff; the event id
        (generated if not given) makes retries safe.
        """
        _require_id(visitor_id)
        if not metric:
            raise ConfigurationError("metric is required")
        event_id = event_id or uuid.uuid4().hex
        body: dict[str, Any] = {"visitor_id": visitor_id, "metric": metric,
                                "event_id": event_id,
                                "timestamp": time.time() if timestamp is None else timestamp}
        if value is not None:
            body["value"] = float(value)
        self._ensure_worker()
        with self._pending_lock:
            try:
                self._queue.put_nowait(_Event(body))
                self._pending += 1
            except queue.Full:
                self.dropped += 1
                log.warning("centric track queue is full; event %s dropped", event_id)
        return event_id

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was sent (or given up); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._pending_lock:
            while self._pending > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._pending_lock.wait(remaining if remaining is not None else 0.5)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Send what is queued (up to `timeout` seconds), then stop the background thread."""
        self.flush(timeout)
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=5)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _call(self, path: str, body: dict[str, Any], timeout: float | None = None) -> Any:
        raw = json.dumps(body, separators=(",", ":")).encode()
        try:
            response = self.transport.send("POST", self.base_url + path, self._headers, raw,
                                           timeout or self.timeout)
        except OSError as error:
            raise TransportError(f"{path}: {error!r}") from error
        return _parse(path, response)

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            with self._worker_lock:
                if self._worker is None or not self._worker.is_alive():
                    self._stop.clear()
                    self._worker = threading.Thread(target=self._run, name="centric-track",
                                                    daemon=True)
                    self._worker.start()

    def _run(self) -> None:
        retry: list[_Event] = []
        while not (self._stop.is_set() and not retry and self._queue.empty()):
            batch = retry
            retry = []
            try:
                if not batch:
                    batch.append(self._queue.get(timeout=self.flush_interval))
            except queue.Empty:
                continue
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            retry = self._send(batch)
            if retry:
                attempt = max(e.attempts for e in retry)
                # Exponential backoff with a cap; sleeping wakes early on close().
                self._stop.wait(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))

    def _send(self, batch: list[_Event]) -> list[_Event]:
        """Send one batch; return the events to try again."""
        try:
            self._call("/v1/track", {"events": [e.body for e in batch]},
                       timeout=max(self.timeout, 2.0))
        except TransportError as error:
            keep = []
            for e in batch:
                e.attempts += 1
                if e.attempts <= self.max_retries:
                    keep.append(e)
                else:
                    self._done(1, dropped=True)
                    log.error("centric gave up on event %s: %s", e.body["event_id"], error)
            return keep
        except InvalidRequest as error:
            # A malformed event would fail forever: drop the batch and say so loudly.
            log.error("centric refused %d events: %s", len(batch), error)
            self._done(len(batch), dropped=True)
            return []
        self._done(len(batch))
        return []

    def _done(self, n: int, dropped: bool = False) -> None:
        with self._pending_lock:
            self._pending -= n
            if dropped:
                self.dropped += n
            self._pending_lock.notify_all()


def _require_id(visitor_id: str) -> None:
    if not isinstance(visitor_id, str) or not visitor_id:
        raise ConfigurationError("visitor_id must be a non-empty string")


def _parse(path: str, response: Response) -> Any:
    status = response.status
    if status >= 500 or status == 429:
        raise TransportError(f"{path}: HTTP {status}", status)
    try:
        data = json.loads(response.body or b"{}")
    except ValueError as error:
        raise TransportError(f"{path}: HTTP {status} with a body that is not JSON",
                             status) from error
    if status >= 400:
        err = data.get("error", {}) if isinstance(data, dict) else {}
        kind = AuthenticationError if status in (401, 403) else InvalidRequest
        raise kind(status, err.get("code", "error"), err.get("message", ""),
                   err.get("fields", {}))
    return data
