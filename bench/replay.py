"""Replay benchmark: rebuild every read model from position 0, timed, on a store of N
subscribers (provisioning, Start / k Interim-Updates / Stop each, a billing run for the
month and a payment for every other account), and check every read-model table equals the
live-projected one row by row.

    python -m bench.replay --sessions 4000 --runs 3 [--mode rebuild|windows|process]
        [--one-process | --two-processes] [--database-url postgresql://...]

``--mode process`` replays the way the projector follows the log live (``process`` per
batch of 1000 notifications); ``--mode rebuild`` uses ``ReadModelProjector.rebuild`` (from
position 0: the in-memory fold of ``projections/rebuild.py``, whose sessions part a second
process folds for logs of 20,000+ events when a second core is idle; ``--one-process`` keeps
it in one, ``--two-processes`` forks even on a busy machine); ``--mode
windows`` its windowed ``process`` path (50k-event windows: what a rebuild did before the fold). The
store is built once and kept (SQLite: under bench/out/, keyed by the code that shapes the
events; PostgreSQL: a database of that name), so runs compare like with like.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapters.billing_runs import run_billing
from adapters.followers import project_step, rate_step
from adapters.radius.codec import decode_accounting, encode_accounting_request
from api.bootstrap import Runtime, build_runtime
from api.settings import Settings
from domain.plans import PlanTerms

from .workload import BASE_TIME, build_sessions

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out"
MONTH_END = 1_796_083_200  # 2026-12-01T00:00:00Z, the end of the workload's month


def _fingerprint() -> str:
    """Changes whenever code that decides the stored events or the tables changes."""
    digest = hashlib.sha256()
    for folder in ("domain", "rating", "ledger"):
        for path in sorted((ROOT / folder).glob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def populate(runtime: Runtime, sessions: int, interims: int, finance: bool = True) -> None:
    """Provision, ingest and rate the workload, bill the month, take payments (unless not
    ``finance``); project it all."""
    ledger = runtime.ledger
    nas = ledger.register_nas(address="127.0.0.1", name="bng", secret="s")
    terms = PlanTerms.parse("USD", "25", "0.45", bands=[
        {"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_hour": 0,
         "end_hour": 6, "price_per_gb": "0.10"}])
    plan = ledger.create_plan(name="p", terms=terms, effective_from=0)
    workload = build_sessions(sessions, interims, seed=1, tag="R")
    accounts = [ledger.open_account(name=s.username, plan_id=plan.id, usernames=[s.username], opened_at=0)
                for s in workload]
    rounds = max(len(s.packets) for s in workload)
    order = [s.packets[r] for r in range(rounds) for s in workload if r < len(s.packets)]
    records = [decode_accounting(encode_accounting_request(1, b"s", p.attributes), b"s", nas_id=str(nas.id),
                                 received_at=BASE_TIME) for p in order]
    for offset in range(0, len(records), 64):
        runtime.intake.append(records[offset:offset + 64])
    rate, project = rate_step(runtime.intake, ledger), project_step(ledger, runtime.projector)
    while rate():
        pass
    while project():
        pass
    if not finance:
        return
    run_billing(runtime, "2026-11", at=MONTH_END)
    for n, account in enumerate(accounts[::2]):
        ledger.record_payment(idempotency_key=f"pay-{n}", account_id=account.id, amount=Decimal("20.00"),
                              currency="USD", method="bank", reference=f"r{n}", received_at=MONTH_END + 3600)
    while project():
        pass


def snapshot(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every read-model table's rows, ordered by primary key."""
    return runtime.projector.table_rows()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def replay_once(runtime: Runtime, mode: str) -> tuple[int, float, float, float]:
    """(events, seconds, CPU seconds of this process, CPU seconds of the rebuild's second
    process) of one rebuild from position 0."""
    projector, recorder = runtime.projector, runtime.ledger.recorder
    head = recorder.max_notification_id() or 0
    projector.reset()
    children = _children_cpu()
    started, cpu = time.perf_counter(), time.process_time()
    if mode in ("rebuild", "windows"):
        projector.rebuild(recorder, upto=head, fast=mode == "rebuild")
    else:
        while batch := recorder.select_notifications(start=projector.position() + 1, limit=1000):
            projector.process(batch)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return head, seconds, cpu, _children_cpu() - children  # the second process is reaped by now


