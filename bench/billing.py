"""Billing-run and invoice-PDF benchmark.

    python -m bench.billing --accounts 10000 100000 [--database-url postgresql://...] [--pdfs 50]

For each size: a fresh store with that many accounts (one plan, 16 % tax, each with two months
of rated usage in two bands). September is billed first (``first s``: every account's first
invoice, no earlier invoice to look back at); then 1 % of the accounts get usage of September
rated after its invoice (a BNG that buffered accounting), and October is billed (``run s``: the
steady state, where every account has an earlier invoice and the late-usage lookback has work to
do; the late usage must be on exactly those accounts' invoices). Both runs are timed from the
command to the read models: drafting from the aggregates, numbering, saving, and projecting the
invoices. A second run of October is timed too (it must find every invoice and issue none).
Then invoice PDFs are rendered from an issued invoice, timed. Prints a table.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from adapters.billing_runs import catch_up, run_billing
from adapters.invoice_pdf import Seller, daily_usage, invoice_document, render_invoice
from api.bootstrap import Runtime, build_runtime
from api.settings import Settings
from ledger.billing_period import BillingPeriod
from ledger.invoice import invoice_id
from projections import queries

from .billing_store import PERIODS, StoredAccounts, account_aggregates, insert_new_events, plan_terms, rate, ts

PERIOD = PERIODS[1]
LATE_EVERY = 100  # one account in LATE_EVERY gets September usage rated after its invoice


def populate(runtime: Runtime, accounts: int, batch: int = 0) -> tuple[list[uuid.UUID], uuid.UUID]:
    """Accounts with a rated month in each of ``PERIODS`` (bench/billing_store.py), written
    ``batch`` accounts per transaction (default: 5,000 on SQLite, 100 on PostgreSQL), then
    projected. Returns the account ids and the plan's id."""
    ledger = runtime.ledger
    # eventsourcing's PostgreSQL insert of one array of events grows faster than linearly with
    # its size (measured: 100 accounts' 800 events 0.15 s, 400 accounts' 1.5 s, 1,000 accounts'
    # over a minute): small inserts there.
    batch = batch or (100 if runtime.settings.database_url else 5000)
    plan = ledger.create_plan(name="Home 50", terms=plan_terms(), effective_from=0)
    stamps = StoredAccounts(ledger, plan_terms(), plan.id)
    ids = []
    for offset in range(0, accounts, batch):
        events: list[Any] = []
        for n in range(offset, min(offset + batch, accounts)):
            account_id, stored = stamps.events(n)
            ids.append(account_id)
            events += stored
        ledger.recorder.insert_events(events)
    catch_up(runtime)
    return ids, plan.id


def populate_by_saving(runtime: Runtime, accounts: int, batch: int = 1000) -> tuple[list[uuid.UUID], uuid.UUID]:
    """``populate`` the long way: each account's aggregates made and saved by the ledger (the
    reference the stamped store is compared with)."""
    ledger = runtime.ledger
    plan = ledger.create_plan(name="Home 50", terms=plan_terms(), effective_from=0)
    ids = []
    for offset in range(0, accounts, batch):
        pending: list[Any] = []
        for n in range(offset, min(offset + batch, accounts)):
            made = account_aggregates(plan_terms(), plan.id, n)
            ids.append(made[0].id)
            pending += made
        ledger.save(*pending)
    catch_up(runtime)
    return ids, plan.id


def late_usage(runtime: Runtime, ids: list[uuid.UUID], plan_id: uuid.UUID) -> list[uuid.UUID]:
    """September usage of every ``LATE_EVERY``-th account, rated after September's invoice."""
    ledger, terms = runtime.ledger, plan_terms()
    start = ts(f"{PERIODS[0]}-01T00:00:00")
    late = ids[::LATE_EVERY]
    periods = []
    for n, account_id in enumerate(late):
        period = ledger.repository.get(BillingPeriod.create_id(account_id, start))
        rate(period, terms, plan_id, account_id, n, start + 29 * 86_400 + 20 * 3600, "standard", 3 * 10**9)
        periods.append(period)
    for offset in range(0, len(periods), 5000):
        insert_new_events(ledger, periods[offset:offset + 5000])
    catch_up(runtime)
    return late


