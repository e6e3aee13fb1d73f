"""`python -m bench.distributed_probe [--raters N] [--sessions N]`: where the time goes in the
distributed pipeline, stage by stage, on the processes tests/distributed runs.

1. Throughput: N new subscribers (Start, 3 Interims, Stop) as fast as 64 requests in flight
   allow; prints the durable-ack rate, then every 2 s how far the raters (accounting offsets),
   the ledger (events), the relay and the projector have got, and the end-to-end rate (records
   acknowledged, rated and projected, per second).
2. Freshness: on an idle pipeline, one Interim at a time for 60 subscribers; the time from its
   Accounting-Response to the changed balance in GET /v1/accounts/{id}/balance (p50/p99).

Needs the test services (`. .cache/services.env`). The full comparison with FreeRADIUS and the
embedded mode is `python -m bench` (bench/distributed.py)."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

from tests.distributed.cluster import Cluster

from .loadgen import run_load
from .workload import build_sessions

SECRET = "probe-secret"


def _progress(url: str) -> tuple[int, int, int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(notification_id), 0) FROM ledger_tracking"
            "        WHERE application_name LIKE '%.accounting:%'),"
            "       (SELECT coalesce(max(notification_id), 0) FROM ledger_events),"
            "       (SELECT coalesce(max(position), 0) FROM relay_positions),"
            "       (SELECT coalesce(max(position), 0) FROM projection_positions)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def throughput(cluster: Cluster, sessions_count: int) -> None:
    sessions = build_sessions(sessions_count, 3, seed=1, tag="P")
    cluster.open_accounts([s.username for s in sessions])
    time.sleep(3)  # the radius role refreshes its NAS registry every 2 s
    stop = threading.Event()

    def monitor() -> None:
        started = time.monotonic()
        while not stop.wait(2):
            rated, events, relayed, projected = _progress(cluster.database_url)
            print(f"{time.monotonic() - started:6.1f} s  rated {rated:6d} records  ledger {events:6d} events  "
                  f"relayed {relayed:6d}  projected {projected:6d}", flush=True)

    threading.Thread(target=monitor, daemon=True).start()
    started = time.monotonic()
    load = asyncio.run(run_load("127.0.0.1", cluster.radius_port, SECRET, sessions, inflight=64))
    print(f"acknowledged {load.acknowledged} records in {load.seconds:.1f} s = {load.rate:.0f}/s "
          f"(ack p50 {load.percentile(0.5) * 1000:.0f} ms, p99 {load.percentile(0.99) * 1000:.0f} ms, "
          f"failed {load.failed})", flush=True)
    cluster.wait_settled(timeout=1800)
    elapsed = time.monotonic() - started
    stop.set()
    print(f"rated and projected after {elapsed:.1f} s: end-to-end {load.acknowledged / elapsed:.0f} records/s",
          flush=True)


def freshness(cluster: Cluster, count: int = 60) -> None:
    sessions = build_sessions(count, 1, seed=3, tag="F", stop=False, first=10_000_000)
    accounts = cluster.open_accounts([s.username for s in sessions])
    asyncio.run(run_load("127.0.0.1", cluster.radius_port, SECRET,
                         [replace(s, packets=s.packets[:1]) for s in sessions], inflight=16))
    cluster.wait_settled()
    samples = []
    with cluster.client() as client:
        def balance(user: str) -> str:
            return str(client.get(f"/v1/accounts/{accounts[user]}/balance").json()["balance_exact"])

        for session in sessions:
            before = balance(session.username)
            asyncio.run(run_load("127.0.0.1", cluster.radius_port, SECRET,
                                 [replace(session, packets=session.packets[1:2])], inflight=1))
            acked = time.monotonic()
            while balance(session.username) == before:
                if time.monotonic() - acked > 30:
                    raise SystemExit("a charge was not visible within 30 s")
                time.sleep(0.01)
            samples.append(time.monotonic() - acked)
            time.sleep(0.3)
    samples.sort()
    print(f"freshness (ack -> balance in the API), {len(samples)} samples: "
          f"p50 {samples[len(samples) // 2] * 1000:.0f} ms, "
          f"p99 {samples[min(len(samples) - 1, int(0.99 * len(samples)))] * 1000:.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.distributed_probe", description=__doc__.split("\n")[0])
    parser.add_argument("--raters", type=int, default=1)
    parser.add_argument("--sessions", type=int, default=1000)
    args = parser.parse_args()
    dsn = os.environ["WISPGATE_TEST_PG_DSN"]
    database = f"wg_probe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    cluster = Cluster(database_url=urlunsplit(urlsplit(dsn)._replace(path=f"/{database}")),
                      bootstrap=os.environ["WISPGATE_TEST_KAFKA"], prefix=f"probe-{uuid.uuid4().hex[:6]}",
                      log_dir=Path(tempfile.mkdtemp(prefix="wispgate-probe-")))
    print(f"{args.raters} rater(s), {args.sessions} subscribers; role logs in {cluster.log_dir}", flush=True)
    try:
        cluster.start_all()
        for extra in range(2, args.raters + 1):
            cluster.start("rater", name=f"rater-{extra}")
        cluster.provision_site(SECRET, "0.30")
        throughput(cluster, args.sessions)
        freshness(cluster)
    except httpx.HTTPError as error:
        raise SystemExit(f"API error: {error}") from error
    finally:
        cluster.stop_all()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
