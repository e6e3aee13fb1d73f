"""CPU per accounting record of the `serve` parent's follower stages that come after rating:
the enforcer (`adapters.enforcer.Enforcer.step`) and the chainer (`adapters.audit.chain_step`).

One ledger is built once (SQLite, or PostgreSQL with --database-url): accounts on the bench's
postpaid plan, a share of them (--prepaid) on a funded prepaid plan (so the enforcer has to
look at their balance, and finds nothing to do), the bench workload rated and projected. Then
each run starts a fresh enforcer (cold caches, as after a restart) and chainer from position
0 and times draining each with time.process_time. Medians over --runs.

`python -m bench.parent_stages [--sessions 2000] [--runs 3] [--prepaid 0.1] [--database-url URL]`
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from sqlalchemy import text

from adapters.audit import chain_step
from adapters.enforcer import NAME as ENFORCER
from adapters.enforcer import Enforcer
from adapters.event_log import LedgerStore, log_chain
from adapters.followers import project_step, rate_step
from adapters.radius.codec import decode_accounting, encode_accounting_request
from api.bootstrap import build_runtime
from api.settings import Settings
from domain.plans import PlanTerms

from .workload import build_sessions


def _cpu_to_drain(step: Callable[[], int]) -> tuple[float, int]:
    """CPU seconds this process spends running ``step`` until it has nothing left, and the
    number of items it handled."""
    handled = 0
    started = time.process_time()
    while done := step():
        handled += done
    return time.process_time() - started, handled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--interims", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prepaid", type=float, default=0.1, help="share of accounts on a prepaid plan")
    parser.add_argument("--database-url", default="", help="postgresql://... (a fresh, empty database)")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="wispgate-parent-stages-"))
    runtime = build_runtime(Settings(data_dir=data_dir, database_url=args.database_url))
    store = LedgerStore.open(data_dir=data_dir, database_url=args.database_url)
    try:
        ledger = runtime.ledger
        nas = ledger.register_nas(address="127.0.0.1", name="bng", secret="s")
        postpaid = ledger.create_plan(name="post", terms=PlanTerms.parse("USD", "25", "0.45"), effective_from=0)
        prepaid = ledger.create_plan(name="pre", terms=PlanTerms.parse("USD", "0", "0.45", payment_model="prepaid"),
                                     effective_from=0)
        sessions = build_sessions(args.sessions, args.interims, seed=1, tag="E")
        every = round(1 / args.prepaid) if args.prepaid > 0 else 0
        for index, session in enumerate(sessions):
            on_prepaid = bool(every) and index % every == 0
            account = ledger.open_account(name=session.username, plan_id=(prepaid if on_prepaid else postpaid).id,
                                          usernames=[session.username], opened_at=0)
            if on_prepaid:  # funded well beyond the workload's usage: checked, never cut off
                ledger.record_payment(idempotency_key=f"fund-{index}", account_id=account.id,
                                      amount=Decimal("1000000"), currency="USD", method="cash", reference="",
                                      received_at=0)
        rounds = max(len(s.packets) for s in sessions)
        order = [s.packets[r] for r in range(rounds) for s in sessions if r < len(s.packets)]
        records = [decode_accounting(encode_accounting_request(1, b"s", p.attributes), b"s", nas_id=str(nas.id),
                                     received_at=1_795_000_000) for p in order]
        for offset in range(0, len(records), 64):
            runtime.intake.append(records[offset:offset + 64])
        rate, project = rate_step(runtime.intake, ledger), project_step(ledger, runtime.projector)
        while rate() + project():
            pass
        events = ledger.recorder.max_notification_id() or 0
        print(f"{args.sessions} sessions, {len(records):,} records, {events:,} ledger events "
              f"({events / len(records):.2f} per record), prepaid share {args.prepaid:.0%}, "
              f"{'PostgreSQL' if args.database_url else 'SQLite'}", flush=True)
        enforcer_us, chainer_us = [], []
        for run in range(args.runs):
            with store.engine.begin() as conn:  # both stages start over from position 0
                conn.execute(text(f"DELETE FROM {store.events.tracking} WHERE application_name = :n"),
                             {"n": ENFORCER})
                conn.execute(log_chain.delete())
            enforcer = Enforcer(ledger, runtime.engine, runtime.projector)
            cpu, handled = _cpu_to_drain(enforcer.step)
            assert handled == events, (handled, events)
            enforcer_us.append(cpu / len(records) * 1e6)
            cpu, handled = _cpu_to_drain(chain_step(store))
            assert handled == events, (handled, events)
            chainer_us.append(cpu / len(records) * 1e6)
            print(f"run {run}: enforcer {enforcer_us[-1]:,.1f} us/record, chainer {chainer_us[-1]:,.1f} us/record",
                  flush=True)
        print(f"medians of {args.runs}: enforcer {statistics.median(enforcer_us):,.1f} us/record, "
              f"chainer {statistics.median(chainer_us):,.1f} us/record (CPU)")
    finally:
        store.close()
        runtime.close()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