def open_store(args: argparse.Namespace) -> Runtime:
    name = f"replay-{args.sessions}x{args.interims}{'' if args.finance else '-usage'}-{_fingerprint()}"
    if args.database_url:
        import psycopg

        dbname = name.replace("-", "_")
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{dbname}"')
        url = args.database_url.rsplit("/", 1)[0] + f"/{dbname}"
        runtime = build_runtime(Settings(data_dir=OUT / "replay-pg", database_url=url))
        fresh = not exists
    else:
        data_dir = OUT / name
        fresh = not (data_dir / "ready").exists()
        if fresh and data_dir.exists():
            for path in data_dir.iterdir():
                path.unlink()
        runtime = build_runtime(Settings(data_dir=data_dir))
    if fresh:
        print(f"building the store {name} (once)...", flush=True)
        populate(runtime, args.sessions, args.interims, args.finance)
        if not args.database_url:
            (OUT / name / "ready").touch()
    return runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=4000)
    parser.add_argument("--interims", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=("rebuild", "windows", "process"), default="rebuild",
                        help="rebuild: ReadModelProjector.rebuild; windows: its windowed process() path "
                             "(what rebuild did before the in-memory fold); process: batches of 1,000")
    parser.add_argument("--database-url", default="")
    parser.add_argument("--no-finance", dest="finance", action="store_false",
                        help="sessions and usage only (no billing run, no payments), like the ingest benchmarks")
    parser.add_argument("--one-process", action="store_true",
                        help="rebuild mode: fold in this process only (no second process for the sessions part)")
    parser.add_argument("--two-processes", action="store_true",
                        help="rebuild mode: fork the second process even if no core looks idle (a loaded machine)")
    parser.add_argument("--pyinstrument", action="store_true", help="print a call tree of the first run")
    args = parser.parse_args()
    if args.one_process:
        from projections import rebuild

        rebuild.PARALLEL_MIN_EVENTS = 2**62  # a log is never that long
    if args.two_processes:
        from ledger import cores

        cores.second_core_free = lambda: True
    runtime = open_store(args)
    try:
        live = snapshot(runtime)
        rates, cpu_rates = [], []
        for run in range(args.runs):
            profiler = None
            if args.pyinstrument and run == 0:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0005)
                profiler.start()
            events, seconds, cpu, second = replay_once(runtime, args.mode)
            if profiler is not None:
                profiler.stop()
                print(profiler.output_text(unicode=False, color=False)[:9000])
            rebuilt = snapshot(runtime)
            different = [name for name in live if live[name] != rebuilt[name]]
            if different:
                raise SystemExit(f"run {run}: rebuilt tables differ from the live ones: {different}")
            rates.append(events / seconds)
            cpu_rates.append(events / (cpu + second))
            print(f"run {run}: {events:,} events in {seconds:.2f} s = {events / seconds:,.0f} events/s, "
                  f"{cpu:.2f} s of CPU (+{second:.2f} s in its second process) = "
                  f"{events / (cpu + second):,.0f} events per CPU-second (all {len(live)} tables equal)", flush=True)
        print(f"{args.mode} on {'PostgreSQL' if args.database_url else 'SQLite'}: median "
              f"{statistics.median(rates):,.0f} events/s ({', '.join(f'{r:,.0f}' for r in rates)}), "
              f"{statistics.median(cpu_rates):,.0f} events per CPU-second, over {len(rates)} runs")
    finally:
        runtime.close()


if __name__ == "__main__":
    main()
