"""The circuit breaker opens after failures in a row, backs off, and closes on a success."""

from __future__ import annotations

from server.services.breaker import Breaker


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_breaker_opens_only_after_its_failures_in_a_row():
    clock = Clock()
    breaker = Breaker(1.0, monotonic=clock, failures=3)
    breaker.failed()
    breaker.failed()
    assert not breaker.open  # two slow answers on a busy host are not an outage
    breaker.succeeded()
    breaker.failed()
    breaker.failed()
    assert not breaker.open  # the success started the count again
    breaker.failed()
    assert breaker.open and breaker.retry_after == 1
    clock.now += 1.01
    assert not breaker.open  # the cool-down is over: the next call tries the store
    breaker.failed()
    assert breaker.open  # still failing: open again at once, without three more tries
    breaker.succeeded()
    assert not breaker.open


def test_the_cool_down_doubles_while_failures_continue():
    clock = Clock()
    breaker = Breaker(1.0, monotonic=clock, max_cooldown=4.0)
    for expected in (1, 2, 4, 4):
        breaker.failed()
        assert breaker.retry_after == expected
        clock.now += expected + 0.01
    breaker.succeeded()
    breaker.failed()
    assert breaker.retry_after == 1
