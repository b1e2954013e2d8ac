"""Speed of decide, track and /healthz against a bare Flask hello-world; Redis bytes per visitor.

Usage: python bench/decide_bench.py [--workers 2] [--connections 16] [--seconds 8]
                                    [--only hello,healthz,decide,track,memory,report]

Every HTTP figure runs under the same gunicorn settings (sync workers, as `centric serve`
starts them, prometheus multiprocess mode on) on loopback, driven by wrk
(`apt-get install wrk`). Uses CENTRIC_REDIS_URL (else 127.0.0.1:6379) under throw-away key
prefixes, one per scenario, all deleted at the end. Decide scenarios are new visitors with two
attributes in the body; half of the experiments are bandits, half A/B, 4 variants each. Each
figure is printed next to its target; runs on a shared 2-core machine vary by ±10-20 %.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server import create_app, identities  # noqa: E402
from server.embedded import EmbeddedRedis  # noqa: E402
from server.keys import SHARDS, Keyspace  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.support import experiment_body, gunicorn_server  # noqa: E402

WORKER = "server.gunicorn_worker.JsonErrorWorker"

# New visitors: every request a visitor id never seen before (thread number, counter).
DECIDE_LUA = """
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
local n = 0
request = function()
  n = n + 1
  local body = '{"visitor_id":"w' .. tid .. 'n' .. n .. '","channel":"web",'
    .. '"attributes":{"tier":"t' .. (n %% 12) .. '","country":"de"}}'
  return wrk.format("POST", "/v1/decide", {["Content-Type"]="application/json",
    ["Authorization"]="Bearer %(key)s"}, body)
end
"""

TRACK_LUA = """
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
local n = 0
local run = tostring(math.random(1, 1000000000))
request = function()
  n = n + 1
  local body = '{"visitor_id":"w' .. tid .. 'n' .. n .. '","metric":"purchase",'
    .. '"value":12.5,"event_id":"' .. run .. '-' .. tid .. '-' .. n .. '"}'
  return wrk.format("POST", "/v1/track", {["Content-Type"]="application/json",
    ["Authorization"]="Bearer %(key)s"}, body)
