"""The assignment record codec: Python and the scripts' Lua agree on every stored byte."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from server.scripts import _source
from server.stores import assignment_record as codec
from tests.support import decide, start_experiment

CASES = json.loads((Path(__file__).parent / "golden" / "assignment_records.json")
                   .read_text())["cases"]
# The Lua table keys of each field of the Python record.
LUA_NAMES = {"seed_tag": "u", "variant": "v", "group": "g", "persona": "p", "channel": "c",
             "epoch": "ep", "assigned_ms": "t", "decision_id": "d", "propensity": "w",
             "covariate": "cx", "left_ms": "x", "outcomes": "m", "pending_variants": "vs",
             "pending_serving": "s"}
# Decodes, then returns the fields as JSON and the line encoded back from the table.
LUA_ROUND_TRIP = _source("lib_assignment") + """
local a = decode_assignment(ARGV[1])
local out = {}
for k, v in pairs(a) do out[k] = v end
out.m = cjson.encode(a.m)
return {cjson.encode(out), encode_assignment(a)}
"""


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_python_decodes_and_encodes_the_golden_lines(case):
    record = codec.decode(case["line"])
    assert dataclasses.asdict(record) == case["fields"]
    assert codec.encode(record) == case["line"]
    assert codec.encode(codec.AssignmentRecord(**case["fields"])) == case["line"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_lua_decodes_and_encodes_the_golden_lines(rclient, case):
    fields_json, line = rclient.eval(LUA_ROUND_TRIP, 0, case["line"])
    assert line == case["line"]
    lua = json.loads(fields_json)
    for name, value in case["fields"].items():
        key = LUA_NAMES[name]
        if name == "outcomes":
            assert json.loads(lua["m"]) == value
        elif value in ("", None) and name != "decision_id":
            assert key not in lua  # empty fields are absent from the table
        elif value in ("", None):
            assert lua[key] == ""  # a derived decision id (decision_of)
        else:
            assert lua[key] == value
    assert ("pe" in lua) == (case["fields"]["pending_variants"] is not None)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_python_and_lua_derive_the_documented_decision_id(rclient, case):
    node, experiment = "visitor_id:alice", "hero"
    record = codec.decode(case["line"])
    # The documented formula, computed here from scratch.
    text = f"{node}\n{experiment}\n{record.seed_tag}\n{record.assigned_ms}"
    derived = hashlib.sha1(text.encode()).hexdigest()[:32]
    expected = record.decision_id or derived
    assert codec.decision_id_of(record, node, experiment) == expected
    lua = _source("lib_assignment") + """
return decision_of(decode_assignment(ARGV[1]), ARGV[2], ARGV[3])
"""
    assert rclient.eval(lua, 0, case["line"], node, experiment) == expected
    # Moving a record to another visitor writes its id out, so it keeps it.
    moved = codec.decode(codec.with_decision_id(case["line"], node, experiment))
    assert codec.decision_id_of(moved, "customer_id:42", experiment) == expected


def test_seed_tag_is_the_seed_prefix_the_scripts_compare():
    assert codec.seed_tag("3f9a1c0b2d4e5f60") == "3f9a1c0b"
    assert f"SEED_TAG = {codec.SEED_TAG}" in _source("lib_assignment")


def test_the_records_decide_writes_decode(app, client, admin, sdk, rclient):
    start_experiment(client, admin)
    first = decide(client, sdk, "v1")["decisions"][0]
    keys = app.extensions["centric"].keys
    stored = rclient.hgetall(keys.visitor("visitor_id:v1").profile)
    lines = [v for k, v in stored.items() if k.startswith("x:")]
    assert len(lines) == 1
    record = codec.decode(lines[0])
    assert codec.encode(record) == lines[0]
    assert record.group == "p" and record.persona == "default" and record.channel == "web"
    assert float(record.propensity) > 0
    # The decision id is derived, not stored: the one decide answered with.
    assert record.decision_id == ""
    assert codec.decision_id_of(record, "visitor_id:v1", "hero") == first["decision_id"]
