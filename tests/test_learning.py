"""A bandit learns a different best variant per persona and channel, through the HTTP API."""

from __future__ import annotations

import numpy as np
import pytest

from server import create_app
from tests.support import experiment_body

# True conversion rates per segment: the best variant differs by persona and by channel.
TRUTH = {
    ("a", "web"): {"v1": 0.12, "v2": 0.04, "v3": 0.04},
    ("a", "app"): {"v1": 0.04, "v2": 0.04, "v3": 0.12},
    ("b", "web"): {"v1": 0.04, "v2": 0.12, "v3": 0.04},
    ("b", "app"): {"v1": 0.12, "v2": 0.04, "v3": 0.04},
}


@pytest.mark.slow
def test_each_segment_learns_its_own_best_variant(settings, admin):
    # Refit posteriors every 0.2 s of wall time (a few hundred decisions here; a production
    # worker refits every 5 s, at many more decisions a second).
    app = create_app(settings.with_changes(refresh_interval=0.2, posterior_interval=0.2),
                     rng=np.random.default_rng(17))
    client = app.test_client()
    headers = {"Authorization": admin["Authorization"]}
    body = experiment_body(key="learn", variants=[{"key": k} for k in ("v1", "v2", "v3")],
                           control="v1")
    assert client.post("/v1/experiments", json=body, headers=headers).status_code == 201
    client.post("/v1/experiments/learn/start", headers=headers)
    sim = np.random.default_rng(2024)
    segments = list(TRUTH)
    for i in range(20_000):
        persona, channel = segments[i % 4]
        visitor = f"visitor-{i}"
        d = client.post("/v1/decide", json={"visitor_id": visitor, "channel": channel,
                                            "persona": persona}, headers=headers).json
        variant = d["decisions"][0]["variant"]
        if sim.random() < TRUTH[(persona, channel)][variant]:
            r = client.post("/v1/track", json={"visitor_id": visitor, "metric": "purchase",
                                               "event_id": f"buy-{i}"}, headers=headers)
            assert r.json["attributed"][0]["variant"] == variant

    rows = client.get("/v1/experiments/learn/counters", headers=headers).json["rows"]
    assert sum(r["exposures"] for r in rows) == 20_000

    for (persona, channel), rates in TRUTH.items():
        best = max(rates, key=rates.get)
        served = [
            client.post("/v1/decide", json={"visitor_id": f"new-{persona}-{channel}-{j}",
                                            "channel": channel, "persona": persona},
                        headers=headers).json["decisions"][0]["variant"]
            for j in range(400)
        ]
        share = served.count(best) / len(served)
        assert share > 0.75, f"{persona}/{channel}: best {best} got {share:.0%}"
