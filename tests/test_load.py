"""Load without loss: 16 clients for 60 s against gunicorn, counters equal the clients' logs."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.support import ROOT


@pytest.mark.slow
def test_sixty_seconds_of_mixed_load_lose_and_double_count_nothing(redis_url, capsys):
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "bench" / "load_test.py")
    assert spec and spec.loader
    load_test = importlib.util.module_from_spec(spec)
    sys.modules["load_test"] = load_test  # dataclasses look their module up there
    spec.loader.exec_module(load_test)
    result = load_test.run(redis_url, seconds=60, clients=16, workers=2)
    with capsys.disabled():
        print(f"\nload: {result['requests']} requests in {result['seconds']:.0f} s "
              f"({result['throughput']:.0f}/s), calls {result['calls']}, "
              f"errors {result['errors']}")
    assert result["errors"] == {}
    assert result["calls"]["track"] > 1000 and result["calls"]["identify"] > 100
    assert result["exposures_counted"] == result["assigned_logged"]
    assert result["value_counted"] == result["events_logged"]
    assert result["converters_counted"] == result["converters_logged"]
