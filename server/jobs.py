"""Background jobs of `centric serve`: the daily customer-value fit and the moment sweep.

They run in one process of their own next to the gunicorn workers, so a fit never takes CPU
time or the GIL from a worker serving decide. Every host runs this process; a Redis lock per
job lets one host at a time do the work, and the time it last finished, kept in Redis, tells
every host when it is due again.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from server.errors import CentricError
from server.settings import Settings

log = logging.getLogger("centric")
LOCK_MS = 30 * 60_000  # a job that dies holding the lock frees it after this long
POLL_SECONDS = 10.0  # how often the process asks whether a job is due (and its parent lives)


class Jobs:
    """Runs each background job when it is due, on one host at a time."""

    def __init__(self, services: Any, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.services = services
        self.settings = settings
        self.clock = clock

    def _due(self, job: str, every_seconds: float) -> bool:
        if every_seconds <= 0:
            return False
        last = self.services.redis.get(self.services.keys.job_ran(job))
        return last is None or self.clock() * 1000 - int(last) >= every_seconds * 1000

    def _locked(self, job: str, work: Callable[[], object]) -> bool:
        """Run ``work`` under the job's lock; False when another host holds it."""
        keys, client = self.services.keys, self.services.redis
        token = secrets.token_hex(8)
        if not client.set(keys.job_lock(job), token, nx=True, px=LOCK_MS):
            return False
        try:
            work()
        finally:
            client.set(keys.job_ran(job), int(self.clock() * 1000))
            self.services.scripts.unlock(keys=[keys.job_lock(job)], args=[token])
        return True

    def run_due(self) -> list[str]:
        """Run every job that is due now; return the names of those this host ran."""
        ran = []
        s = self.settings
        # The fit scores every customer, and the sweep after it moves the moments along.
        if self._due("clv", s.clv_refit_hours * 3600) and self._locked("clv", self._fit):
            ran.append("clv")
        if self._due("sweep", s.moment_sweep_minutes * 60) and self._locked(
                "sweep", self.services.moments.sweep):
            ran.append("sweep")
        return ran

    def _fit(self) -> None:
        try:
            self.services.customer_value.fit()
        except CentricError as error:  # too few customers yet: try again when next due
            log.info("customer-value fit skipped: %s", error.message)


def main(settings: Settings) -> None:
    """The jobs process: run due jobs until the server stops (SIGTERM) or its parent dies."""
    parent = os.getppid()
    from server.app import build_services
    from server.observability import configure_logging

    configure_logging(settings.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches gunicorn, which stops us
    jobs = Jobs(build_services(settings), settings)
    log.info("background jobs started: customer-value fit every %s h, moment sweep every "
             "%s min", settings.clv_refit_hours, settings.moment_sweep_minutes)
    # A server killed outright cannot stop us: leave when it is gone.
    while not stop.is_set() and os.getppid() == parent:
        try:
            jobs.run_due()
        except (RedisError, CentricError) as error:
            log.warning("background job failed, retried when next due: %s", error)
        except Exception:  # a bug in one run must not end every later one
            log.exception("background job failed")
        stop.wait(POLL_SECONDS)


if __name__ == "__main__":
    main(Settings.from_env())
