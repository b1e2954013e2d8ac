"""Time to build a report for 10 variants x 40 segments x 30 epochs (target: under 0.5 s).

Usage: python bench/report_bench.py [--repeat 5]

1. The report alone, from counters already in memory (experiments.report.build_report).
2. End to end through the service: the same counters written to Redis (CENTRIC_REDIS_URL,
   else 127.0.0.1:6379, under a throw-away prefix), read from the 16 shards, parsed, reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments.model import Experiment, Metric, Mode, Status, Variant  # noqa: E402
from experiments.report import CellCounts, build_report  # noqa: E402
from server import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.support import experiment_body  # noqa: E402

VARIANTS = [f"v{i}" for i in range(10)]
SEGMENTS = [(f"p{i % 8}", f"c{i // 8}") for i in range(40)]
EPOCHS = range(30)


def _cells(rng: np.random.Generator) -> dict:
    cells = {}
    for persona, channel in SEGMENTS:
        for epoch in EPOCHS:
            share = rng.dirichlet(np.ones(len(VARIANTS)))
            for v, q in zip(VARIANTS, share, strict=True):
                n = int(rng.poisson(400 * q)) + 1
                c = int(rng.binomial(n, 0.05))
                cells[("p", persona, channel, v, epoch)] = CellCounts(
                    n, 400 * q, {"purchase": [c, 0.0, 0.0]})
    return cells


def seeded_report_app(url: str, cells: dict | None = None) -> tuple:
    """An app under a throw-away prefix whose experiment 'bench' holds the bench's counters.

    Returns (app, admin headers, report path, a function that deletes the prefix's keys).
    """
    cells = cells if cells is not None else _cells(np.random.default_rng(1))
    prefix = "bench" + uuid.uuid4().hex[:6]
    app = create_app(Settings(redis_url=url, key_prefix=prefix))
    services = app.extensions["centric"]
    client = redis.Redis.from_url(url, decode_responses=True)

    def drop() -> None:
        for key in client.scan_iter(match=f"*{{{prefix}:*", count=1000):
            client.delete(key)

    body = experiment_body(key="bench", variants=[{"key": v} for v in VARIANTS], control="v0")
    headers = {"Authorization": "Bearer " + services.api_keys.create("admin")}
    app.test_client().post("/v1/experiments", json=body, headers=headers)
    seed = services.experiments.get("bench").seed
    pipe = client.pipeline(transaction=False)
    for i, ((g, p, c, v, ep), cell) in enumerate(cells.items()):
        key = services.keys.epoch_counters("bench", seed, i % 16)
        pipe.hset(key, mapping={f"n|{g}|{p}|{c}|{v}|{ep}": cell.exposures,
                                f"e|{g}|{p}|{c}|{v}|{ep}": float(cell.expected),
                                f"c|purchase|{g}|{p}|{c}|{v}|{ep}":
                                    int(cell.metrics["purchase"][0])})
    pipe.execute()
    return app, headers, "/v1/experiments/bench/report", drop


def _timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    """Print the timings."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    cells = _cells(rng)
    e = Experiment(key="bench", name="bench", variants=tuple(Variant(v, 1.0) for v in VARIANTS),
                   control="v0", metric=Metric("purchase"), mode=Mode.BANDIT, seed="ab",
                   status=Status.RUNNING)
    print(f"{len(VARIANTS)} variants x {len(SEGMENTS)} segments x {len(EPOCHS)} epochs = "
          f"{len(cells)} cells")
    pure = _timed(lambda: build_report(e, cells, np.random.default_rng(2)), args.repeat)
    print(f"build_report from memory: median {statistics.median(pure):.3f} s "
          f"(min {min(pure):.3f}, max {max(pure):.3f})")

    url = os.environ.get("CENTRIC_REDIS_URL", "redis://127.0.0.1:6379/0")
    app, headers, path, drop = seeded_report_app(url, cells)
    try:
        services = app.extensions["centric"]
        full = _timed(lambda: services.reports.report("bench"), args.repeat)
        print(f"report service (Redis read + parse + build): median "
              f"{statistics.median(full):.3f} s (min {min(full):.3f}, max {max(full):.3f})")
        client = app.test_client()
        http = _timed(lambda: client.get(path, headers=headers), args.repeat)
        print(f"GET {path} (JSON included): median {statistics.median(http):.3f} s "
              f"(min {min(http):.3f}, max {max(http):.3f})")
    finally:
        drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
