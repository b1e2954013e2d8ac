"""The `centric` command: serve, keys, identify-secret, export."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import redis

from server import clv_cli, identify_secret
from server.embedded import EmbeddedRedis, listpack_hint
from server.keys import Keyspace
from server.redis_client import connect
from server.services.api_keys import ApiKeyService
from server.settings import Settings
from server.stores.api_keys import ROLES, AmbiguousKey, ApiKeyStore
from server.stores.audit import AuditLog

LOCAL_KEYS_FILE = "local-keys.json"
WORKER_CLASS = "server.gunicorn_worker.JsonErrorWorker"


def cli_actor() -> str:
    """Who runs this command, as the audit log names them: ``cli:<OS user>``."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment nor the password database
        return "cli"


def _key_admin(client: redis.Redis, settings: Settings) -> ApiKeyService:
    """Audited key management on a client."""
    keys = Keyspace(settings.key_prefix)
    return ApiKeyService(ApiKeyStore(client, keys),
                         AuditLog(client, keys, settings.audit_maxlen))


def _local_keys(admin: ApiKeyService, data_dir: Path) -> dict[str, str]:
    """Keys for local use with the embedded Redis, kept (0600) in the data directory."""
    store = admin.store
    path = data_dir / LOCAL_KEYS_FILE
    keys: dict[str, str] = {}
    if path.exists():
        try:
            keys = json.loads(path.read_text())
        except ValueError:
            keys = {}
    changed = False
    for role in ROLES:
        if not keys.get(role) or store.role_of(keys[role]) != role:
            keys[role] = admin.create(role, "local", cli_actor())
            changed = True
    if changed:
        # Created with mode 0600 from the start: never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(keys, indent=2))
    return keys


def _identify_secret_hint(settings: Settings, shared_redis: bool) -> str:
    """Where the identify secret comes from and how to print it (never the secret itself)."""
    if settings.identify_secret:
        return "identify secret: from CENTRIC_IDENTIFY_SECRET"
    # Made here, in the master, so that every worker reads the same one.
    identify_secret.load("", settings.data_dir)
    path = settings.data_dir / identify_secret.FILE_NAME
    hint = (f"identify secret: kept in {path}; print it with "
            f"`centric identify-secret --data-dir {settings.data_dir}`")
    if shared_redis:
        hint += " (several hosts: set the same CENTRIC_IDENTIFY_SECRET on each)"
    return hint


