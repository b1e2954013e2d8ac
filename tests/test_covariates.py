"""Report-only counters: the CUPED covariate (cx, x, xx, xy) and revenue sums (p, l, ll, ps).

End to end through the API on a real Redis: the assignment record a decide writes, the
per-epoch counters decide, expose and track update, and a merge moving a record.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import pytest

from experiments.report import METRIC_SLOTS
from server.keys import ASSIGNMENT
from server.stores import assignment_record
from server.stores.counters import COUNTER_SLOTS, parse_cells
from tests.support import start_experiment

REVENUE = {"name": "revenue", "kind": "revenue"}


def _decide(client, headers, visitor, **extra):
    r = client.post("/v1/decide", json={"visitor_id": visitor, "channel": "web", **extra},
                    headers=headers)
    assert r.status_code == 200, r.json
    return r.json["decisions"][0]


def _track(client, headers, visitor, event_id, metric="purchase", **extra):
    r = client.post("/v1/track", json={"visitor_id": visitor, "metric": metric,
                                       "event_id": event_id, **extra}, headers=headers)
    assert r.status_code == 200, r.json
    return r.json


def _hashes(app, rclient, epochs=True, key="hero"):
    """The experiment's counter hashes of every shard (per epoch, or the totals)."""
    services = app.extensions["centric"]
    e = services.experiments.get(key)
    name = services.keys.epoch_counters if epochs else services.keys.counters
    return [rclient.hgetall(name(key, e.seed, shard)) for shard in range(16)]


def _sums(app, rclient, key="hero"):
    """Per-epoch counters summed over cells: 'x', 'xx', ... and 'xy|metric', 'l|metric', ..."""
    out: dict[str, float] = defaultdict(float)
    for h in _hashes(app, rclient, key=key):
        for name, raw in h.items():
            parts = name.split("|")
            out[parts[0] if len(parts) == 6 else f"{parts[0]}|{parts[1]}"] += float(raw)
    return out


def _record(app, rclient, visitor, key="hero", node=None):
    """The stored assignment record of a visitor, as decide wrote it."""
    keys = app.extensions["centric"].keys
    raw = rclient.hget(keys.visitor(node or f"visitor_id:{visitor}").profile, ASSIGNMENT + key)
    return assignment_record.decode(raw)


def test_revenue_snapshots_lifetime_value_and_keeps_log_sums(app, rclient, client, admin, sdk,
                                                             server):
    start_experiment(client, admin, metric=REVENUE)
    # Spent 120 before the experiment: the shop's backend reported the order.
    _track(client, server, "v", "old-order", value=120.0)
    _decide(client, sdk, "v")
    record = _record(app, rclient, "v")
    assert float(record.covariate) == 120.0 and isinstance(record.covariate, str)
    sums = _sums(app, rclient)
    assert sums["x"] == 120.0 and sums["xx"] == 14400.0

    _track(client, sdk, "v", "r1", metric="revenue", value=30.0)
    _track(client, sdk, "v", "r2", metric="revenue", value=20.0)
    sums = _sums(app, rclient)
    assert sums["xy|revenue"] == pytest.approx(120 * 50)
    assert sums["p|revenue"] == 1
    assert sums["l|revenue"] == pytest.approx(math.log(50))
    assert sums["ll|revenue"] == pytest.approx(math.log(50) ** 2)
    assert sums["ps|revenue"] == pytest.approx(50)
    # Purchases after the assignment raise lifetime value, never the snapshot.
    _track(client, server, "v", "new-order", value=99.0)
    assert _record(app, rclient, "v").covariate == record.covariate

    # A partial refund (a negative value on the revenue metric) replaces the visitor's log.
    _track(client, sdk, "v", "r3", metric="revenue", value=-30.0)
    sums = _sums(app, rclient)
    assert sums["p|revenue"] == 1 and sums["xy|revenue"] == pytest.approx(120 * 20)
    assert sums["l|revenue"] == pytest.approx(math.log(20))
    assert sums["ll|revenue"] == pytest.approx(math.log(20) ** 2)
    assert sums["ps|revenue"] == pytest.approx(20)
    # Refunded to zero: no longer a positive visitor.
    _track(client, sdk, "v", "r4", metric="revenue", value=-20.0)
    sums = _sums(app, rclient)
    assert sums["p|revenue"] == 0 and sums["xy|revenue"] == pytest.approx(0, abs=1e-9)
    assert sums["l|revenue"] == pytest.approx(0, abs=1e-9)
    assert sums["ll|revenue"] == pytest.approx(0, abs=1e-9)
    assert sums["ps|revenue"] == pytest.approx(0, abs=1e-9)
    # Below zero and back above it: a negative total is in the value sum, not the buyers'.
    _track(client, sdk, "v", "r5", metric="revenue", value=-5.0)
    sums = _sums(app, rclient)
    assert sums["p|revenue"] == 0 and sums["s|revenue"] == pytest.approx(-5.0)
    assert sums["ps|revenue"] == pytest.approx(0, abs=1e-9)
    _track(client, sdk, "v", "r6", metric="revenue", value=10.0)
    sums = _sums(app, rclient)
    assert sums["p|revenue"] == 1 and sums["l|revenue"] == pytest.approx(math.log(5))
    assert sums["xy|revenue"] == pytest.approx(120 * 5)
    assert sums["s|revenue"] == pytest.approx(5.0) and sums["ps|revenue"] == pytest.approx(5.0)
    # Only reports read these: the totals hash holds the plain counters and the bandit's
    # learning sums (server.keys), none of the report-only sums.
    learning = {"bt", "bn", "bw1", "bw2", "bw3", "bw4", "bw5", "bc", "bs", "bq", "bdk", "bd1",
                "bd2", "bd3", "bd4", "bd5"}
    assert {name.split("|")[0] for h in _hashes(app, rclient, epochs=False) for name in h} \
        <= {"n", "c", "s", "q"} | learning


