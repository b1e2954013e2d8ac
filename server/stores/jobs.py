"""Locks and last-run times of background jobs, shared by every host.

Formats owned here: the lock string at ``{P:cfg}:job:<name>`` (a random token, with a TTL)
and the last-finished time at ``{P:cfg}:job:<name>:at`` (ms).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable

import redis

from server.keys import Keyspace
from server.scripts import Scripts

# A lock lives this long unless its holder renews it, which it does every third of it while
# the job runs: a fit of millions of customers keeps its lock, and a host that dies frees it
# within two minutes.
LOCK_MS = 120_000


class JobStore:
    """One host at a time runs a job; every host sees when it last finished."""

    def __init__(self, client: redis.Redis, keys: Keyspace, scripts: Scripts,
                 clock: Callable[[], float], lock_ms: int = LOCK_MS) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.clock = clock
        self.lock_ms = lock_ms

    def last_run_ms(self, job: str) -> int | None:
        """When the job last finished, on any host (None: never)."""
        raw = self.client.get(self.keys.job_ran(job))
        return int(raw) if raw is not None else None

    def held(self, job: str) -> bool:
        """True while some host runs the job."""
        return bool(self.client.exists(self.keys.job_lock(job)))

    def run_locked(self, job: str, work: Callable[[], object]) -> bool:
        """Run ``work`` under the job's lock; False (nothing run) when another holds it."""
        token = secrets.token_hex(8)
        lock = self.keys.job_lock(job)
        if not self.client.set(lock, token, nx=True, px=self.lock_ms):
            return False
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.lock_ms / 3000):
                self.scripts.renew_lock(keys=[lock], args=[token, self.lock_ms])

        heartbeat = threading.Thread(target=renew, name=f"lock-{job}", daemon=True)
        heartbeat.start()
        try:
            work()
        finally:
            done.set()
            heartbeat.join()
            # A failed run counts as a run: it is retried when next due, not in a tight loop.
            self.client.set(self.keys.job_ran(job), int(self.clock() * 1000))
            self.scripts.unlock(keys=[lock], args=[token])
        return True
