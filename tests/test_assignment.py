"""A/B assignment: golden cases, the split, determinism across apps, restarts.

Golden cases are pinned; the split is checked at the configured weights; two apps agree
even when stored assignments are lost; a restart keeps sticky bandit assignments.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from experiments.assignment import (
    ab_variant,
    holdout_variant,
    in_coverage,
    in_holdout,
    unit_hash,
    weighted_bucket,
)
from server import create_app
from server.keys import ASSIGNMENT
from tests.support import experiment_body

GOLDEN = json.loads((Path(__file__).parent / "golden" / "assignment.json").read_text())["cases"]


@pytest.mark.parametrize("case", GOLDEN, ids=[f"{c['seed'][:4]}-{c['visitor_id'][:8]}"
                                              for c in GOLDEN])
def test_golden_cases(case):
    seed, visitor = case["seed"], case["visitor_id"]
    assert unit_hash(seed, "variant", visitor) == pytest.approx(case["unit_variant"], abs=1e-12)
    assert ab_variant(seed, visitor, case["weights"]) == case["variant_index"]
    assert in_coverage(seed, visitor, 0.5) == case["in_coverage_0.5"]
    assert in_holdout(seed, visitor, 0.1) == case["in_holdout_0.1"]
    assert holdout_variant(seed, visitor, len(case["weights"])) == case["holdout_variant"]


def test_hash_follows_the_documented_formula():
    # Computed by hand from the README: SHA-256 of "seed \x1f salt \x1f visitor", first 8
    # bytes big-endian / 2^64, cut at the cumulative weights.
    digest = hashlib.sha256(b"s33d\x1fvariant\x1fvisitor-42").digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    assert unit_hash("s33d", "variant", "visitor-42") == u
    expected = 0 if u < 0.25 else 1 if u < 0.75 else 2
    assert ab_variant("s33d", "visitor-42", [1, 2, 1]) == expected


def test_weighted_bucket_edges():
    assert weighted_bucket(0.0, [1, 1]) == 0
    assert weighted_bucket(0.4999, [1, 1]) == 0
    assert weighted_bucket(0.5, [1, 1]) == 1
    assert weighted_bucket(0.999999999, [1, 1]) == 1
    assert weighted_bucket(0.05, [0.1, 0.0001, 0.9]) == 0
    assert weighted_bucket(0.99, [3, 1]) == 1


WEIGHTS = [("control", 1), ("b", 2), ("c", 1)]


def _ab(client, admin, **overrides):
    body = experiment_body(mode="ab", variants=[{"key": k, "weight": w} for k, w in WEIGHTS],
                           **overrides)
    client.post("/v1/experiments", json=body, headers=admin)
    client.post("/v1/experiments/hero/start", headers=admin)


def _variants(client, sdk, visitors):
    out = {}
    for v in visitors:
        d = client.post("/v1/decide", json={"visitor_id": v, "channel": "web"},
                        headers=sdk).json["decisions"][0]
        out[v] = (d["variant"], d["reason"])
    return out


def test_split_over_10000_visitors_matches_weights(client, admin, sdk):
    _ab(client, admin)
    got = _variants(client, sdk, [f"visitor-{i}" for i in range(10_000)])
    observed = [sum(1 for v, _ in got.values() if v == k) for k, _ in WEIGHTS]
    expected = [10_000 * w / 4 for _, w in WEIGHTS]
    assert chisquare(observed, expected).pvalue > 0.001
    # Exposures counted once per visitor, matching what was served.
    rows = client.get("/v1/experiments/hero/counters", headers=admin).json["rows"]
    assert [r["exposures"] for r in rows] == observed


def test_two_apps_agree_even_after_assignments_are_lost(settings, client, admin, sdk, rclient,
                                                        prefix):
    _ab(client, admin)
    visitors = [f"v{i}" for i in range(300)]
    first = _variants(client, sdk, visitors)
    for key in rclient.scan_iter(match=f"{{{prefix}:s*}}:pr:*"):
        rclient.hdel(key, *[f for f in rclient.hkeys(key) if f.startswith(ASSIGNMENT)])
    other = create_app(settings, rng=np.random.default_rng(99)).test_client()
    second = _variants(other, sdk, visitors)
    assert {v: x[0] for v, x in first.items()} == {v: x[0] for v, x in second.items()}
    assert {x[1] for x in second.values()} == {"assigned"}


def test_restart_keeps_bandit_assignments(settings, client, admin, sdk):
    client.post("/v1/experiments", json=experiment_body(), headers=admin)
    client.post("/v1/experiments/hero/start", headers=admin)
    visitors = [f"v{i}" for i in range(200)]
    before = _variants(client, sdk, visitors)
    restarted = create_app(settings, rng=np.random.default_rng(12345)).test_client()
    after = _variants(restarted, sdk, visitors)
    assert {v: x[0] for v, x in before.items()} == {v: x[0] for v, x in after.items()}
    assert {x[1] for x in after.values()} == {"sticky"}