end
"""

GET_LUA = """
request = function() return wrk.format("GET", "%(path)s") end
"""


@dataclass(frozen=True)
class Run:
    """What wrk measured."""

    rps: float
    p50: float
    p99: float
    non2xx: int
    errors: int


def _wrk(base: str, script: str, connections: int, seconds: int) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency",
             "-s", f.name, base], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return Run(float(rps.group(1)) if rps else 0.0, ms("50"), ms("99"),
               int(non2xx.group(1)) if non2xx else 0,
               sum(int(x) for x in re.findall(r"\d+", errors.group(1))) if errors else 0)


def persona_rules(count: int) -> list[dict[str, object]]:
    """`count` persona rules over an attribute of the body (tier t0..t11)."""
    return [{"name": f"p{i}", "when": {"fact": "attributes.tier", "op": "eq",
                                       "value": f"t{i}"}} for i in range(count)]


class Deployment:
    """One throw-away key prefix with its experiments, personas and keys."""

    def __init__(self, url: str, experiments: int, rules: int) -> None:
        self.url = url
        self.prefix = "bench" + uuid.uuid4().hex[:8]
        # In-process, for set-up and the memory figures; the served app has its own settings
        # (the default budget). A generous budget here: a cold start must not fall back.
        self.app = create_app(Settings(redis_url=url, key_prefix=self.prefix,
                                       decide_budget_ms=1000.0))
        services = self.app.extensions["centric"]
        self.sdk_key = services.api_keys.create("sdk")
        self.admin = {"Authorization": "Bearer " + services.api_keys.create("admin")}
        client = self.app.test_client()
        variants = [{"key": "control"}, {"key": "b"}, {"key": "c"}, {"key": "d"}]
        for i in range(experiments):
            body = experiment_body(key=f"e{i}", mode="bandit" if i % 2 == 0 else "ab",
                                   variants=variants)
            assert client.post("/v1/experiments", json=body, headers=self.admin).status_code == 201
            assert client.post(f"/v1/experiments/e{i}/start",
                               headers=self.admin).status_code == 200
        if rules:
            r = client.put("/v1/personas", json=persona_rules(rules), headers=self.admin)
            assert r.status_code == 200, r.json

    @property
    def env(self) -> dict[str, str]:
        """The environment gunicorn serves this deployment with."""
        return {"CENTRIC_REDIS_URL": self.url, "CENTRIC_KEY_PREFIX": self.prefix}

    def drop(self) -> None:
        """Delete every key of this deployment."""
        client = redis.Redis.from_url(self.url)
        for k in client.scan_iter(match=f"*{{{self.prefix}:*", count=1000):
            client.delete(k)


# --worker-class / --threads change it
WORKER_MODEL: dict[str, str | int] = {"worker_class": WORKER, "threads": 1}


@contextmanager
def served(env: dict[str, str], workers: int, app: str = "server.wsgi:make_app()",
           ready: str = "/readyz") -> Iterator[str]:
    """Serve like `centric serve`: sync JSON-error workers, metrics of all workers, logs.

    The JSON access logs go to a file, as in production, not to this bench's terminal.
    """
    with tempfile.TemporaryDirectory() as metrics_dir, \
            tempfile.TemporaryFile("w") as logs, gunicorn_server(
                {**env, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}, workers=workers,
                worker_class=str(WORKER_MODEL["worker_class"]),
                threads=int(WORKER_MODEL["threads"]), app=app, ready_path=ready,
                stderr=logs) as base:
        yield base


def decision_reasons(base: str) -> dict[str, float]:
    """centric_decisions_total by reason, summed over the workers."""
    text = requests.get(base + "/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for reason, value in re.findall(r'centric_decisions_total\{reason="(\w+)"\} ([\d.e+]+)',
                                    text):
        totals[reason] = totals.get(reason, 0.0) + float(value)
    return totals


def line(name: str, run: Run, target: str = "") -> None:
    """One printed figure."""
    print(f"{name:38s} {run.rps:7.0f} req/s  p50 {run.p50:6.2f} ms  p99 {run.p99:6.2f} ms  "
          f"non-2xx {run.non2xx}  socket errors {run.errors}  {target}")


def verdict(ok: bool) -> str:
    """MET or MISSED."""
    return "MET" if ok else "MISSED"


def http_figures(args: argparse.Namespace, url: str, only: set[str]) -> None:
    """hello-world, /healthz, decide in four set-ups and track."""
    hello = None
    if "hello" in only or "healthz" in only or "decide" in only or "track" in only:
        with served({}, args.workers, app="bench.hello_app:make_app()", ready="/") as base:
            _wrk(base, GET_LUA % {"path": "/"}, args.connections, 2)  # warm-up
            hello = _wrk(base, GET_LUA % {"path": "/"}, args.connections, args.seconds)
        line("bare Flask hello-world", hello, "(the reference)")
    assert hello is not None
    base_rps = hello.rps
    decide_runs: dict[tuple[int, int], Run] = {}
    setups = ([tuple(int(x) for x in setup.split("x")) for setup in args.setups.split(",")]
              if "decide" in only else [])
    if "healthz" in only or "track" in only:
        setups = setups or [(5, 3)]
    for experiments, rules in setups:
        deployment = Deployment(url, experiments, rules)
        try:
            with served(deployment.env, args.workers) as base:
                params = {"key": deployment.sdk_key}
                if (experiments, rules) == setups[0] and "healthz" in only:
                    _wrk(base, GET_LUA % {"path": "/healthz"}, args.connections, 2)
                    run = _wrk(base, GET_LUA % {"path": "/healthz"}, args.connections,
                               args.seconds)
                    line("centric /healthz", run,
                         f"{run.rps / base_rps:.2f} x hello (target >= 0.9: "
                         f"{verdict(run.rps >= 0.9 * base_rps)})")
                if "decide" in only:
                    _wrk(base, DECIDE_LUA % params, args.connections, 2)  # warm-up
                    before = decision_reasons(base)
                    run = _wrk(base, DECIDE_LUA % params, args.connections, args.seconds)
                    after = decision_reasons(base)
                    decide_runs[(experiments, rules)] = run
                    made = sum(after.values()) - sum(before.values())
                    fallbacks = after.get("fallback", 0.0) - before.get("fallback", 0.0)
                    target = ""
                    if (experiments, rules) == (5, 3):
                        target = (f"{run.rps / base_rps:.2f} x hello (target >= 0.6: "
                                  f"{verdict(run.rps >= 0.6 * base_rps)}), p99 target <= 15 ms: "
                                  f"{verdict(run.p99 <= 15)}")
                    line(f"decide, {experiments} exp, {rules} persona rules", run, target)
                    share = fallbacks / made if made else 0.0
                    print(f"{'':38s} fallbacks {fallbacks:.0f} of {made:.0f} decisions "
                          f"= {share:.3%} (target <= 0.1 %: {verdict(share <= 0.001)})")
                if "track" in only and (experiments, rules) == setups[0]:
                    _wrk(base, TRACK_LUA % params, args.connections, 2)
                    run = _wrk(base, TRACK_LUA % params, args.connections, args.seconds)
                    line("track", run, f"{run.rps / base_rps:.2f} x hello (target >= 0.7: "
                                       f"{verdict(run.rps >= 0.7 * base_rps)})")
        finally:
            deployment.drop()
    if (5, 3) in decide_runs and (5, 10) in decide_runs:
        ratio = decide_runs[(5, 10)].rps / decide_runs[(5, 3)].rps
        print(f"10 persona rules / 3 rules: {ratio:.2f} (target >= 0.85: "
              f"{verdict(ratio >= 0.85)})")
    if (1, 3) in decide_runs and (10, 3) in decide_runs:
        ratio = decide_runs[(10, 3)].rps / decide_runs[(1, 3)].rps
        print(f"10 experiments / 1 experiment: {ratio:.2f} (target >= 0.7: "
              f"{verdict(ratio >= 0.7)})")


def visitor_bytes(url: str, visitors: int, experiments: int, attributes: int) -> float:
    """Mean Redis bytes per visitor: its hash (profile, attributes, assignments, dedupe), links."""
    deployment = Deployment(url, experiments, 3)
    try:
        client = deployment.app.test_client()
        sdk = {"Authorization": "Bearer " + deployment.sdk_key}
        keys = Keyspace(deployment.prefix)
        ids = [f"m{i:07d}" for i in range(visitors)]
        for i, visitor in enumerate(ids):
            attrs = {f"a{j}": f"value{i % 7}" for j in range(attributes)}
            r = client.post("/v1/decide", json={"visitor_id": visitor, "channel": "web",
                                                "attributes": attrs}, headers=sdk)
            assert r.status_code == 200, r.json
            r = client.post("/v1/track", json={"visitor_id": visitor, "metric": "purchase",
                                               "event_id": f"ev{i}"}, headers=sdk)
            assert r.status_code == 200, r.json
        store = redis.Redis.from_url(url)
        pipe = store.pipeline(transaction=False)
        for visitor in ids:
            k = keys.visitor(identities.node(identities.VISITOR, visitor))
            for name in (k.profile, k.events, k.linked):
                pipe.memory_usage(name, samples=0)
        for shard in range(SHARDS):  # the buyers index (known customers only: empty here)
            pipe.memory_usage(keys.buyers(shard), samples=0)
        total = sum(b or 0 for b in pipe.execute())
        return total / visitors
    finally:
        deployment.drop()


def memory_figures(args: argparse.Namespace, url: str) -> None:
    """Bytes per visitor for 3 experiments and 2 attributes, and how they grow."""
    n = args.memory_visitors
    main = visitor_bytes(url, n, 3, 2)
    print(f"Redis per visitor, {n} visitors, 3 experiments, 2 attributes: {main:6.0f} B "
          f"(target <= 500: {verdict(main <= 500)})")
    small = max(500, n // 5)
    base = visitor_bytes(url, small, 1, 0)
    per_exp = (visitor_bytes(url, small, 5, 0) - base) / 4
    per_attr = (visitor_bytes(url, small, 1, 4) - base) / 4
    print(f"  {small} visitors: 1 experiment, no attributes {base:.0f} B; "
          f"+{per_exp:.0f} B per experiment; +{per_attr:.0f} B per attribute")


def report_figures(url: str, repeat: int) -> None:
    """GET /report end to end for 10 variants x 40 segments x 30 epochs (12,000 cells)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from report_bench import seeded_report_app  # the report bench's own data set

    app, headers, path, drop = seeded_report_app(url)
    gc.freeze()  # as a gunicorn worker does once its app is built (server/wsgi.py)
    try:
        client = app.test_client()
        client.get(path, headers=headers)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            assert client.get(path, headers=headers).status_code == 200
            times.append(time.perf_counter() - t)
        median = statistics.median(times)
        print(f"GET /report, 12,000 cells, median of {repeat}: {median:.3f} s "
              f"(target <= 0.3 s: {verdict(median <= 0.3)})")
    finally:
        drop()


