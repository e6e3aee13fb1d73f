"""Configuration: defaults give the embedded mode; a TOML file (WISPGATE_CONFIG or --config)
overrides defaults, WISPGATE_* environment variables override the file, CLI flags override
everything."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Settings:
    mode: str = "embedded"  # embedded | distributed
    data_dir: Path = Path("var")
    radius_host: str = "127.0.0.1"
    radius_port: int = 1813
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Where the event store and read models live. Empty: SQLite files under data_dir.
    # A postgresql://user:pass@host:port/db URL puts both in PostgreSQL.
    database_url: str = ""
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic_prefix: str = "wispgate"
    kafka_partitions: int = 4
    kafka_replication: int = 1
    # How long the accounting topic keeps raw records (hours). It is the distributed mode's
    # raw-record archive: a fenced site re-submits from it. The ledger topic keeps everything
    # (projectors rebuild from its start); the ledger in PostgreSQL is the source of truth.
    kafka_accounting_retention_hours: int = 168
    # Prometheus /metrics port of the distributed roles (radius, rater, relay, projector);
    # 0 serves none. Their compose healthchecks use it.
    metrics_port: int = 0
    site: str = "site-a"
    # Group commit: records arriving while a batch is being made durable join the next batch,
    # up to this many records per batch.
    radius_batch_max: int = 512
    # ... and a batch smaller than 16 records waits up to this long from its oldest record's
    # arrival for more to join it (fewer commits, and so less CPU per record, under a steady
    # moderate load; README "Connect your BNG"). 0: commit as soon as the writer is free.
    radius_commit_delay_ms: int = 5
    radius_receive_buffer: int = 8 * 1024 * 1024
    duplicate_cache_seconds: int = 30
    # `wispgate serve`: "separate" runs the RADIUS listener in its own process (its own core:
    # the rater, projector and API do not slow the acks down); "inline" runs everything in
    # one process (debugging, profiling).
    radius_process: str = "separate"  # separate | inline
    # `wispgate serve`: "separate" runs the live projector (read models) in its own process,
    # so rating and projecting use two cores; "inline" runs it as a thread (tests, debugging).
    projector_process: str = "separate"  # separate | inline
    # `wispgate serve`: "separate" runs the rater in its own process, so portal reads, the
    # enforcer and the chainer (the serve process's threads) do not share an interpreter lock
    # with rating; "inline" runs it as a thread of the serve process (debugging, profiling).
    rater_process: str = "separate"  # separate | inline
    # Niceness of `serve`'s background stages (rater, projector, enforcer, chainer,
    # housekeeping): when the cores are saturated, acknowledging the BNGs (the RADIUS process)
    # and answering the API come first, and rating catches up after. 0 keeps them equal.
    stage_nice: int = 10
    # `wispgate serve`'s rater, projector and enforcer: after a batch smaller than a full one,
    # the next starts no sooner than this many milliseconds after it, so that under a steady
    # load a batch's fixed cost (queries, commit) is shared by more records. Each record waits
    # at most this long per stage; a backlog is worked off without pause. 0: step on every wake.
    stage_gather_ms: int = 50
    # The asyncio event loop of `serve`'s parent (uvicorn, the API): "auto" takes uvloop when
    # it is installed (~20 % less CPU per portal read, bench/api_cost.py), "asyncio" the
    # standard library's, "uvloop" requires it.
    event_loop: str = "auto"  # auto | uvloop | asyncio
    log_level: str = "info"
    log_format: str = "text"  # text | json (one object per line)
    # Two sites (README, "Two sites"): the role this site takes when its store has no site
    # record yet, the other site's API URL, and a token with the replication role there.
    site_role: str = "active"  # active | standby
    peer_url: str = ""
    replication_token: str = ""
    replication_batch: int = 2000
    # Promote a standby automatically after this many seconds without reaching the peer (0: never).
    failover_after: int = 0
    # Invoices (README, "Finance"): who issues them, how customers pay, payment terms.
    seller_name: str = "WISPGate Networks"
    seller_address: str = ""
    seller_tax_id: str = ""
    payment_instructions: str = "Pay by bank transfer quoting the invoice number."
    invoice_net_days: int = 14
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    def with_overrides(self, **values: Any) -> Settings:
        clean = {k: v for k, v in values.items() if v is not None}
        return replace(self, **_coerce(clean))


_FIELD_TYPES = {f.name: f.type for f in fields(Settings)}


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in _FIELD_TYPES or name == "extra":
            raise ValueError(f"unknown setting {name!r}")
        kind = _FIELD_TYPES[name]
        if kind in ("int", int):
            try:
                out[name] = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"setting {name} must be an integer, got {value!r}") from None
        elif kind in ("Path", Path):
            out[name] = Path(value)
        else:
            out[name] = str(value)
    if "mode" in out and out["mode"] not in ("embedded", "distributed"):
        raise ValueError("mode is 'embedded' or 'distributed'")
    if "site_role" in out and out["site_role"] not in ("active", "standby"):
        raise ValueError("site_role is 'active' or 'standby'")
    if "radius_process" in out and out["radius_process"] not in ("separate", "inline"):
        raise ValueError("radius_process is 'separate' or 'inline'")
    if "projector_process" in out and out["projector_process"] not in ("separate", "inline"):
        raise ValueError("projector_process is 'separate' or 'inline'")
    if "rater_process" in out and out["rater_process"] not in ("separate", "inline"):
        raise ValueError("rater_process is 'separate' or 'inline'")
    if "event_loop" in out and out["event_loop"] not in ("auto", "uvloop", "asyncio"):
        raise ValueError("event_loop is 'auto', 'uvloop' or 'asyncio'")
    if "stage_nice" in out and not 0 <= out["stage_nice"] <= 19:
        raise ValueError("stage_nice is from 0 to 19")
    if "radius_commit_delay_ms" in out and not 0 <= out["radius_commit_delay_ms"] <= 1000:
        raise ValueError("radius_commit_delay_ms is from 0 to 1000")
    if "stage_gather_ms" in out and not 0 <= out["stage_gather_ms"] <= 1000:
        raise ValueError("stage_gather_ms is from 0 to 1000")
    return out


def load_settings(config_file: str | None = None, environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    settings = Settings()
    path = config_file or env.get("WISPGATE_CONFIG")
    if path:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
        settings = settings.with_overrides(**data.get("wispgate", data))
    from_env = {name: env[f"WISPGATE_{name.upper()}"] for name in _FIELD_TYPES
                if f"WISPGATE_{name.upper()}" in env and name != "extra"}
    return settings.with_overrides(**from_env)
