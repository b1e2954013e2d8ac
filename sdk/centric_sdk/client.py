"""The centric client: decide (with a safe fallback), identify, and non-blocking track/expose."""

from __future__ import annotations

import json
import logging
import math
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from centric_sdk.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidRequest,
    TransportError,
)
from centric_sdk.transport import Response, Transport, UrllibTransport

log = logging.getLogger("centric_sdk")

_TRACK = "/v1/track"
_EXPOSE = "/v1/expose"
_ID_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: Reasons of decisions that were actually served and so count once exposed.
EXPOSABLE_REASONS = frozenset({"assigned", "holdout", "sticky"})
_EXPOSE_CHUNK = 50  # the server takes 1-50 decisions per expose call


@dataclass(frozen=True, slots=True)
class Decision:
    """The variant chosen for one experiment."""

    experiment: str
    variant: str
    payload: Any = None
    reason: str = "fallback"
    decision_id: str | None = None
    propensity: float | None = None
    pending: bool | None = None  # True while the server waits for a confirmation (expose)


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
        """The server's variant; without a real decision `default`, else the configured one."""
        d = self.get(experiment)
        if d is not None and d.reason != "fallback":
            return d.variant
        # No decision, or a fallback: from this SDK (which holds the configured default) or
        # from the server when its store failed (which holds the experiment's control).
        if default is not None:
            return default
        return d.variant if d is not None else self.defaults.get(experiment, "control")

    def payload(self, experiment: str, default: Any = None) -> Any:
        """The variant's content payload, or `default`."""
        d = self.get(experiment)
        return d.payload if d is not None and d.payload is not None else default

    def reason(self, experiment: str) -> str:
        """Why this variant: assigned, sticky, holdout, winner, not_targeted, ... fallback."""
        d = self.get(experiment)
        return d.reason if d is not None else ("fallback" if self.fallback else "not_targeted")


@dataclass(frozen=True, slots=True)
class MomentPage:
    """One page of a moment's members (each a dict: customer_id, entry_id, decision, ...)."""

    moment: str
    members: tuple[dict[str, Any], ...]
    next_cursor: str  # where the next page starts; keep it to get only later entries
    has_more: bool
    count: int  # the moment's members now, over all pages


