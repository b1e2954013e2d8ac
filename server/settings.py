"""Settings: one frozen dataclass, read from CENTRIC_* environment variables by the CLI/WSGI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything that configures a centric process."""

    redis_url: str | None = None  # None: start/use the embedded Redis under data_dir
    data_dir: Path = Path("var")
    key_prefix: str = "centric"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    max_body_bytes: int = 256 * 1024
    refresh_interval: float = 0.5  # seconds between definition refreshes per worker
    # Seconds between bandit posterior refreshes per worker (counters read, learner fitted);
    # in the background they never hold a decide up; inline is for deterministic tests.
    posterior_interval: float = 5.0
    posterior_background: bool = True
    api_key_cache_seconds: float = 2.0
    api_key_stale_seconds: float = 3600.0  # a verified key keeps working this long in an outage
    dedupe_window_days: float = 30.0
    epoch_seconds: float = 3600.0  # allocation epochs: strata of the unbiased bandit report
    log_maxlen: int = 100_000  # approximate cap of each of an experiment's 16 log streams
    audit_maxlen: int = 10_000  # exact cap of the audit log (the oldest entries go first)
    console_session_hours: float = 8.0  # a console session ends after this long unused
    max_profile_attributes: int = 200
    purchase_metric: str = "purchase"  # the metric whose events make lifecycle facts
    refund_metric: str = "refund"  # events of this metric lower lifetime value
    max_sdk_value: float = 100_000.0  # largest |value| one event sent with an SDK key carries
    max_segments: int = 64  # persona x channel segments per experiment; beyond: other/other
    max_linked_ids: int = 32  # ids one person's profile may link
    max_profile_channels: int = 16  # channels one profile records
    channels: str = ""  # comma-separated channels decide accepts ("" = any valid name)
    clock_skew_seconds: float = 30.0  # caller timestamps this far before an assignment count
    anonymous_ttl_days: float = 400.0
    redis_socket_timeout: float = 1.0
    redis_connect_timeout: float = 0.5
    redis_max_connections: int = 64
    decide_budget_ms: float = 50.0  # a decision never waits longer on Redis than this
    outage_cooldown: float = 1.0  # after a Redis failure, decide falls back at once this long
    appendfsync: str = "everysec"  # embedded Redis durability: always | everysec | no
    redis_maxmemory: str = ""  # embedded Redis memory cap, e.g. "2gb" ("" = none)
    log_level: str = "INFO"
    access_log: bool = True  # one JSON line per request
    sdk_rate_limit: float = 2000.0  # requests/s per SDK key and worker (0 = no limit)
    sdk_rate_burst: float = 4000.0
    cors_origins: str = ""  # comma-separated origins allowed to call decide/identify/track
    identify_secret: str = ""  # signs customer ids for identify; "" = kept in data_dir
    # Background jobs of `centric serve` (one host at a time runs each, under a Redis lock):
    # refit the customer-value model this often (0 = only on POST /v1/models/clv/fit) ...
    clv_refit_hours: float = 24.0
    # ... and bring predictions and moment members up to date this often (0 = only on
    # POST /v1/moments/sweep).
    moment_sweep_minutes: float = 60.0

    def with_changes(self, **changes: Any) -> Settings:
        """Return a copy with some settings replaced."""
        return replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The CENTRIC_* variables from_env reads these settings back from."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out["CENTRIC_" + f.name.upper()] = (("1" if value else "0")
                                                if isinstance(value, bool) else str(value))
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read CENTRIC_<FIELD> variables (e.g. CENTRIC_REDIS_URL), falling back to defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("CENTRIC_" + f.name.upper())
            if raw is None or raw == "":
                continue
            default = getattr(cls(), f.name)
            if isinstance(default, bool):
                values[f.name] = raw.lower() in {"1", "true", "yes", "on"}
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, Path):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        return cls(**values)