def bench_size(accounts: int, database_url: str, data_dir: Path) -> dict[str, Any]:
    runtime = build_runtime(Settings(data_dir=data_dir, database_url=database_url))
    try:
        started = time.perf_counter()
        ids, plan_id = populate(runtime, accounts)
        setup = time.perf_counter() - started
        started = time.perf_counter()
        first = run_billing(runtime, PERIODS[0], at=ts("2026-10-02T06:00:00"))
        first_s = time.perf_counter() - started
        assert len(first.issued) == accounts, first
        late = late_usage(runtime, ids, plan_id)
        at = ts("2026-11-02T06:00:00")
        started, cpu, drafting = time.perf_counter(), time.process_time(), _children_cpu()
        second = run_billing(runtime, PERIOD, at=at)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        drafting = _children_cpu() - drafting  # the drafting process (adapters/billing_drafts.py)
        started = time.perf_counter()
        again = run_billing(runtime, PERIOD, at=at)
        rerun = time.perf_counter() - started
        assert len(second.issued) == accounts and not again.issued and again.existing == accounts
        numbers = sorted(int(n.rsplit("-", 1)[1]) for n in first.issued + second.issued)
        assert numbers == list(range(1, 2 * accounts + 1)), "numbers must be gapless"
        _check_late(runtime, ids, set(late))
        sample = runtime.ledger.get_invoice(invoice_id(ids[0], PERIOD))
        return {"accounts": accounts, "setup_s": setup, "first_s": first_s, "run_s": elapsed,
                "per_s": accounts / elapsed, "cpu_s": cpu, "drafting_cpu_s": drafting, "rerun_s": rerun,
                "sample": sample, "runtime": runtime}
    except BaseException:
        runtime.close()
        raise


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (a run's drafting process)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _check_late(runtime: Runtime, ids: list[uuid.UUID], late: set[uuid.UUID]) -> None:
    """October's invoice bills September's late usage for exactly the late accounts (a sample
    of the others is checked too: nothing late on theirs)."""
    for account_id in [*late, *ids[1::max(1, len(ids) // 200)]]:
        lines = runtime.ledger.get_invoice(invoice_id(account_id, PERIOD)).lines
        found = [line for line in lines if "received after its invoice" in line["description"]]
        expected = 1 if account_id in late else 0
        assert len(found) == expected, (account_id, found)


def bench_pdf(runtime: Runtime, invoice: Any, renders: int) -> float:
    seller = Seller("Andes Wireless S.A.", "Av. Reforma 123\n06600 Mexico City", "AWI-120304-XY1",
                    "Bank transfer, CLABE 012 180 0012 3456 7890 1")
    rows = queries.usage(runtime.engine, str(invoice.account_id), "day", invoice.period_start, invoice.period_end, 400)
    usage = daily_usage(rows, invoice.period_start, invoice.period_end)
    render_invoice(invoice_document(invoice), seller, usage)  # warm up fonts
    started = time.perf_counter()
    for _ in range(renders):
        render_invoice(invoice_document(invoice), seller, usage)
    return renders / (time.perf_counter() - started)


def billing_metrics(sizes: tuple[int, ...], *, database_url: str = "", pdfs: int = 50) -> dict[str, float | str]:
    """The benchmark table's billing rows: seconds of one billing run per size (small, large),
    and invoice PDFs/s rendered from an issued invoice of the first size. Each size gets a fresh
    store (a scratch SQLite directory, or a fresh database on the PostgreSQL server of
    ``database_url``). Raises if a run issues a wrong set of invoices or numbers with gaps."""
    metrics: dict[str, float | str] = {}
    for key, size in zip(("billing_small", "billing_large"), sizes, strict=True):
        with tempfile.TemporaryDirectory() as scratch:
            url = _fresh_database(database_url, f"wg_bench_{size}_{uuid.uuid4().hex[:6]}") if database_url else ""
            try:
                result = bench_size(size, url, Path(scratch))
                try:
                    metrics[key] = result["run_s"]
                    if "invoice_pdfs" not in metrics:
                        metrics["invoice_pdfs"] = bench_pdf(result["runtime"], result["sample"], pdfs)
                finally:
                    result["runtime"].close()
            finally:
                if url:
                    _drop_database(database_url, url.rsplit("/", 1)[1])
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--database-url", default="", help="postgresql://... (default: SQLite in a temp dir)")
    parser.add_argument("--pdfs", type=int, default=50)
    args = parser.parse_args()
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"billing runs, {store}; periods {', '.join(PERIODS)}; each account: fee + 2 usage bands + tax; "
          f"1 account in {LATE_EVERY} with late usage of {PERIODS[0]}")
    # run CPU s: this process's CPU time for the run; on a shared machine it is steadier than the wall
    # clock (PostgreSQL's own CPU is not in it).
    # drafting CPU s: the run's second process, which drafts batches ahead (from 5,000 accounts).
    print(f"{'accounts':>9} {'setup s':>8} {'first s':>8} {'run s':>8} {'invoices/s':>11} {'run CPU s':>10} "
          f"{'drafting CPU s':>15} {'re-run s':>9} {'PDF/s':>7}")
    for size in args.accounts:
        with tempfile.TemporaryDirectory() as scratch:
            url = args.database_url
            if url:
                url = _fresh_database(url, f"wg_bench_{size}_{uuid.uuid4().hex[:6]}")
            result = bench_size(size, url, Path(scratch))
            try:
                pdfs = bench_pdf(result["runtime"], result["sample"], args.pdfs)
            finally:
                result["runtime"].close()
                if url:
                    _drop_database(args.database_url, url.rsplit("/", 1)[1])
            print(f"{size:>9,} {result['setup_s']:>8.1f} {result['first_s']:>8.1f} {result['run_s']:>8.1f} "
                  f"{result['per_s']:>11,.0f} "
                  f"{result['cpu_s']:>10.1f} {result['drafting_cpu_s']:>15.1f} {result['rerun_s']:>9.1f} {pdfs:>7.1f}",
                  flush=True)


def _fresh_database(dsn: str, name: str) -> str:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return dsn.rsplit("/", 1)[0] + f"/{name}"


def _drop_database(dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
