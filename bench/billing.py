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
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.billing_runs import catch_up, run_billing
from adapters.invoice_pdf import Seller, daily_usage, invoice_document, render_invoice
from api.bootstrap import Runtime, build_runtime
from api.settings import Settings
from domain.plans import PlanTerms
from ledger.account import Account, UsernameClaim
from ledger.billing_period import BillingPeriod
from ledger.invoice import invoice_id
from ledger.journal import receivable
from projections import queries
from rating import Fragment

PERIOD = "2026-10"


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


PERIODS = ("2026-09", PERIOD)  # billed in this order; the second is the timed steady state
LATE_EVERY = 100  # one account in LATE_EVERY gets September usage rated after its invoice


def _terms() -> PlanTerms:
    return PlanTerms.parse("USD", "30.00", "1.00", included_gb="50", bands=[
        {"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_hour": 0,
         "end_hour": 6, "price_per_gb": "0.10"}])


def _rate(period: BillingPeriod, terms: PlanTerms, plan_id: uuid.UUID, account_id: uuid.UUID, n: int,
          when: int, band: str, volume: int) -> None:
    fragment = Fragment(when, when + 3600, volume // 10, volume - volume // 10, band)
    period.rate(terms=terms, plan_id=plan_id, fragment=fragment, packs=(), session_id=uuid.uuid4(),
                incarnation=str(when), record_key=f"k{n}{band}{when}", subscriber=receivable(account_id))


def populate(runtime: Runtime, accounts: int, batch: int = 1000) -> tuple[list[uuid.UUID], uuid.UUID]:
    """Accounts with a rated month in each of ``PERIODS``, saved in batches (as the rater would
    save them). Returns the account ids and the plan's id."""
    ledger = runtime.ledger
    terms = _terms()
    plan = ledger.create_plan(name="Home 50", terms=terms, effective_from=0)
    months = [(ts(f"{label}-01T00:00:00"), ts(f"{later}-01T00:00:00"))
              for label, later in zip(PERIODS, (*PERIODS[1:], "2026-11"), strict=True)]
    ids = []
    for offset in range(0, accounts, batch):
        pending: list[Any] = []
        for n in range(offset, min(offset + batch, accounts)):
            user = f"user{n:07d}"
            account = Account(name=f"Subscriber {n}", plan_id=plan.id, currency="USD", usernames=[user],
                              opened_at=ts("2026-08-01T00:00:00"), tax_rate=Decimal("0.16"))
            pending += [account, UsernameClaim(username=user, account_id=account.id)]
            for start, end in months:
                period = BillingPeriod(account_id=account.id, start=start, end=end, currency="USD")
                day = start + (n % 28) * 86_400
                for band, hour, volume in (("standard", 12, (40 + n % 30) * 10**9), ("night", 2, (n % 7) * 10**9)):
                    _rate(period, terms, plan.id, account.id, n, day + hour * 3600, band, volume)
                pending.append(period)
            ids.append(account.id)
        ledger.save(*pending)
    catch_up(runtime)
    return ids, plan.id


def late_usage(runtime: Runtime, ids: list[uuid.UUID], plan_id: uuid.UUID) -> list[uuid.UUID]:
    """September usage of every ``LATE_EVERY``-th account, rated after September's invoice."""
    ledger, terms = runtime.ledger, _terms()
    start = ts(f"{PERIODS[0]}-01T00:00:00")
    late = ids[::LATE_EVERY]
    periods = []
    for n, account_id in enumerate(late):
        period = ledger.repository.get(BillingPeriod.create_id(account_id, start))
        _rate(period, terms, plan_id, account_id, n, start + 29 * 86_400 + 20 * 3600, "standard", 3 * 10**9)
        periods.append(period)
    for offset in range(0, len(periods), 1000):
        ledger.save(*periods[offset:offset + 1000])
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
        started, cpu = time.perf_counter(), time.process_time()
        second = run_billing(runtime, PERIOD, at=at)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        started = time.perf_counter()
        again = run_billing(runtime, PERIOD, at=at)
        rerun = time.perf_counter() - started
        assert len(second.issued) == accounts and not again.issued and again.existing == accounts
        numbers = sorted(int(n.rsplit("-", 1)[1]) for n in first.issued + second.issued)
        assert numbers == list(range(1, 2 * accounts + 1)), "numbers must be gapless"
        _check_late(runtime, ids, set(late))
        sample = runtime.ledger.get_invoice(invoice_id(ids[0], PERIOD))
        return {"accounts": accounts, "setup_s": setup, "first_s": first_s, "run_s": elapsed,
                "per_s": accounts / elapsed, "cpu_s": cpu, "rerun_s": rerun, "sample": sample, "runtime": runtime}
    except BaseException:
        runtime.close()
        raise


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
    print(f"{'accounts':>9} {'setup s':>8} {'first s':>8} {'run s':>8} {'invoices/s':>11} {'run CPU s':>10} "
          f"{'re-run s':>9} {'PDF/s':>7}")
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
                  f"{result['cpu_s']:>10.1f} {result['rerun_s']:>9.1f} {pdfs:>7.1f}", flush=True)


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