@dataclass
class _Item:
    """One queued request body: a track event or an expose call."""

    path: str
    body: dict[str, Any]
    created: float  # the client's monotonic clock when queued
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
        max_retry_after: float = 120.0,
    ) -> None:
        """Configure a client; `sdk_key` is any API key (a server key `cbk_...` for backends)."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"base_url must be http(s)://host[:port], got {base_url!r}")
        if not sdk_key:
            raise ConfigurationError("an API key is required (server key cbk_... or csk_...)")
        if timeout <= 0 or batch_size < 1 or batch_size > 500 or queue_size < 1:
            raise ConfigurationError("timeout > 0, 1 <= batch_size <= 500, queue_size >= 1")
        if max_retries < 0 or backoff < 0 or max_backoff < 0 or max_retry_after < 0:
            raise ConfigurationError("max_retries, backoff, max_backoff, max_retry_after >= 0")
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
        self.max_retry_after = max_retry_after
        self._headers = {"Authorization": f"Bearer {sdk_key}",
                         "Content-Type": "application/json", "User-Agent": "centric-sdk-py/0.2"}
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        self._pending = 0
        self._pending_lock = threading.Condition()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        # Seams for tests: the clock that ages events and the pause between retries.
        self._monotonic: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], object] = self._stop.wait
        self.dropped = 0  # queued events/exposures refused by the server, given up or not queued

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
        id_type: str | None = None,
        expose: bool = True,
    ) -> Decisions:
        """Variants for a visitor (of `id_type`, default visitor_id), with a safe fallback.

        On a timeout, connection error or any non-2xx answer (4xx included) it logs a warning
        and returns each experiment's default (else 'control') with reason 'fallback';
        with raise_errors=True it raises InvalidRequest (4xx) or TransportError instead.
        `expose=False` stores the assignments without counting them: call expose() later.
        """
        _require_id(visitor_id)
        body: dict[str, Any] = {"visitor_id": visitor_id, "channel": channel}
        _add_id_type(body, id_type)
        if experiments is not None:
            body["experiments"] = list(experiments)
        if attributes:
            body["attributes"] = dict(attributes)
        if persona:
            body["persona"] = persona
        if not expose:
            body["expose"] = False
        fallback_defaults = {**self.defaults, **(defaults or {})}
        try:
            data = self._call("/v1/decide", body)
            items = _read_decisions(data)
        except (InvalidRequest, TransportError) as error:
            if self.raise_errors:
                raise
            log.warning("centric decide for %r falls back to defaults: %s", visitor_id, error)
            items = tuple(Decision(e, fallback_defaults.get(e, "control"))
                          for e in dict.fromkeys(experiments or ()))
            return Decisions(visitor_id, None, items, fallback=True, defaults=fallback_defaults)
        return Decisions(str(data.get("visitor_id", visitor_id)), data.get("persona"), items,
                         defaults=fallback_defaults)

    def identify(self, visitor_id: str, ids: Mapping[str, str],
                 attributes: Mapping[str, Any] | None = None, *,
                 signature: str | None = None, signature_expires: int | None = None,
                 id_type: str | None = None) -> str:
        """Link first-party ids (e.g. customer_id on login); return the id to keep using.

        4xx answers raise InvalidRequest (AuthenticationError for 401/403, e.g. a missing
        `signature` with an sdk key). On a transport failure the visitor_id comes back
        unchanged, or TransportError is raised with raise_errors=True.
        """
        _require_id(visitor_id)
        if not ids:
            raise ConfigurationError("ids must name at least one id, e.g. {'customer_id': '42'}")
        body: dict[str, Any] = {"visitor_id": visitor_id, "ids": dict(ids)}
        _add_id_type(body, id_type)
        if attributes:
            body["attributes"] = dict(attributes)
        if signature is not None:
            body["signature"] = signature
        if signature_expires is not None:
            body["signature_expires"] = int(signature_expires)
        try:
            return str(self._call("/v1/identify", body)["visitor_id"])
        except (TransportError, KeyError) as error:
            if self.raise_errors:
                if isinstance(error, TransportError):
                    raise
                raise TransportError("/v1/identify: answer without visitor_id") from error
            log.warning("centric identify for %r failed: %s", visitor_id, error)
            return visitor_id

    def track(self, visitor_id: str, metric: str, value: float | None = None, *,
              event_id: str | None = None, timestamp: float | None = None,
              id_type: str | None = None) -> str:
        """Queue an outcome and return its event id at once.

        A background thread sends it in batches, retrying with backoff; the event id
        (generated if not given) makes retries safe. Without `timestamp` (epoch seconds) the
        event carries its `age` at send time, so the host's wall clock does not matter.
        """
        _require_id(visitor_id)
        if not isinstance(metric, str) or not metric:
            raise ConfigurationError("metric must be a non-empty string")
        if event_id is not None and (not isinstance(event_id, str) or not event_id):
            raise ConfigurationError("event_id must be a non-empty string")
        event_id = event_id or uuid.uuid4().hex
        body: dict[str, Any] = {"visitor_id": visitor_id, "metric": metric,
                                "event_id": event_id}
        _add_id_type(body, id_type)
        if timestamp is not None:
            body["timestamp"] = _finite("timestamp", timestamp)
        if value is not None:
            body["value"] = _finite("value", value)
        self._enqueue(_TRACK, body)
        return event_id

    def expose(self, visitor_id: str,
               decisions: Decisions | Iterable[Decision | tuple[str, str]], *,
               id_type: str | None = None) -> int:
        """Queue confirmation that decisions made with expose=False were shown; return the count.

        Decisions that need no confirmation (fallback, winner, not_targeted, not_running, or
        without a decision id) are left out; (experiment, decision_id) pairs are sent as given.
        Sent in the background like track(); the server counts each decision once.
        """
        _require_id(visitor_id)
        pairs: dict[tuple[str, str], None] = {}
        for item in decisions.items if isinstance(decisions, Decisions) else decisions:
            if isinstance(item, Decision):
                # Only what the server still waits for: a sticky decision confirmed earlier
                # says pending=False (older servers send no flag: confirm by reason).
                if item.decision_id and item.reason in EXPOSABLE_REASONS \
                        and item.pending is not False:
                    pairs[(item.experiment, item.decision_id)] = None
            else:
                experiment, decision_id = item
                if not isinstance(experiment, str) or not isinstance(decision_id, str) \
                        or not experiment or not decision_id:
                    raise ConfigurationError("expose pairs are (experiment, decision_id)")
                pairs[(experiment, decision_id)] = None
        chosen = list(pairs)
        queued = 0
        for start in range(0, len(chosen), _EXPOSE_CHUNK):
            chunk = chosen[start:start + _EXPOSE_CHUNK]
            body: dict[str, Any] = {"visitor_id": visitor_id}
            _add_id_type(body, id_type)
            body["decisions"] = [{"experiment": e, "decision_id": d} for e, d in chunk]
            if self._enqueue(_EXPOSE, body):
                queued += len(chunk)
        return queued

    def moment_members(self, moment: str, *, cursor: str = "0", limit: int = 100,
                       timeout: float | None = None) -> MomentPage:
        """One page of the customers in a moment after `cursor` (a server or admin key).

        Every member comes with the message decided for it (sticky, so a retried page gets
        the same). A back-end job wants to know when this fails: it raises InvalidRequest or
        TransportError instead of falling back.
        """
        query = urlencode({"cursor": cursor, "limit": limit})
        path = f"/v1/moments/{quote(moment, safe='')}/members"
        try:
            response = self.transport.send("GET", f"{self.base_url}{path}?{query}",
                                           self._headers, None, timeout or self.timeout)
        except Exception as error:  # whatever a transport raises means "no answer"
            raise TransportError(f"{path}: {error!r}") from error
        data = _parse(path, response)
        try:
            return MomentPage(str(data["moment"]), tuple(data["members"]),
                              str(data["next_cursor"]), bool(data["has_more"]),
                              int(data["count"]))
        except (KeyError, TypeError, ValueError) as error:
            raise TransportError(f"{path}: an answer without a member page: {error!r}",
                                 response.status) from error

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued was sent (or given up); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._pending_lock:
            while self._pending > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._pending_lock.wait(remaining if remaining is not None else 0.5)
        return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Send what is queued (up to `timeout` seconds), then stop the background thread.

        What still fails after that gets one last try and is then given up (and counted).
        """
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
        try:
            raw = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"{path}: the call's values are not JSON: {error}") from error
        try:
            response = self.transport.send("POST", self.base_url + path, self._headers, raw,
                                           timeout or self.timeout)
        except Exception as error:  # whatever a transport raises means "no answer"
            raise TransportError(f"{path}: {error!r}") from error
        return _parse(path, response)

    def _enqueue(self, path: str, body: dict[str, Any]) -> bool:
        self._ensure_worker()
        with self._pending_lock:
            try:
                self._queue.put_nowait(_Item(path, body, self._monotonic()))
                self._pending += 1
                return True
            except queue.Full:
                self.dropped += 1
                log.warning("centric queue is full; %s %s dropped", path, _describe(body))
                return False

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            with self._worker_lock:
                if self._worker is None or not self._worker.is_alive():
                    self._stop.clear()
                    self._worker = threading.Thread(target=self._run, name="centric-track",
                                                    daemon=True)
                    self._worker.start()

    def _run(self) -> None:
        retry: list[_Item] = []
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
            stopping = self._stop.is_set()
            retry, delay = self._send(batch)
            if retry and stopping:
                # close() already waited: give up rather than keep a closing process alive.
                self._give_up(retry + self._drain(), "the client is closing")
                retry = []
            elif retry:
                # Backoff or the server's Retry-After; sleeping wakes early on close().
                self._sleep(delay)

    def _send(self, batch: list[_Item]) -> tuple[list[_Item], float]:
        """Send one batch; return the items to try again and how long to wait first."""
        # Queue order is kept: an exposure confirmation goes out before the purchases queued
        # after it (else they would reach an assignment that is not confirmed yet).
        # Consecutive events share one request.
        groups: list[list[_Item]] = []
        for item in batch:
            if item.path == _TRACK and groups and groups[-1][0].path == _TRACK:
                groups[-1].append(item)
            else:
                groups.append([item])
        for n, group in enumerate(groups):
            try:
                self._deliver(group)
            except TransportError as error:
                keep = []
                for item in group:
                    item.attempts += 1
                    if item.attempts <= self.max_retries:
                        keep.append(item)
                    else:
                        self._give_up([item], str(error))
                attempts = max(i.attempts for i in group)
                untried = [i for rest in groups[n + 1:] for i in rest]
                return keep + untried, self._retry_delay(attempts, error.retry_after)
        return [], 0.0

    def _deliver(self, group: list[_Item]) -> None:
        """Send one request for the group; raise TransportError when it is worth retrying."""
        path = group[0].path
        if path == _TRACK:
            body: dict[str, Any] = {"events": [self._event_body(i) for i in group]}
        else:
            body = group[0].body
        try:
            data = self._call(path, body, timeout=max(self.timeout, 2.0))
        except InvalidRequest as error:
            # A refused request would fail forever: drop it and say so loudly.
            log.error("centric refused %d %s items: %s", len(group), path, error)
            self._done(len(group), dropped=len(group))
            return
        rejected = _rejected_indexes(data, len(group)) if path == _TRACK else {}
        for index, fields in rejected.items():
            log.error("centric refused event %s: %s", group[index].body.get("event_id"), fields)
        self._done(len(group), dropped=len(rejected))

    def _event_body(self, item: _Item) -> dict[str, Any]:
        if "timestamp" in item.body:
            return item.body
        age = max(0.0, self._monotonic() - item.created)
        return {**item.body, "age": round(age, 3)}

    def _retry_delay(self, attempts: int, retry_after: float | None) -> float:
        """Exponential backoff (capped), but never less than the server's Retry-After (capped)."""
        delay = min(self.backoff * 2 ** max(attempts - 1, 0), self.max_backoff)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def _drain(self) -> list[_Item]:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _give_up(self, items: list[_Item], why: str) -> None:
        for item in items:
            log.error("centric gave up on %s %s: %s", item.path, _describe(item.body), why)
        self._done(len(items), dropped=len(items))

    def _done(self, n: int, dropped: int = 0) -> None:
        with self._pending_lock:
            self._pending -= n
            self.dropped += dropped
            self._pending_lock.notify_all()