def serve(settings: Settings) -> int:
    """Run gunicorn, starting the embedded Redis first when no external one is configured."""
    # Metrics of all workers add up through files in one directory (prometheus multiprocess
    # mode); the variable must be set before prometheus_client is first imported.
    metrics_dir = settings.data_dir / "metrics"
    if metrics_dir.exists():
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir.resolve()))
    from gunicorn.app.base import BaseApplication

    from server.app import create_app
    from server.observability import configure_logging

    configure_logging(settings.log_level)
    embedded: EmbeddedRedis | None = None
    if settings.redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir, settings.appendfsync,
                                 settings.redis_maxmemory)
        settings = settings.with_changes(redis_url=embedded.start())
    try:
        client = connect(settings.redis_url or "", settings)
        print(f"centric listening on http://{settings.host}:{settings.port}", flush=True)
        print(f"console: http://{settings.host}:{settings.port}/console/ (sign in with the "
              "admin or viewer key)", flush=True)
        if embedded is not None:
            keys = _local_keys(_key_admin(client, settings), settings.data_dir)
            print(f"embedded Redis: {embedded.url} (data in {embedded.data_dir})")
            print(f"admin key:  {keys['admin']}")
            print(f"viewer key: {keys['viewer']}")
            print(f"server key: {keys['server']}")
            print(f"sdk key:    {keys['sdk']}", flush=True)
        else:
            print("create keys with: centric keys create --role " + "|".join(ROLES), flush=True)
            hint = listpack_hint(client)
            if hint:
                print(hint, flush=True)
        print(_identify_secret_hint(settings, shared_redis=embedded is None), flush=True)
        client.close()

        class Server(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                self.cfg.set("bind", f"{settings.host}:{settings.port}")
                self.cfg.set("workers", settings.workers)
                # gunicorn's own errors (a request line over 4094 bytes, headers too large)
                # answer with the JSON envelope like the app's, not an HTML page.
                self.cfg.set("worker_class", WORKER_CLASS)
                self.cfg.set("graceful_timeout", 10)
                self.cfg.set("loglevel", settings.log_level.lower())
                self.cfg.set("child_exit", child_exit)

            def load(self) -> Any:
                # Called in each worker after the fork: own connections, own random generator.
                return create_app(settings)

        def child_exit(server: Any, worker: Any) -> None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

        watching = embedded.supervise() if embedded is not None else None
        background = _start_jobs(settings)
        master = os.getpid()
        try:
            Server().run()
        finally:
            # Workers are forks of this process and leave through this block too: only the
            # master stops the jobs process.
            if background is not None and os.getpid() == master:
                background.terminate()
                try:
                    background.wait(10)
                except subprocess.TimeoutExpired:  # in the middle of a long fit
                    background.kill()
                    background.wait()
            if watching is not None:
                watching.set()
        return 0
    finally:
        if embedded is not None:
            embedded.stop()


def _start_jobs(settings: Settings) -> subprocess.Popen[bytes] | None:
    """Start the background jobs process (fit and sweep), unless both are switched off."""
    if settings.clv_refit_hours <= 0 and settings.moment_sweep_minutes <= 0:
        return None
    # A fresh interpreter (not multiprocessing, whose exit hooks the forked gunicorn workers
    # would run on it), configured through the same CENTRIC_* variables as this process.
    return subprocess.Popen([sys.executable, "-m", "server.jobs"],
                            env={**os.environ, **settings.to_env()})


@contextmanager
def _store(settings: Settings) -> Iterator[redis.Redis]:
    """A client on the configured Redis, or on the embedded one (started briefly if down)."""
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(settings.data_dir, settings.appendfsync,
                                 settings.redis_maxmemory)
        url = embedded.start()
        if embedded.process is None:
            embedded = None  # a running server owns it; leave it alone
    client = connect(url, settings)
    try:
        yield client
    finally:
        client.close()
        if embedded is not None:
            embedded.stop()


def create_key(settings: Settings, role: str, name: str) -> str:
    """Create an API key in the configured (or embedded) Redis, recorded in the audit log."""
    with _store(settings) as client:
        return _key_admin(client, settings).create(role, name, cli_actor())


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_keys(settings: Settings, out: IO[str], as_json: bool = False,
              scan: bool = False) -> int:
    """Print every key's prefix, role, name, creation and last use; return how many."""
    with _store(settings) as client:
        infos = ApiKeyStore(client, Keyspace(settings.key_prefix)).list(scan=scan)
    if as_json:
        for info in infos:
            out.write(json.dumps({"prefix": info.shown, "role": info.role, "name": info.name,
                                  "created_at": info.created_at,
                                  "last_used": info.last_used}) + "\n")
        return len(infos)
    rows = [("PREFIX", "ROLE", "NAME", "CREATED", "LAST USED")]
    # Names with control characters (possible in old records) are quoted: a name must not
    # forge table rows.
    rows += [(i.shown, i.role, i.name if i.name.isprintable() else json.dumps(i.name),
              _when(i.created_at), _when(i.last_used)) for i in infos]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]) + "\n")
    return len(infos)


def revoke_key(settings: Settings, query: str) -> int:
    """Revoke one key given in full, by name or by display prefix; return the exit status."""
    with _store(settings) as client:
        admin = _key_admin(client, settings)
        try:
            info = admin.store.find(query)
        except AmbiguousKey as exc:
            print(f"'{query}' matches {len(exc.matches)} keys; nothing revoked. Give the key "
                  "itself or a prefix that `centric keys list` shows once:", file=sys.stderr)
            for match in exc.matches:
                print(f"  {match.shown}  {match.role}  {match.name}", file=sys.stderr)
            return 2
        if info is None or not admin.revoke(info, cli_actor()):
            print(f"no key matches '{query}'", file=sys.stderr)
            return 1
    print(f"revoked {info.shown} ({info.role}{', ' + info.name if info.name else ''}); "
          f"workers stop accepting it within CENTRIC_API_KEY_CACHE_SECONDS "
          f"({settings.api_key_cache_seconds:g} s)", file=sys.stderr)
    return 0


def export(settings: Settings, experiment_key: str, fmt: str, out: IO[str]) -> int:
    """Write an experiment's decision/outcome log to `out`; return the number of rows."""
    from server import export as log_export
    from server.scripts import Scripts
    from server.stores.experiments import ExperimentStore

    with _store(settings) as client:
        keys = Keyspace(settings.key_prefix)
        experiment = ExperimentStore(client, keys, Scripts(client)).get(experiment_key)
        if experiment is None:
            print(f"no experiment '{experiment_key}'", file=sys.stderr)
            return -1
        return log_export.write(log_export.records(client, keys, experiment), out, fmt)


