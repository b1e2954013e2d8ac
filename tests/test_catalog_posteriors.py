"""Bandit posteriors are refreshed off the decision path, and never block or break a decide."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import redis

from server import create_app
from server.services.catalog import Catalog
from server.stores.counters import CounterStore
from tests.support import decide, experiment_body, start_experiment


class GatedCounters(CounterStore):
    """The real counter store, whose reads wait until the test opens the gate."""

    def __init__(self, store: CounterStore) -> None:
        super().__init__(store.client, store.keys)
        self.gate = threading.Event()
        self.reads = 0
        self.fail: Exception | None = None

    def read_many(self, experiments):  # type: ignore[no-untyped-def]
        self.reads += 1
        assert self.gate.wait(10), "the test never opened the gate"
        if self.fail is not None:
            raise self.fail
        return super().read_many(experiments)


def _background_catalog(app, counters: CounterStore,  # type: ignore[no-untyped-def]
                        posterior_interval: float = 0.0) -> Catalog:
    old = app.extensions["centric"].catalog
    return Catalog(old._experiments, counters, old._personas, np.random.default_rng(4),
                   interval=0.0, posterior_interval=posterior_interval, background=True)


def _wait_for_fit(catalog: Catalog) -> None:
    for thread in threading.enumerate():
        if thread.name == "centric-posteriors":
            thread.join(10)


def test_a_due_posterior_refresh_does_not_hold_up_the_snapshot(app, client, admin, sdk):
    start_experiment(client, admin, variants=[{"key": "control"}, {"key": "b"}])
    for i in range(200):  # b converts every time, the control never
        variant = decide(client, sdk, f"v{i}")["decisions"][0]["variant"]
        if variant == "b":
            client.post("/v1/track", json={"visitor_id": f"v{i}", "metric": "purchase",
                                           "event_id": f"e{i}"}, headers=sdk)
    services = app.extensions["centric"]
    counters = GatedCounters(services.counters)
    catalog = _background_catalog(app, counters)

    snapshot = catalog.snapshot()  # returns while the counter read is still waiting
    hero = snapshot.experiments["hero"]
    before = catalog.allocation(snapshot, hero, "default", "web")
    assert counters.reads == 1
    assert np.allclose(before, 0.5, atol=0.05)  # the prior: nothing fitted yet
    catalog.snapshot()  # a refresh under way is not started twice
    counters.gate.set()
    _wait_for_fit(catalog)
    assert counters.reads == 1

    after = catalog.allocation(catalog.snapshot(), hero, "default", "web")
    assert after[1] > 0.95  # the fit has landed: b is served almost always


@pytest.mark.parametrize("failure", [redis.ConnectionError("the store went away"),
                                     ValueError("a counter no fit expected")])
def test_a_failed_background_refresh_keeps_serving(app, client, admin, sdk, caplog, failure):
    start_experiment(client, admin)
    decide(client, sdk, "v1")
    services = app.extensions["centric"]
    counters = GatedCounters(services.counters)
    counters.fail = failure
    counters.gate.set()
    catalog = _background_catalog(app, counters, posterior_interval=60.0)
    snapshot = catalog.snapshot()
    _wait_for_fit(catalog)
    assert "posterior refresh failed" in caplog.text
    q = catalog.allocation(snapshot, snapshot.experiments["hero"], "default", "web")
    assert np.isclose(sum(q), 1.0)
    catalog.snapshot()  # the failed refit counts as one: the next is an interval away
    _wait_for_fit(catalog)
    assert counters.reads == 1


def test_decide_serves_while_posteriors_refresh_in_the_background(settings, client, admin):
    body = experiment_body(key="bg")
    assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
    assert client.post("/v1/experiments/bg/start", headers=admin).status_code == 200
    app = create_app(settings.with_changes(posterior_background=True, posterior_interval=0.0))
    c = app.test_client()
    for i in range(30):
        r = c.post("/v1/decide", json={"visitor_id": f"b{i}", "channel": "web"}, headers=admin)
        assert r.status_code == 200
        assert r.json["decisions"][0]["reason"] == "assigned"
    _wait_for_fit(app.extensions["centric"].catalog)


def test_a_definition_changed_during_a_fit_is_fitted_at_the_next_read(app, client, admin):
    start_experiment(client, admin)
    services = app.extensions["centric"]
    counters = GatedCounters(services.counters)
    catalog = _background_catalog(app, counters, posterior_interval=60.0)
    catalog.snapshot()  # the first fit starts and waits at the gate
    r = client.put("/v1/experiments/hero", json=experiment_body(name="Renamed"), headers=admin)
    assert r.status_code == 200
    assert catalog.fresh().experiments["hero"].name == "Renamed"
    counters.gate.set()
    _wait_for_fit(catalog)
    catalog.snapshot()  # that fit was for the old definitions: fit again at once
    _wait_for_fit(catalog)
    assert counters.reads == 2
    catalog.snapshot()  # the new definitions are fitted: the next fit is an interval away
    _wait_for_fit(catalog)
    assert counters.reads == 2
