"""wispgate distributed: `wispgate radius | rater (xN) | relay | projector | api` as separate
processes on PostgreSQL and Kafka, the way compose.yaml runs them.

Each run gets a fresh PostgreSQL database and its own topic prefix. The NAS and the plan are
created through the API; the accounts go straight into the ledger with the same command the
API calls (one HTTP round trip per account with read-your-writes through Kafka would take
longer than the measurement). "Drained" means every accounting-topic offset is tracked by
the ledger and every ledger event is projected.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import httpx
import psycopg

from .billing import billing_metrics
from .freshness import run_freshness
from .loadgen import LoadResult, run_load
from .product import PRICE_PER_GB, Process, Provisioned, charge, create_token, wait_healthy
from .target import BenchConfig, Metrics, admin_dsn, free_port, peak_rss_mib
from .wispgate_embedded import replay_rate_on
from .workload import NAS_IP, build_sessions, username

KAFKA_DATA = Path(__file__).resolve().parents[1] / ".cache" / "kafka" / "data"
PARTITIONS = 4


def _kafka_bytes(prefix: str) -> int | None:
    """Bytes on disk of this run's topics (every partition directory): blocks allocated, not
    file lengths, since the broker preallocates each active segment's offset and time indexes
    as 10 MiB sparse files (20 MiB per partition that hold a few KiB). None when the topics'
    directories are not under this checkout's broker data (a broker another checkout or
    machine runs): then the bytes at rest are not known, rather than PostgreSQL's alone."""
    partitions = [d for d in KAFKA_DATA.glob(f"{prefix}.*") if d.is_dir()] if KAFKA_DATA.is_dir() else []
    if not partitions:
        return None
    return sum(f.stat().st_blocks * 512 for d in partitions for f in d.rglob("*") if f.is_file())


def _at_rest(url: str, prefix: str) -> int | None:
    topics = _kafka_bytes(prefix)
    return None if topics is None else _db_size(url) + topics


class WispgateDistributed:
    def __init__(self, raters: int = 1) -> None:
        self.raters = raters
        self.name = f"wispgate distributed, {raters} rater{'s' if raters > 1 else ''}"

    def prepare(self, config: BenchConfig) -> None:
        admin_dsn()
        if not os.environ.get("WISPGATE_TEST_KAFKA"):
            raise RuntimeError("WISPGATE_TEST_KAFKA is not set: run `make bench` (it starts Kafka)")

    def versions(self) -> dict[str, str]:
        return {}

    def run(self, config: BenchConfig, index: int) -> Metrics:
        database = f"bench_dist{self.raters}_run{index}_{os.getpid()}"  # concurrent invocations must not collide
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{database}"')
        url = urlunsplit(urlsplit(admin_dsn())._replace(path=f"/{database}"))
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        work = config.out / "distributed" / f"r{self.raters}-run{index}"
        work.mkdir(parents=True, exist_ok=True)
        env = {"WISPGATE_DATABASE_URL": url, "WISPGATE_KAFKA_BOOTSTRAP": os.environ["WISPGATE_TEST_KAFKA"],
               "WISPGATE_KAFKA_TOPIC_PREFIX": prefix, "WISPGATE_KAFKA_PARTITIONS": str(PARTITIONS),
               "WISPGATE_RADIUS_PORT": str(free_port(socket.SOCK_DGRAM)), "WISPGATE_API_PORT": str(free_port()),
               "WISPGATE_LOG_LEVEL": "warning", "WISPGATE_MODE": "distributed"}
        api_url = f"http://127.0.0.1:{env['WISPGATE_API_PORT']}"
        # The api first: it creates the schema; roles started together race on CREATE TABLE.
        roles = ["api", "radius", *(["rater"] * self.raters), "relay", "projector"]
        processes = [Process([role], env, work / f"{role}{n}.log") for n, role in enumerate(roles)]
        try:
            processes[0].start()
            wait_healthy(api_url, processes[0])
            for process in processes[1:]:
                process.start()
                time.sleep(0.5)
            provisioned = self._provision(api_url, env, url, config)
            _wait_settled(url, env, prefix, processes)
            time.sleep(2.5)  # the radius role refreshes its NAS registry every 2 s
            size_before = _at_rest(url, prefix)
            events_before = _ledger_events(url)
            port = int(env["WISPGATE_RADIUS_PORT"])
            sessions = build_sessions(config.sessions, config.interims, seed=config.seed + index, tag=f"D{index}")
            started = time.monotonic()
            load = asyncio.run(run_load("127.0.0.1", port, config.secret, sessions, inflight=config.inflight))
            drained = _wait_settled(url, env, prefix, processes)
            fresh_load, fresh = run_freshness(
                api_url, port, config, provisioned, tag=f"G{index}")
            _wait_settled(url, env, prefix, processes)
            rss = {role.args[0] + str(n): peak_rss_mib(role.pid) for n, role in enumerate(processes)}
        finally:
            for process in processes:
                process.stop()
        loads = {f"D{index}": load, f"G{index}": fresh_load}
        missing, notes = _verify(url, loads)
        acked = load.acknowledged + fresh_load.acknowledged
        size_after = _at_rest(url, prefix)
        events = _ledger_events(url) - events_before
        replay = replay_rate_on(database_url=url, data_dir=work / "replay")
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        server_rss = rss.pop("radius1")
        return self._billing(config, index) | {
            "ingest_rate": load.rate,
            "pipeline_rate": load.acknowledged / (drained - started),
            "latency_p50": load.percentile(0.5) * 1000,
            "latency_p99": load.percentile(0.99) * 1000,
            "latency_p999": load.percentile(0.999) * 1000,
            "retransmissions": load.retransmissions,
            "failed": load.failed,
            "missing": missing,
            "freshness_p50": fresh[0] * 1000,
            "freshness_p99": fresh[1] * 1000,
            "replay_rate": replay,
            "bytes_per_record": ((size_after - size_before) / max(1, acked)
                                 if size_before is not None and size_after is not None else
                                 f"n/a (topic files not under {KAFKA_DATA}: a broker this checkout did not start)"),
            "events_per_record": events / max(1, acked),
            "rss_server": server_rss,
            "rss_other": max(rss.values()),
            "_notes": "; ".join(notes + [
                f"{self.name} run {index}: peak RSS MiB " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()),
                f"{self.name} run {index}: bytes at rest = PostgreSQL database + Kafka topic files"]),
        }

    def _billing(self, config: BenchConfig, index: int) -> Metrics:
        """Billing runs read and write PostgreSQL only (no Kafka role takes part), so they are
        timed once, on the 1-rater column's first run."""
        if index:
            return {}
        if self.raters > 1:
            reason = "n/a (billing does not involve raters: see the 1-rater column)"
            return {"billing_small": reason, "billing_large": reason, "invoice_pdfs": reason}
        return dict(billing_metrics(config.billing_sizes, database_url=admin_dsn(), pdfs=config.pdf_renders))

    def _provision(self, api_url: str, env: dict[str, str], url: str, config: BenchConfig) -> Provisioned:
        from adapters.persistence import eventstore_env
        from ledger import Ledger

        token = create_token(env)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
            deadline = time.monotonic() + 60
            while client.get("/v1/nas").status_code == 401:  # projected through Kafka first
                if time.monotonic() > deadline:
                    raise RuntimeError("the admin token never became usable")
                time.sleep(0.1)
            client.post("/v1/nas", json={"name": "bench-bng", "address": NAS_IP, "secret": config.secret,
                                         "vendor": "generic"}).raise_for_status()
            plan = client.post("/v1/plans", json={"name": "Bench 25", "currency": "USD", "monthly_fee": "25.00",
                                                  "price_per_gb": str(PRICE_PER_GB)})
            plan.raise_for_status()
        provisioned = Provisioned(token, plan.json()["id"])
        ledger = Ledger(env=eventstore_env("ledger", data_dir=Path("/nonexistent"), database_url=url))
        try:
            for index in range(config.sessions):
                user = username(index)
                account = ledger.open_account(name=user, plan_id=UUID(provisioned.plan_id), usernames=[user],
                                              opened_at=0)
                provisioned.accounts[user] = str(account.id)
        finally:
            ledger.close()
        return provisioned


