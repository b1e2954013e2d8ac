"""How the bandit learns: pooling across segments, fading evidence and late conversions.

The pure parts are checked against closed forms and small simulations with known truth; the
scripts' learning sums are checked against their Python twin on the real Redis.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bandits.evidence import (
    DELAY_MEANS_SECONDS,
    CellState,
    DelayStats,
    Evidence,
    delay_mixture,
    evidence,
    fade_rate,
    matured,
)
from bandits.learner import Learner
from bandits.pooling import winner_prior
from server.stores.counters import parse
from tests.support import decide, experiment_body

HOUR_MS = 3_600_000.0


def _evidence(rows: dict[tuple[str, str], tuple[list[float], list[float]]]) -> Evidence:
    names = tuple(rows)
    n = np.array([rows[s][0] for s in names], dtype=float)
    c = np.array([rows[s][1] for s in names], dtype=float)
    return Evidence(names, n, c, np.zeros_like(n), np.zeros_like(n))


def _agreeing(extra: dict[tuple[str, str], tuple[list[float], list[float]]]) -> Evidence:
    # Ten segments that agree: variant 1 converts at 6%, variant 0 at 5%.
    rows = {(f"p{i}", "web"): ([5000.0, 5000.0], [250.0, 300.0]) for i in range(10)}
    rows.update(extra)
    return _evidence(rows)


def test_pooling_shrinks_a_tiny_segment_toward_the_experiment_and_leaves_a_large_one_alone():
    tiny, large = ("tiny", "app"), ("large", "app")
    ev = _agreeing({tiny: ([20.0, 20.0], [2.0, 1.0]),  # too few visitors to know anything
                    large: ([20000.0, 20000.0], [1400.0, 1000.0])})  # clearly its own winner
    rng = np.random.default_rng(3)
    alone = Learner.fit(ev, 2, rng, pooling="none")
    pooled = Learner.fit(ev, 2, rng, pooling="auto")
    # Alone, the tiny segment leans to variant 0 by noise; pooled, it follows the others.
    assert alone.prob_best(tiny)[1] < 0.5
    assert pooled.prob_best(tiny)[1] > max(0.6, alone.prob_best(tiny)[1] + 0.25)
    # The large segment's own answer stands, pooled or not.
    assert alone.prob_best(large)[0] > 0.999
    assert pooled.prob_best(large)[0] > 0.999
    # A segment never seen starts from the experiment's answer; without pooling, from nothing.
    assert pooled.prob_best(("new", "web"))[1] > 0.75
    assert alone.prob_best(("new", "web"))[1] == pytest.approx(0.5, abs=0.05)


def test_segments_that_disagree_are_not_tilted():
    # Winners spread evenly over the variants: the winner prior stays flat.
    own = np.tile(np.eye(4), (3, 1)) * 0.9 + 0.025
    prior = winner_prior(own)
    assert np.allclose(prior, 0.25, atol=0.03)
    # One segment alone has nobody to borrow from.
    assert np.allclose(winner_prior(np.array([[0.9, 0.1]]))[0], 0.5)


def _simulate(half_life_hours: float | None, decisions: int, change_at: int) -> int:
    """Decisions after the change until the new winner gets most of the traffic (or -1)."""
    rng = np.random.default_rng(11)
    fade = fade_rate(half_life_hours * 3600 if half_life_hours else None)
    rates = np.array([0.10, 0.05])
    cells = [CellState(), CellState()]
    step_ms = 60_000.0  # one visitor a minute
    q = np.array([0.5, 0.5])
    for i in range(decisions):
        now = i * step_ms
        if i == change_at:
            rates = rates[::-1]
        if i % 100 == 0:
            ev = evidence({("all", "web"): cells}, now, fade, DelayStats())
            q = Learner.fit(ev, 2, rng).allocation(("all", "web"), 0.01)
            if i > change_at and q[1] > 0.5:
                return i - change_at
        arm = int(rng.random() < q[1])
        cells[arm] = cells[arm].exposed(now, fade)
        if rng.random() < rates[arm]:
            cells[arm] = cells[arm].converted(now, now, fade, 1.0)
    return -1


def test_a_changed_winner_is_followed_within_a_bounded_number_of_decisions():
    # Half-life 24 h = 1,440 visitors here. However long the old winner led, the new one
    # leads within two half-lives.
    bound = 2 * 1440
    assert 0 < _simulate(24.0, 8_000 + bound, 8_000) <= bound
    assert 0 < _simulate(24.0, 30_000 + bound, 30_000) <= bound
    # Evidence that never fades follows later the longer the old winner led.
    assert _simulate(None, 30_000 + bound, 30_000) == -1


def test_a_burst_of_fresh_exposures_does_not_lower_the_posterior_mean():
    fade = fade_rate(14 * 24 * 3600)
    # Conversions here arrive about two hours after exposure.
    delays = DelayStats()
    for d in np.random.default_rng(5).exponential(2 * HOUR_MS, 400):
        delays = delays.observed(float(d))
    cell = CellState()
    for i in range(1000):  # days ago: 1,000 exposures and their 50 conversions
        cell = cell.exposed(i * 1000.0, fade)
    for i in range(50):
        cell = cell.converted(10 * HOUR_MS, i * 1000.0, fade, 1.0)
    now = 5 * 24 * HOUR_MS
    before = evidence({("s", "web"): [cell]}, now, fade, delays)
    for _ in range(500):  # a burst this second: nobody has had time to buy yet
        cell = cell.exposed(now, fade)
    after = evidence({("s", "web"): [cell]}, now, fade, delays)
    rate_before = before.conversions[0, 0] / before.exposures[0, 0]
    rate_after = after.conversions[0, 0] / after.exposures[0, 0]
    assert rate_after >= rate_before * 0.99
    # Counting the burst as failures would have cut the rate by a third.
    assert after.conversions[0, 0] / cell.aged(now, fade).exposures < rate_before * 0.7


@pytest.mark.parametrize("mean_seconds", [600.0, 7200.0, 86400.0])
def test_the_delay_model_recovers_exponential_delays(mean_seconds):
    rng = np.random.default_rng(int(mean_seconds))
    stats = DelayStats()
    for d in rng.exponential(mean_seconds * 1000.0, 3000):
        stats = stats.observed(float(d))
    mixture = delay_mixture(stats)
    assert mixture.sum() == pytest.approx(1.0)
    # F(a) of the fitted mixture against the true exponential CDF at several ages. Fixed
    # components approximate a delay between them to about 0.1; counting every exposure at
    # once (F = 1) would be off by up to 0.6.
    for age in (0.5, 1.0, 2.0, 4.0):
        a = age * mean_seconds
        fitted = 1.0 - sum(w * math.exp(-a / t) for w, t in zip(mixture[1:],
                                                                DELAY_MEANS_SECONDS,
                                                                strict=True))
        assert fitted == pytest.approx(1.0 - math.exp(-age), abs=0.11)


def test_instant_conversions_make_every_exposure_count_at_once():
    stats = DelayStats()
    for _ in range(2000):
        stats = stats.observed(0.0)
    mixture = delay_mixture(stats)
    assert mixture[0] > 0.98
    cell = CellState().exposed(0.0, 0.0)
    assert matured(cell, 1.0, 0.0, mixture) > 0.98


def test_the_scripts_keep_the_same_learning_sums_as_the_python_twin(app, client, admin, sdk,
                                                                     clock, rclient):
    body = experiment_body(key="fade", bandit={"half_life_hours": 2.0})
    assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
    assert client.post("/v1/experiments/fade/start", headers=admin).status_code == 200
    fade = fade_rate(2.0 * 3600)
    twin: dict[str, CellState] = {}
    delays = DelayStats()
    exposed_at: dict[str, float] = {}
    served: dict[str, str] = {}
    for i in range(12):
        visitor = f"fv{i}"
        d = decide(client, sdk, visitor)["decisions"][0]
        now = clock() * 1000.0
        served[visitor], exposed_at[visitor] = d["variant"], now
        twin[d["variant"]] = twin.get(d["variant"], CellState()).exposed(now, fade)
        clock.advance(900)  # a quarter of an hour between visitors
        if i % 3 == 1:  # every third visitor buys, a little later
            buyer = f"fv{i - 1}"
            now = clock() * 1000.0
            r = client.post("/v1/track", json={"visitor_id": buyer, "metric": "purchase",
                                               "event_id": f"buy-{i}"}, headers=sdk)
            assert r.status_code == 200, r.json
            v = served[buyer]
            twin[v] = twin[v].converted(now, exposed_at[buyer], fade, 1.0)
            delays = delays.observed(now - exposed_at[buyer])
    services = app.extensions["centric"]
    e = services.catalog.fresh().experiments["fade"]
    counts = parse(rclient.hgetall(k) for k in services.keys.all_counters(e.key, e.seed))
    now = clock() * 1000.0
    cells = counts.learning_cells(e, now)
    for variant, state in twin.items():
        stored = cells[("default", "web")][e.variant_keys.index(variant)]
        expected = state.aged(now, fade)
        assert stored.exposures == pytest.approx(expected.exposures, rel=1e-9)
        assert stored.conversions == pytest.approx(expected.conversions, rel=1e-9)
        assert stored.pending == pytest.approx(expected.pending, rel=1e-9, abs=1e-12)
    assert counts.delays.count == delays.count
    assert counts.delays.laplace == pytest.approx(delays.laplace, rel=1e-9)


def test_decide_serves_with_the_propensity_of_the_learner(app, client, admin, sdk, clock):
    body = experiment_body(key="prop", variants=[{"key": k} for k in ("a", "b", "c")],
                           control="a")
    assert client.post("/v1/experiments", json=body, headers=admin).status_code == 201
    assert client.post("/v1/experiments/prop/start", headers=admin).status_code == 200
    for i in range(60):
        variant = decide(client, sdk, f"pv{i}")["decisions"][0]["variant"]
        if variant == "b":
            client.post("/v1/track", json={"visitor_id": f"pv{i}", "metric": "purchase",
                                           "event_id": f"e{i}"}, headers=sdk)
    catalog = app.extensions["centric"].catalog
    for i in range(20):
        d = decide(client, sdk, f"new{i}")["decisions"][0]
        # The snapshot this decision used, and the allocation its learner gives.
        snapshot = catalog.last
        assert snapshot is not None
        e = snapshot.experiments["prop"]
        q = catalog.allocation(snapshot, e, "default", "web")
        assert d["propensity"] == pytest.approx(q[e.variant_keys.index(d["variant"])],
                                                rel=1e-6)


@pytest.mark.parametrize(("bandit", "field"), [({"pooling": "sometimes"}, "bandit.pooling"),
                                               ({"half_life_hours": -1}, "bandit.half_life_hours"),
                                               ({"half_life_hours": "week"},
                                                "bandit.half_life_hours")])
def test_bad_learning_settings_are_refused_naming_the_field(client, admin, bandit, field):
    r = client.post("/v1/experiments", json=experiment_body(key="bad", bandit=bandit),
                    headers=admin)
    assert r.status_code == 400
    assert field in r.json["error"]["fields"]


def test_fading_can_be_switched_off(client, admin):
    body = experiment_body(key="never", bandit={"half_life_hours": None, "pooling": "none"})
    r = client.post("/v1/experiments", json=body, headers=admin)
    assert r.status_code == 201
    assert r.json["bandit"]["half_life_hours"] is None
    assert r.json["bandit"]["pooling"] == "none"
