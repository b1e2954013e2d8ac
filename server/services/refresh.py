"""The customer-value fit and the moment sweep, each run by one host at a time.

Both the HTTP endpoints and the background jobs go through here, under the same Redis locks:
two sweeps that overlapped could apply an older read after a newer one and put a customer who
just left back into a moment.
"""

from __future__ import annotations

from server.errors import Conflict
from server.services.customer_value import CustomerValueService
from server.services.moments import MomentService, SweepResult
from server.stores.customer_value import ModelRecord
from server.stores.jobs import JobStore

FIT, SWEEP = "clv", "sweep"  # the job names (their locks and last-run times)


class JobBusy(Conflict):
    """Another host runs the job now."""


class RefreshService:
    """Fit and sweep under their locks."""

    def __init__(self, jobs: JobStore, values: CustomerValueService,
                 moments: MomentService) -> None:
        self.jobs = jobs
        self.values = values
        self.moments = moments

    def fit(self) -> ModelRecord:
        """Fit the model, score every known customer, then move the moments along."""
        fitted: list[ModelRecord] = []

        def work() -> None:
            fitted.append(self.values.fit())
            # Members follow the new predictions at once, unless a sweep runs already (it
            # reads them as it goes; the next one catches up).
            self.jobs.run_locked(SWEEP, self.moments.sweep)

        if not self.jobs.run_locked(FIT, work):
            raise JobBusy("a customer-value fit is running already; retry when it is done",
                          {"model": "fitting"})
        return fitted[0]

    def sweep(self) -> SweepResult:
        """Bring predictions and every moment's members up to date."""
        swept: list[SweepResult] = []
        if not self.jobs.run_locked(SWEEP, lambda: swept.append(self.moments.sweep())):
            raise JobBusy("a moment sweep is running already; retry when it is done",
                          {"moments": "sweeping"})
        return swept[0]