def evaluate(settings: Settings, experiment_key: str, as_json: bool, out: IO[str]) -> int:
    """Print every candidate policy's IPS, SNIPS and DR value on the log; return the status."""
    from server import offline_eval
    from server.scripts import Scripts
    from server.stores.experiments import ExperimentStore

    try:
        with _store(settings) as client:
            keys = Keyspace(settings.key_prefix)
            experiment = ExperimentStore(client, keys, Scripts(client)).get(experiment_key)
            if experiment is None:
                print(f"no experiment '{experiment_key}'", file=sys.stderr)
                return 1
            evaluation = offline_eval.run(client, keys, experiment)
    except redis.RedisError as exc:
        print(f"cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if as_json:
        out.write(json.dumps(evaluation.to_dict(), indent=2) + "\n")
    else:
        out.write(offline_eval.table(evaluation))
    return 0


def migrate(settings: Settings, out: IO[str]) -> int:
    """Move visitors stored by centric 0.1 into this version's layout; return the status."""
    from server.stores.visitor_migration import migrate as migrate_visitors

    try:
        with _store(settings) as client:
            result = migrate_visitors(client, Keyspace(settings.key_prefix))
    except redis.RedisError as exc:
        print(f"cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    out.write(f"moved {result.visitors} visitors: {result.attributes} attributes, "
              f"{result.assignments} assignments\n")
    return 0


def run_jobs(settings: Settings, once: bool, force: bool, out: IO[str]) -> int:
    """Run the background jobs: once (cron), or for good (with your own gunicorn)."""
    from server import jobs
    from server.app import build_services

    if not once:
        jobs.main(settings)
        return 0
    try:
        with _store(settings) as client:
            ran = jobs.Jobs(build_services(settings, client), settings).run_due(force=force)
    except redis.RedisError as exc:
        print(f"cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    out.write(json.dumps({"ran": ran}) + "\n")
    return 0


def simulate(args: argparse.Namespace, out: IO[str]) -> int:
    """Simulate an experiment as an A/B split and as a bandit; print or write the comparison."""
    from server import planning, plots

    fmt = args.plot.suffix.lower().lstrip(".") if args.plot else ""
    try:
        plan = planning.Plan(base_rate=args.base_rate, uplift=args.uplift,
                             daily_traffic=args.daily_traffic, variants=args.variants,
                             segments=args.segments, days=args.days, runs=args.runs,
                             seed=args.seed, refresh_hours=args.refresh_hours)
        if args.plot and fmt not in ("png", "svg"):
            raise ValueError(f"--plot must name a .png or .svg file, not '{args.plot}'")
    except ValueError as exc:
        print(f"centric simulate: error: {exc}", file=sys.stderr)
        return 2
    result = planning.simulate(plan)
    if args.plot:
        try:
            args.plot.write_bytes(plots.planning(
                {planning.MODE_NAMES[m.mode]: m.decision_days() for m in result.summaries},
                {planning.MODE_NAMES[m.mode]: m.lost_by_day() for m in result.summaries},
                planning.title(plan), fmt))
        except OSError as exc:
            print(f"centric simulate: cannot write {args.plot}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
    if args.json:
        out.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        out.write(planning.table(result))
        if args.plot:
            out.write(f"plot: {args.plot}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `centric` console script."""
    parser = argparse.ArgumentParser(prog="centric", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the HTTP server (gunicorn)")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--workers", type=int)
    p_serve.add_argument("--data-dir", type=Path)
    p_keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = p_keys.add_subparsers(dest="keys_command", required=True)
    p_create = keys_sub.add_parser("create", help="create a key and print it alone on one line")
    p_create.add_argument("--role", choices=ROLES, required=True)
    p_create.add_argument("--name", default="")
    p_create.add_argument("--data-dir", type=Path)
    p_list = keys_sub.add_parser("list", help="show every key's prefix, role, name, creation "
                                              "and last use (never the key)")
    p_list.add_argument("--json", action="store_true", help="one JSON object per line")
    p_list.add_argument("--scan", action="store_true",
                        help="also find keys made before the key index existed (walks the "
                             "whole keyspace once)")
    p_list.add_argument("--data-dir", type=Path)
    p_revoke = keys_sub.add_parser("revoke", help="delete a key, given in full, by name or by "
                                                  "the prefix `keys list` shows")
    p_revoke.add_argument("key")
    p_revoke.add_argument("--data-dir", type=Path)
    p_secret = sub.add_parser("identify-secret",
                              help="print the identify secret alone on one line")
    p_secret.add_argument("--data-dir", type=Path)
    p_export = sub.add_parser("export", help="write an experiment's decision/outcome log")
    p_export.add_argument("experiment")
    p_export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p_export.add_argument("--output", type=Path, help="file to write (default: stdout)")
    p_export.add_argument("--data-dir", type=Path)
    p_eval = sub.add_parser("evaluate", help="estimate offline what other policies would have "
                                             "earned on an experiment's log (IPS, SNIPS, DR)")
    p_eval.add_argument("experiment")
    p_eval.add_argument("--json", action="store_true", help="machine-readable output")
    p_eval.add_argument("--data-dir", type=Path)
    p_migrate = sub.add_parser("migrate", help="move visitors stored by centric 0.1 into "
                                               "this version's layout (once, servers stopped)")
    p_migrate.add_argument("--data-dir", type=Path)
    p_jobs = sub.add_parser("jobs", help="run the background jobs (customer-value fit, moment "
                                         "sweep) that centric serve runs by itself")
    p_jobs.add_argument("--once", action="store_true",
                        help="run the jobs that are due, then exit (for cron)")
    p_jobs.add_argument("--force", action="store_true", help="with --once: run every job now")
    p_jobs.add_argument("--data-dir", type=Path)
    p_sim = sub.add_parser("simulate", help="plan an experiment: days to a decision, lost "
                                            "conversions and right picks, A/B split against "
                                            "the bandit, on simulated traffic")
    p_sim.add_argument("--base-rate", type=float, required=True,
                       help="the control's conversion rate, e.g. 0.04")
    p_sim.add_argument("--uplift", type=float, required=True,
                       help="relative uplift of variant 2 worth detecting, e.g. 0.10")
    p_sim.add_argument("--daily-traffic", type=float, required=True,
                       help="visitors a day entering the experiment")
    p_sim.add_argument("--variants", type=int, default=2,
                       help="arms including the control (default 2)")
    p_sim.add_argument("--segments", type=int, default=1,
                       help="persona x channel segments sharing the traffic (default 1)")
    p_sim.add_argument("--days", type=int, default=60, help="horizon in days (default 60)")
    p_sim.add_argument("--runs", type=int, default=10,
                       help="simulated experiments per mode (default 10)")
    p_sim.add_argument("--refresh-hours", type=int, default=4,
                       help="hours between bandit allocation refreshes (default 4)")
    p_sim.add_argument("--seed", type=int, default=0)
    p_sim.add_argument("--plot", type=Path, help="write a chart (.png or .svg)")
    p_sim.add_argument("--json", action="store_true", help="machine-readable output")
    clv_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "clv":
        return clv_cli.run(args, sys.stdout)
    if args.command == "simulate":
        return simulate(args, sys.stdout)

    settings = Settings.from_env()
    if getattr(args, "data_dir", None):
        settings = settings.with_changes(data_dir=args.data_dir)
    if args.command == "serve":
        overrides = {k: v for k, v in
                     {"host": args.host, "port": args.port, "workers": args.workers}.items()
                     if v is not None}
        return serve(settings.with_changes(**overrides))
    if args.command == "export":
        if args.output:
            with args.output.open("w", newline="") as f:
                count = export(settings, args.experiment, args.format, f)
        else:
            count = export(settings, args.experiment, args.format, sys.stdout)
        if count < 0:
            return 1
        print(f"{count} rows", file=sys.stderr)
        return 0
    if args.command == "evaluate":
        return evaluate(settings, args.experiment, args.json, sys.stdout)
    if args.command == "migrate":
        return migrate(settings, sys.stdout)
    if args.command == "jobs":
        return run_jobs(settings, args.once, args.force, sys.stdout)
    if args.command == "identify-secret":
        print(identify_secret.load(settings.identify_secret, settings.data_dir))
        return 0
    try:
        if args.keys_command == "list":
            list_keys(settings, sys.stdout, as_json=args.json, scan=args.scan)
            return 0
        if args.keys_command == "revoke":
            return revoke_key(settings, args.key)
        key = create_key(settings, args.role, args.name)
    except ValueError as exc:
        parser.error(str(exc))
    except redis.RedisError as exc:
        # An operator's typo in CENTRIC_REDIS_URL deserves one line, not a traceback.
        print(f"cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
