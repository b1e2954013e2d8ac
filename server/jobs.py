"""Background jobs of `centric serve`: the daily customer-value fit and the moment sweep.

They run in one process of their own next to the gunicorn workers, so a fit never takes CPU
time or the GIL from a worker serving decide. Every host runs this process; a Redis lock per
job lets one host at a time do the work, and the time it last finished, kept in Redis, tells
every host when it is due again.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from server.errors import CentricError
from server.services.refresh import FIT, SWEEP, JobBusy
from server.settings import Settings

if TYPE_CHECKING:
    from server.app import Services

log = logging.getLogger("centric")
POLL_SECONDS = 10.0  # how often the process asks whether a job is due (and its parent lives)


class Jobs:
    """Runs each background job when it is due, on one host at a time."""

    def __init__(self, services: Services, settings: Settings,
                 clock: Callable[[], float] = time.time) -> None:
        self.refresh = services.refresh
        self.settings = settings
        self.clock = clock

    def _due(self, job: str, every_seconds: float) -> bool:
        if every_seconds <= 0:
            return False
        last = self.refresh.jobs.last_run_ms(job)
        return last is None or self.clock() * 1000 - last >= every_seconds * 1000

    def run_due(self, force: bool = False) -> list[str]:
        """Run every job that is due now (every job with ``force``); return those run here."""
        ran = []
        s = self.settings
        for job, every, run in ((FIT, s.clv_refit_hours * 3600, self.refresh.fit),
                                (SWEEP, s.moment_sweep_minutes * 60, self.refresh.sweep)):
            if not (force or self._due(job, every)):
                continue
            try:
                run()
            except JobBusy:
                continue  # another host runs it
            except CentricError as error:  # too few customers yet: again when next due
                log.info("%s job: %s", job, error.message)
            ran.append(job)
        return ran


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