def _require_id(visitor_id: str) -> None:
    if not isinstance(visitor_id, str) or not visitor_id:
        raise ConfigurationError("visitor_id must be a non-empty string")


def _finite(name: str, number: Any) -> float:
    """The number as a float (Decimal and numeric strings too); ConfigurationError otherwise."""
    try:
        as_float = float(number)
    except (TypeError, ValueError):
        as_float = float("nan")
    if isinstance(number, bool) or not math.isfinite(as_float):
        raise ConfigurationError(f"{name} must be a finite number, got {number!r}")
    return as_float


def _add_id_type(body: dict[str, Any], id_type: str | None) -> None:
    if id_type is None:
        return
    if not isinstance(id_type, str) or not _ID_TYPE.fullmatch(id_type):
        raise ConfigurationError(f"id_type must match [a-z][a-z0-9_]{{0,31}}, got {id_type!r}")
    body["id_type"] = id_type


def _describe(body: dict[str, Any]) -> str:
    return str(body.get("event_id") or body.get("decisions") or "")


def _read_decisions(data: Any) -> tuple[Decision, ...]:
    """The decisions of a 2xx decide answer; TransportError when it is not one."""
    try:
        return tuple(
            Decision(str(d["experiment"]), str(d["variant"]), d.get("payload"),
                     str(d.get("reason", "")), d.get("decision_id"), d.get("propensity"),
                     d.get("pending"))
            for d in data.get("decisions", [])
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise TransportError(f"/v1/decide: malformed answer ({error!r})") from error


def _rejected_indexes(data: Any, n: int) -> dict[int, Any]:
    """Index -> why, for the events of a partially accepted batch (`rejected` in a 200)."""
    rejected = data.get("rejected") if isinstance(data, dict) else None
    out: dict[int, Any] = {}
    for entry in rejected if isinstance(rejected, list) else ():
        index = entry.get("index") if isinstance(entry, dict) else None
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < n:
            out[index] = entry.get("fields", {})
    return out


def _header(headers: Mapping[str, str], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), None when absent or invalid."""
    value = _header(headers, "Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return max(0.0, seconds) if not math.isnan(seconds) else None


def _parse(path: str, response: Response) -> Any:
    status = response.status
    if 400 <= status < 500 and status != 429:
        try:
            data = json.loads(response.body or b"{}")
        except ValueError:
            data = None
        err = data.get("error") if isinstance(data, dict) else None
        err = err if isinstance(err, dict) else {}
        fields = err.get("fields")
        kind = AuthenticationError if status in (401, 403) else InvalidRequest
        raise kind(status, str(err.get("code", "error")), str(err.get("message", "")),
                   fields if isinstance(fields, dict) else {})
    if not 200 <= status < 300:
        raise TransportError(f"{path}: HTTP {status}", status, _retry_after(response.headers))
    try:
        data = json.loads(response.body or b"{}")
    except ValueError as error:
        raise TransportError(f"{path}: HTTP {status} with a body that is not JSON",
                             status) from error
    if not isinstance(data, dict):
        raise TransportError(f"{path}: HTTP {status} with a body that is not a JSON object",
                             status)
    return data
