"""A circuit breaker: after a store failure, skip the store for a short cool-down."""

from __future__ import annotations

import time
from collections.abc import Callable


class Breaker:
    """Open (skip the store) for `cooldown` seconds after each failure, then try again."""

    def __init__(self, cooldown: float, monotonic: Callable[[], float] = time.monotonic):
        self.cooldown = cooldown
        self.monotonic = monotonic
        self._until = 0.0

    @property
    def open(self) -> bool:
        """True while calls should not even try the store."""
        return self.monotonic() < self._until

    def failed(self) -> None:
        """Record a failure: open the breaker."""
        self._until = self.monotonic() + self.cooldown

    def succeeded(self) -> None:
        """Record a success: close the breaker."""
        self._until = 0.0