def main() -> int:
    """Run the scenarios and print their figures next to the targets."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--memory-visitors", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="hello,healthz,decide,track,memory,report")
    parser.add_argument("--setups", default="5x3,5x10,1x3,10x3",
                        help="decide set-ups, experiments x persona rules")
    parser.add_argument("--worker-class", default=WORKER, help="gunicorn -k (both apps)")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn --threads")
    args = parser.parse_args()
    WORKER_MODEL.update(worker_class=args.worker_class, threads=args.threads)
    only = set(args.only.split(","))
    url = os.environ.get("CENTRIC_REDIS_URL", "redis://127.0.0.1:6379/0")
    print(f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, gunicorn "
          f"{args.worker_class.rsplit('.', 1)[-1]} x{args.workers} (threads {args.threads}), "
          f"wrk 2 threads x {args.connections} connections, "
          f"{args.seconds} s per figure, Redis {url}")
    if only & {"hello", "healthz", "decide", "track"}:
        if not shutil.which("wrk"):
            print("wrk is needed: apt-get install -y wrk", file=sys.stderr)
            return 2
        http_figures(args, url, only)
    if "memory" in only:
        memory_figures(args, url)
        # The same on the embedded Redis that `centric serve` starts, with its settings.
        with tempfile.TemporaryDirectory() as data_dir:
            embedded = EmbeddedRedis(Path(data_dir))
            embedded.start()
            try:
                print("on the embedded Redis of `centric serve`:")
                memory_figures(args, embedded.url)
            finally:
                embedded.stop()
    if "report" in only:
        report_figures(url, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