def test_conversion_snapshots_purchase_count(app, rclient, client, admin, sdk, server):
    start_experiment(client, admin)  # primary metric: purchase, a conversion
    for i, value in enumerate((10.0, 15.0)):
        _track(client, server, "v", f"old-{i}", value=value)
    _decide(client, sdk, "v")
    assert _record(app, rclient, "v").covariate == "2"
    sums = _sums(app, rclient)
    assert (sums["x"], sums["xx"]) == (2.0, 4.0)
    # cx*y grows at the first conversion only: y is 0 or 1.
    _track(client, sdk, "v", "new-1")
    _track(client, sdk, "v", "new-2")
    sums = _sums(app, rclient)
    assert sums["xy|purchase"] == 2.0
    assert not {"p|purchase", "l|purchase", "ll|purchase"} & set(sums)


def test_guardrails_get_the_primary_metrics_covariate(app, rclient, client, admin, sdk, server):
    start_experiment(client, admin, guardrails=[REVENUE])
    _track(client, server, "v", "old", value=80.0)
    _decide(client, sdk, "v")
    # The purchase count: the primary metric is a conversion.
    assert _record(app, rclient, "v").covariate == "1"
    _track(client, sdk, "v", "r1", metric="revenue", value=40.0)
    sums = _sums(app, rclient)
    assert sums["xy|revenue"] == 40.0 and sums["l|revenue"] == pytest.approx(math.log(40))


def test_no_history_no_covariate(app, rclient, client, admin, sdk, server):
    start_experiment(client, admin, metric=REVENUE)
    _decide(client, sdk, "new")
    # Spent and fully refunded before the experiment: a lifetime value of 0 is left out too.
    _track(client, server, "refunded", "o", value=40.0)
    _track(client, server, "refunded", "r", metric="refund", value=40.0)
    _decide(client, sdk, "refunded")
    for visitor in ("new", "refunded"):
        assert _record(app, rclient, visitor).covariate == ""
        _track(client, sdk, visitor, f"{visitor}-r1", metric="revenue", value=25.0)
    sums = _sums(app, rclient)
    assert sums["n"] == 2 and sums["p|revenue"] == 2
    assert not {"x", "xx", "xy|revenue"} & set(sums)


def test_pending_assignments_add_the_covariate_when_confirmed(app, rclient, client, admin, sdk,
                                                              server):
    start_experiment(client, admin, metric=REVENUE)
    shown = {}
    for visitor in ("by-expose", "by-decide"):
        _track(client, server, visitor, f"{visitor}-old", value=100.0)
        shown[visitor] = _decide(client, sdk, visitor, expose=False)
    pending = _record(app, rclient, "by-expose")
    assert pending.pending and pending.covariate == "100"
    # A pending assignment collects nothing, so nothing pairs with its covariate yet.
    _track(client, sdk, "by-expose", "too-early", metric="revenue", value=9.0)
    assert not {"x", "xx", "xy|revenue"} & set(_sums(app, rclient))

    body = {"visitor_id": "by-expose",
            "decisions": [{"experiment": "hero", "decision_id": shown["by-expose"]["decision_id"]}]}
    for _ in range(2):  # a retried confirmation counts once
        assert client.post("/v1/expose", json=body, headers=sdk).status_code == 200
    sums = _sums(app, rclient)
    assert (sums["n"], sums["x"], sums["xx"]) == (1, 100.0, 10_000.0)
    # A one-call decide shows the other pending assignment: it counts then, once.
    for _ in range(2):
        _decide(client, sdk, "by-decide")
    sums = _sums(app, rclient)
    assert (sums["n"], sums["x"], sums["xx"]) == (2, 200.0, 20_000.0)
    assert _record(app, rclient, "by-decide").covariate == "100"


