"""A per-request time budget that every Redis reply on the decision path must fit in.

A socket timeout alone bounds each reply, not the request: an API-key check, a refresh of
the per-worker snapshot and the decide script could each take almost the whole budget. The
connections of the decision path's client therefore read the request's deadline and give
each reply only the time that is left, so the whole decide answers within the budget.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection

_deadline: ContextVar[float | None] = ContextVar("centric_deadline", default=None)


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Run a block whose Redis calls (on deadline connections) must finish within `seconds`."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


@contextmanager
def extended(seconds: float) -> Iterator[None]:
    """Allow the block at least `seconds` from now, even past the current budget."""
    current = _deadline.get()
    later = time.monotonic() + seconds
    token = _deadline.set(later if current is None else max(current, later))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left in the current budget, or None outside of one."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


class _DeadlineMixin:
    """Caps each reply's wait at the time left in the request's budget."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Send, unless the budget is already spent."""
        left = remaining()
        if left is not None and left <= 0:
            raise redis.TimeoutError("the decide budget is spent")
        super().send_packed_command(command, check_health)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        """Read a reply, waiting at most the time left in the budget."""
        left = remaining()
        if left is not None and "timeout" not in kwargs:
            if left <= 0:
                self.disconnect()  # type: ignore[attr-defined]  # the reply is still due
                raise redis.TimeoutError("the decide budget is spent")
            # Inside a budget the time left is the timeout (it may exceed the socket's own
            # when a block was extended); outside of one the socket timeout applies.
            kwargs["timeout"] = left
        return super().read_response(*args, **kwargs)  # type: ignore[misc]


class DeadlineConnection(_DeadlineMixin, redis.Connection):
    """TCP connection bounded by the request's budget."""


class DeadlineSSLConnection(_DeadlineMixin, SSLConnection):
    """TLS connection bounded by the request's budget."""


class DeadlineUnixConnection(_DeadlineMixin, UnixDomainSocketConnection):
    """Unix-socket connection bounded by the request's budget."""


def connection_class(url: str) -> type[redis.Connection] | type[UnixDomainSocketConnection]:
    """The deadline-aware connection class for a Redis URL's scheme."""
    if url.startswith("unix://"):
        return DeadlineUnixConnection
    if url.startswith("rediss://"):
        return DeadlineSSLConnection
    return DeadlineConnection