def _db_size(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def _ledger_events(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM ledger_events").fetchone()
    return int(row[0]) if row else 0


def _settled(url: str, bootstrap: str, prefix: str) -> bool:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(f"{prefix}.accounting", p) for p in range(PARTITIONS)]
        ends = consumer.end_offsets(partitions)
    finally:
        consumer.close()
    with psycopg.connect(url) as conn:
        tracked = dict(conn.execute("SELECT application_name, notification_id FROM ledger_tracking").fetchall())
        last = conn.execute("SELECT max(notification_id) FROM ledger_events").fetchone()
        projected = conn.execute("SELECT position FROM projection_positions WHERE name = 'readmodels'").fetchone()
    rated = all(tracked.get(f"{tp.topic}:{tp.partition}", 0) == end for tp, end in ends.items())
    return rated and (projected[0] if projected else 0) == ((last[0] if last else 0) or 0)


def _wait_settled(url: str, env: dict[str, str], prefix: str, processes: list[Process],
                  timeout: float = 900.0) -> float:
    deadline = time.monotonic() + timeout
    while not _settled(url, env["WISPGATE_KAFKA_BOOTSTRAP"], prefix):
        dead = [p.args[0] for p in processes if not p.alive()]
        if dead:
            raise RuntimeError(f"roles exited: {dead}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not rated and projected within {timeout} s")
        time.sleep(0.1)
    return time.monotonic()


def _verify(url: str, loads: dict[str, LoadResult]) -> tuple[int, list[str]]:
    missing = 0
    notes: list[str] = []
    with psycopg.connect(url) as conn:
        for tag, load in loads.items():
            rows = conn.execute("SELECT acct_session_id, upload_bytes, download_bytes, stopped_at FROM sessions "
                                "WHERE acct_session_id LIKE %s", (f"{tag}-%",)).fetchall()
            stored = {sid: (up, down, stopped) for sid, up, down, stopped in rows}
            for packet in load.last_acked.values():
                got = stored.get(str(packet.attributes["Acct-Session-Id"]))
                if (got is None or got[0] < packet.upload or got[1] < packet.download
                        or (packet.status == "Stop" and got[2] is None)):
                    missing += 1
        receivable = sum((Decimal(r[0]) for r in conn.execute("SELECT receivable FROM balances")), Decimal(0))
    expected = sum((charge(p.upload + p.download) for ld in loads.values() for p in ld.last_acked.values()),
                   Decimal(0))
    if receivable != expected:
        notes.append(f"balances total {receivable}, the acknowledged usage prices at {expected}")
        missing += 1
    return missing, notes
