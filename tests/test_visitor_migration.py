"""`centric migrate`: visitors stored by centric 0.1 keep their assignments and attributes."""

from __future__ import annotations

import dataclasses
import json

from server import cli
from server.keys import ASSIGNMENT, ATTRIBUTE, EVENT
from server.stores import assignment_record
from server.stores.counters import parse
from tests.support import decide, start_experiment


def _as_0x(app, rclient, node: str, decision_id: str) -> dict[str, str]:
    """Rewrite a visitor as 0.1 stored it; return the visitor hash as this version wrote it."""
    services = app.extensions["centric"]
    keys = services.keys
    profile = keys.visitor(node).profile
    now = rclient.hgetall(profile)
    seed = services.experiments.store.get("hero").seed
    attributes, assignments = keys.legacy_visitor(node)
    events = keys.visitor(node).events  # 0.1 kept every counted event id in this set
    for field, value in now.items():
        if field.startswith(ATTRIBUTE):
            rclient.hset(attributes, field[len(ATTRIBUTE):], value)
        elif field.startswith(ASSIGNMENT):
            r = assignment_record.decode(value)
            kinds = {"c": "conversion", "r": "revenue"}
            # 0.1 drew a random decision id and stored it.
            record = {"u": seed, "v": r.variant, "p": r.persona, "c": r.channel,
                      "g": r.group, "t": r.assigned_ms, "d": decision_id,
                      "w": r.propensity, "ep": r.epoch,
                      "m": {k.split("|")[0] + "|" + kinds[k.split("|")[1]]: v
                            for k, v in r.outcomes.items()}}
            rclient.hset(assignments, field[len(ASSIGNMENT):], json.dumps(record))
        elif field.startswith(EVENT):
            rclient.zadd(events, {field[len(EVENT):]: float(value)})
        else:
            continue
        rclient.hdel(profile, field)
    return now


def _exposures(app, rclient) -> float:
    services = app.extensions["centric"]
    seed = services.experiments.store.get("hero").seed
    hashes = [rclient.hgetall(k) for k in services.keys.all_counters("hero", seed)]
    return sum(parse(hashes).exposures.values())


def test_migrate_carries_0x_visitors_over_exactly_once(app, client, admin, sdk,
                                                       rclient, cli_env, capsys):
    start_experiment(client, admin)
    first = decide(client, sdk, "v1", attributes={"tier": "gold"})["decisions"][0]
    r = client.post("/v1/track", json={"visitor_id": "v1", "metric": "purchase",
                                       "event_id": "o1"}, headers=sdk)
    assert r.status_code == 200
    stored = _as_0x(app, rclient, "visitor_id:v1", "0123456789abcdef0123456789abcdef")
    exposures = _exposures(app, rclient)

    assert cli.main(["migrate"]) == 0
    assert "moved 1 visitors: 1 attributes, 1 assignments" in capsys.readouterr().out
    keys = app.extensions["centric"].keys
    migrated = rclient.hgetall(keys.visitor("visitor_id:v1").profile)
    assert not rclient.exists(*keys.legacy_visitor("visitor_id:v1"))
    # Byte for byte what this version writes, but for the 0.1 decision id, kept as it was.
    record = assignment_record.decode(migrated.pop(ASSIGNMENT + "hero"))
    written = assignment_record.decode(stored.pop(ASSIGNMENT + "hero"))
    assert migrated == {k: v for k, v in stored.items() if not k.startswith(EVENT)}
    # The 0.1 dedupe set is this version's set of older event ids: it stays as it was.
    assert rclient.zrange(keys.visitor("visitor_id:v1").events, 0, -1) == ["o1"]
    assert record == dataclasses.replace(written, decision_id="0123456789abcdef0123456789abcdef")

    again = decide(client, sdk, "v1")["decisions"][0]
    assert (again["variant"], again["decision_id"], again["reason"]) == \
        (first["variant"], "0123456789abcdef0123456789abcdef", "sticky")
    assert _exposures(app, rclient) == exposures  # not counted a second time
    retried = client.post("/v1/track", json={"visitor_id": "v1", "metric": "purchase",
                                             "event_id": "o1"}, headers=sdk).json
    assert retried["duplicates"] == 1  # the event counted before the upgrade stays counted
    profile = client.get("/v1/visitors/v1", headers=admin).json
    assert profile["attributes"] == {"tier": "gold"}
    assert profile["assignments"][0]["outcomes"] == {"purchase": 1.0}

    assert cli.main(["migrate"]) == 0
    assert "moved 0 visitors" in capsys.readouterr().out
