"""The background jobs: when they run, and that one host at a time runs each."""

from __future__ import annotations

import json

from server.jobs import Jobs
from tests.test_moments import SECOND_PURCHASE, _customer, _shop

HOUR = 3600.0


def test_jobs_run_when_due_and_only_then(app, client, admin, server, clock, settings):
    services = app.extensions["centric"]
    jobs = Jobs(services, settings, clock)
    assert jobs.run_due() == ["clv", "sweep"]  # nothing ran yet; the fit finds no customers
    assert services.customer_value.model() is None
    assert jobs.run_due() == []
    _shop(client, server, clock)
    clock.advance(settings.moment_sweep_minutes * 60)
    assert jobs.run_due() == ["sweep"]
    assert services.customer_value.model() is None  # the fit is due only once a day
    clock.advance(settings.clv_refit_hours * HOUR)
    assert jobs.run_due() == ["clv"]  # the fit sweeps too, so the sweep is not due
    assert services.refresh.jobs.last_run_ms("sweep") == int(clock() * 1000)
    model = services.customer_value.model()
    assert model is not None and model.customers == 60
    assert model.fitted_at_ms == int(clock() * 1000)


def test_a_sweep_moves_members_and_rescores_new_customers(app, client, admin, server, clock,
                                                          settings):
    services = app.extensions["centric"]
    jobs = Jobs(services, settings, clock)
    _shop(client, server, clock)
    assert client.put("/v1/moments", headers=admin, json=[
        {"name": "second", "when": SECOND_PURCHASE}]).status_code == 200
    assert jobs.run_due() == ["clv"]
    _customer(client, server, clock, "late", [(11, 40.0)])
    r = client.get("/v1/visitors/late?id_type=customer_id", headers=admin)
    assert r.json["predictions"] is None  # bought after the fit
    clock.advance(settings.moment_sweep_minutes * 60)
    assert jobs.run_due() == ["sweep"]
    r = client.get("/v1/visitors/late?id_type=customer_id", headers=admin)
    assert r.json["predictions"]["predicted_at"] == clock()  # the sweep scored the newcomer
    members = client.get("/v1/moments/second/members", headers=server).json["members"]
    assert "late" in {m["customer_id"] for m in members}


def test_one_host_at_a_time(app, settings, clock):
    services = app.extensions["centric"]
    services.redis.set(services.keys.job_lock("sweep"), "another-host", px=60_000)
    assert Jobs(services, settings, clock).run_due() == ["clv"]
    services.redis.delete(services.keys.job_lock("sweep"))
    assert Jobs(services, settings, clock).run_due() == ["sweep"]


def test_switched_off_jobs_never_run(app, settings, clock):
    off = settings.with_changes(clv_refit_hours=0.0, moment_sweep_minutes=0.0)
    assert Jobs(app.extensions["centric"], off, clock).run_due() == []


def test_centric_jobs_once_runs_what_is_due(cli_env, capsys):
    from server.cli import main

    assert main(["jobs", "--once"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ran": ["clv", "sweep"]}
    assert main(["jobs", "--once"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ran": []}
    assert main(["jobs", "--once", "--force"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ran": ["clv", "sweep"]}  # none to fit


def test_a_fit_over_http_waits_for_none_and_runs_alone(app, client, admin, server, clock):
    services = app.extensions["centric"]
    _shop(client, server, clock, count=25)
    services.redis.set(services.keys.job_lock("clv"), "the daily job", px=60_000)
    r = client.post("/v1/models/clv/fit", headers=admin)
    assert r.status_code == 409 and r.json["error"]["fields"] == {"model": "fitting"}
    services.redis.delete(services.keys.job_lock("clv"))
    assert client.post("/v1/models/clv/fit", headers=admin).status_code == 200
    # The daily job counts the fit over HTTP as its own run.
    assert services.refresh.jobs.last_run_ms("clv") == int(clock() * 1000)
    services.redis.set(services.keys.job_lock("sweep"), "the hourly job", px=60_000)
    r = client.post("/v1/moments/sweep", headers=admin)
    assert r.status_code == 409 and r.json["error"]["fields"] == {"moments": "sweeping"}


def test_a_lock_is_renewed_while_its_job_runs(app, clock):
    import threading
    import time

    from server.stores.jobs import JobStore

    services = app.extensions["centric"]
    store = JobStore(services.redis, services.keys, services.refresh.jobs.scripts, clock,
                     lock_ms=900)
    lock = services.keys.job_lock("long")
    seen = []
    release = threading.Event()

    def long_job() -> None:
        for _ in range(6):  # twice the lock's life: without renewal it would expire
            time.sleep(0.3)
            seen.append(services.redis.pttl(lock))
        release.set()

    assert store.run_locked("long", long_job)
    assert release.is_set() and min(seen) > 0  # held throughout
    assert not services.redis.exists(lock)  # and released at the end