def test_a_merge_carries_the_record_and_its_covariate_unchanged(app, rclient, client, admin,
                                                                sdk, server):
    start_experiment(client, admin, metric=REVENUE)
    _track(client, server, "phone", "phone-old", value=120.0)
    decision = _decide(client, sdk, "phone")
    before = _record(app, rclient, "phone")
    # The laptop, with its own history, holds the customer id first: its profile wins.
    _track(client, server, "laptop", "laptop-old", value=7.0)
    for device in ("laptop", "phone"):
        r = client.post("/v1/identify", json={"visitor_id": device,
                                              "ids": {"customer_id": "c-1"}}, headers=server)
        assert r.status_code == 200, r.json
    keys = app.extensions["centric"].keys
    canonical = rclient.hget(keys.visitor("visitor_id:phone").profile, "alias")
    assert canonical == "visitor_id:laptop"
    # Carried over with the id it was decided under written out, as the phone's id derived it.
    assert before.decision_id == ""
    after = _record(app, rclient, "phone", node=canonical)
    assert after == dataclasses.replace(before, decision_id=decision["decision_id"])
    again = _decide(client, sdk, "phone")
    assert (again["reason"], again["decision_id"]) == ("sticky", decision["decision_id"])
    # The merged profile's lifetime value is the sum; the assignment keeps its snapshot.
    assert float(rclient.hget(keys.visitor(canonical).profile, "ltv")) == 127.0
    _track(client, sdk, "phone", "after-merge", metric="revenue", value=30.0)
    assert _sums(app, rclient)["xy|revenue"] == pytest.approx(120 * 30)


def test_parse_cells_reads_every_counter():
    assert [METRIC_SLOTS[i] for i in COUNTER_SLOTS.values()] == [
        "conversions", "value_sum", "value_sq_sum", "buyers", "log_sum", "log_sq_sum",
        "covariate_product", "buyers_value_sum"]
    shard_a = {
        "n|p|default|web|b|7": "3", "e|p|default|web|b|7": "1.5",
        "x|p|default|web|b|7": "120", "xx|p|default|web|b|7": "14400",
        "c|revenue|p|default|web|b|7": "2", "s|revenue|p|default|web|b|7": "50",
        "q|revenue|p|default|web|b|7": "2500", "p|revenue|p|default|web|b|7": "1",
        "l|revenue|p|default|web|b|7": "3.9", "ll|revenue|p|default|web|b|7": "15.3",
        "xy|revenue|p|default|web|b|7": "6000", "ps|revenue|p|default|web|b|7": "50",
        "zz|p|default|web|b|7": "9",  # a newer script's counter: skipped
        "zz|revenue|p|default|web|b|7": "9",
    }
    shard_b = {"n|p|default|web|b|7": "1", "x|p|default|web|b|7": "2.5",
               "xy|revenue|p|default|web|b|7": "0.5", "c|purchase|h|vip|app|a|8": "1",
               "n|p|default|web|b": "5", "c|purchase|p|web|b|7": "5"}  # malformed: skipped
    cells = parse_cells([shard_a, shard_b])
    assert set(cells) == {("p", "default", "web", "b", 7), ("h", "vip", "app", "a", 8)}
    cell = cells[("p", "default", "web", "b", 7)]
    assert (cell.exposures, cell.expected) == (4, 1.5)
    assert cell.covariate == [122.5, 14400.0]
    assert cell.metrics == {"revenue": [2.0, 50.0, 2500.0, 1.0, 3.9, 15.3, 6000.5, 50.0]}
    other = cells[("h", "vip", "app", "a", 8)]
    assert other.exposures == 0 and other.covariate == [0.0, 0.0]
    assert other.metrics == {"purchase": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}


def test_reports_read_what_the_scripts_wrote(app, client, admin, sdk, server):
    start_experiment(client, admin, metric=REVENUE)
    _track(client, server, "v", "old", value=120.0)
    variant = _decide(client, sdk, "v")["variant"]
    _track(client, sdk, "v", "r1", metric="revenue", value=50.0)
    services = app.extensions["centric"]
    cells = services.counters.read_cells(services.experiments.get("hero"))
    # Every variant's cell has expected exposures; only the served one has the visitor.
    ((key, cell),) = [(k, c) for k, c in cells.items() if c.exposures]
    assert key[:4] == ("p", "default", "web", variant)
    assert cell.covariate == [120.0, 14400.0]
    assert all(c.covariate == [0.0, 0.0] and not c.metrics for c in cells.values() if c is not cell)
    c, s, q, p, log_sum, log_sq, xy, ps = cell.metrics["revenue"]
    assert (c, s, q, p, xy, ps) == (1, 50.0, 2500.0, 1, 6000.0, 50.0)
    assert log_sum == pytest.approx(math.log(50)) and log_sq == pytest.approx(math.log(50) ** 2)
