"""Throughput and latency of decide and track on loopback: gunicorn + real Redis + wrk.

Usage: python bench/decide_bench.py [--workers 2] [--connections 16] [--seconds 8]

Uses CENTRIC_REDIS_URL (else 127.0.0.1:6379) under a throw-away key prefix, starts
`gunicorn 'server.wsgi:make_app()'`, defines three running experiments (two bandits with
stored counters, one A/B), and drives it with wrk (`apt-get install wrk`). Prints one line
per scenario; the figures are noisy (±20-40 % run to run on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.support import experiment_body, gunicorn_server  # noqa: E402

DECIDE_LUA = """
local n = 0
request = function()
  n = n + 1
  local v = math.random(1, %(visitors)d)
  local body = '{"visitor_id":"v' .. v .. '","channel":"web","persona":"p' .. (v %% 3) .. '"}'
  return wrk.format("POST", "/v1/decide", {["Content-Type"]="application/json",
    ["Authorization"]="Bearer %(key)s"}, body)
end
"""

TRACK_LUA = """
local n = 0
local tid = tostring(math.random(1, 1000000000))
request = function()
  n = n + 1
  local v = math.random(1, %(visitors)d)
  local body = '{"visitor_id":"v' .. v .. '","metric":"purchase","value":12.5,"event_id":"'
    .. tid .. '-' .. n .. '"}'
  return wrk.format("POST", "/v1/track", {["Content-Type"]="application/json",
    ["Authorization"]="Bearer %(key)s"}, body)
end
"""


def _wrk(base: str, script: str, connections: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s",
         f.name, base], capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": ms("50"), "p90": ms("90"), "p99": ms("99"),
            "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
            "socket_errors": 0.0 if not errors else float(sum(
                int(x) for x in re.findall(r"\d+", errors.group(1))))}


def main() -> int:
    """Run the scenarios and print their figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--visitors", type=int, default=100_000)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
        return 2
    url = os.environ.get("CENTRIC_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = "bench" + uuid.uuid4().hex[:6]
    app = create_app(Settings(redis_url=url, key_prefix=prefix))
    services = app.extensions["centric"]
    key = services.api_keys.create("sdk")
    admin = app.test_client()
    admin_headers = {"Authorization": "Bearer " + services.api_keys.create("admin")}
    for name, mode in (("hero", "bandit"), ("banner", "bandit"), ("checkout", "ab")):
        body = experiment_body(key=name, mode=mode, variants=[
            {"key": "control"}, {"key": "b"}, {"key": "c"}])
        admin.post("/v1/experiments", json=body, headers=admin_headers)
        admin.post(f"/v1/experiments/{name}/start", headers=admin_headers)
    env = {"CENTRIC_REDIS_URL": url, "CENTRIC_KEY_PREFIX": prefix}
    print(f"gunicorn sync x{args.workers}, wrk {args.connections} connections, "
          f"{args.seconds}s per scenario, 3 running experiments, Redis {url}")
    try:
        with gunicorn_server(env, workers=args.workers) as base:
            params = {"visitors": args.visitors, "key": key}
            for name, script in (("decide (3 experiments)", DECIDE_LUA),
                                 ("track", TRACK_LUA),
                                 ("decide, warm sticky", DECIDE_LUA)):
                r = _wrk(base, script % params, args.connections, args.seconds)
                print(f"{name:24s} {r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  "
                      f"p90 {r['p90']:6.2f} ms  p99 {r['p99']:6.2f} ms  "
                      f"non-2xx {r['non2xx']:.0f}  socket errors {r['socket_errors']:.0f}")
    finally:
        client = redis.Redis.from_url(url)
        for k in client.scan_iter(match=f"*{{{prefix}:*", count=1000):
            client.delete(k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
