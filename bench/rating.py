"""Rated records per second: the rater alone (accounting log -> sessions, billing periods,
journal postings), in-process, on SQLite and PostgreSQL. Median of several runs.

    .venv/bin/python -m bench.rating [--records 20000] [--sessions 2000] [--runs 3] [--postgres DSN]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from adapters.followers import drain, rate_step
from api.bootstrap import build_runtime
from api.settings import Settings
from domain.accounting import AccountingRecord, StatusType
from domain.plans import PlanTerms

GB = 10**9


def records(count: int, sessions: int, users: int) -> list[AccountingRecord]:
    """Interim-Updates round-robin over ``sessions`` sessions with growing counters."""
    base = 1_795_000_000
    out = []
    for index in range(count):
        session, step = index % sessions, index // sessions + 1
        at = base + step * 300
        out.append(AccountingRecord(
            nas_id="bench-nas", status=StatusType.INTERIM, event_time=at, received_at=at,
            event_timestamp_sent=True, acct_session_id=f"S{session}", username=f"user{session % users}",
            session_time=step * 300, input_octets=step * 40_000_000, output_octets=step * 400_000_000))
    return out


def run_once(settings: Settings, count: int, sessions: int) -> float:
    runtime = build_runtime(settings)
    try:
        terms = PlanTerms.parse("USD", "40", "0.50", included_gb="100",
                                tiers=[{"up_to_gb": "50", "price_per_gb": "1"},
                                       {"up_to_gb": None, "price_per_gb": "0.5"}])
        plan = runtime.ledger.create_plan(name="bench", terms=terms, effective_from=0)
        users = max(1, sessions // 2)
        for user in range(users):
            runtime.ledger.open_account(name=f"u{user}", plan_id=plan.id, usernames=[f"user{user}"], opened_at=0)
        feed = records(count, sessions, users)
        for start in range(0, len(feed), 1000):
            runtime.intake.append(feed[start:start + 1000])
        began = time.perf_counter()
        drain(rate_step(runtime.intake, runtime.ledger), timeout=3600)
        elapsed = time.perf_counter() - began
        return count / elapsed
    finally:
        runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--sessions", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", help="admin DSN: a scratch database is created and dropped per run")
    args = parser.parse_args()
    rows = []
    sqlite_rates = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            sqlite_rates.append(run_once(Settings(data_dir=Path(tmp)), args.records, args.sessions))
    rows.append(("SQLite", sqlite_rates))
    if args.postgres:
        pg_rates = []
        for _ in range(args.runs):
            name = f"bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            try:
                url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
                with tempfile.TemporaryDirectory() as tmp:
                    pg_rates.append(run_once(Settings(data_dir=Path(tmp), database_url=url), args.records,
                                             args.sessions))
            finally:
                with psycopg.connect(args.postgres, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        rows.append(("PostgreSQL", pg_rates))
    print(f"rater throughput, {args.records} Interim-Updates over {args.sessions} sessions, {args.runs} runs")
    print(f"{'store':<12} {'median rec/s':>14} {'min':>10} {'max':>10}")
    for name, rates in rows:
        print(f"{name:<12} {statistics.median(rates):>14,.0f} {min(rates):>10,.0f} {max(rates):>10,.0f}")


if __name__ == "__main__":
    main()
