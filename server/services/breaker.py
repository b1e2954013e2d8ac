"""A circuit breaker: after a store failure, skip the store for a short cool-down."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Breaker:
    """Open (skip the store) for a cool-down after `failures` failures in a row, then retry.

    With `max_cooldown` above `cooldown` the cool-down doubles with every failure in a row
    (up to that), so during a long outage a worker waits on a dead store's timeout only once
    per `max_cooldown`, not once per `cooldown`.
    """

    def __init__(self, cooldown: float, monotonic: Callable[[], float] = time.monotonic,
                 max_cooldown: float | None = None, failures: int = 1):
        self.cooldown = cooldown
        self.max_cooldown = max(max_cooldown or cooldown, cooldown)
        self.monotonic = monotonic
        self.failures = max(failures, 1)
        self._until = 0.0
        self._next = cooldown
        self._in_a_row = 0

    @property
    def open(self) -> bool:
        """True while calls should not even try the store."""
        return self.monotonic() < self._until

    @property
    def retry_after(self) -> int:
        """Whole seconds until the store is tried again (at least 1), for Retry-After."""
        return max(1, math.ceil(self._until - self.monotonic()))

    def failed(self) -> None:
        """Record a failure: open the breaker (for longer if failures keep coming)."""
        self._in_a_row += 1
        if self._in_a_row < self.failures:
            return
        self._until = self.monotonic() + self._next
        self._next = min(self._next * 2, self.max_cooldown)

    def succeeded(self) -> None:
        """Record a success: close the breaker."""
        self._until = 0.0
        self._next = self.cooldown
        self._in_a_row = 0
