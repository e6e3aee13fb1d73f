"""The steady-state billing run alone, on a copy of a cached store: for A/B measurements.

    python -m bench.billing_steady --accounts 2000 [--runs 3] [--draft auto|0|1] [--stop-before-run]

The first call builds the store of ``bench.billing`` (accounts, September billed, late usage of
September for 1 account in 100) under ``bench/out/billing-steady-<accounts>`` and keeps it;
every run then bills October on a fresh copy and prints its wall and CPU seconds (this process,
and the drafting process, ``adapters/billing_drafts.py``). Instruction counts, which do not move
with the machine's load, come from running it under cachegrind, whole process, minus the same
command with ``--stop-before-run`` (start-up and copying the store):

    valgrind --tool=cachegrind --cache-sim=no [--trace-children=yes] --cachegrind-out-file=/dev/null \\
        .venv/bin/python -m bench.billing_steady --accounts 2000 --draft 0
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from adapters.billing_runs import run_billing
from api.bootstrap import build_runtime
from api.settings import Settings
from ledger.application import Ledger

from .billing import LATE_EVERY, _check_late, late_usage, populate
from .billing_store import PERIODS, ts

STORES = Path(__file__).parent / "out"


def cached_store(accounts: int) -> Path:
    """The store after September's run and the late usage, built once per size."""
    store = STORES / f"billing-steady-{accounts}"
    if store.exists():
        return store
    building = store.with_suffix(".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    runtime = build_runtime(Settings(data_dir=building))
    try:
        ids, plan_id = populate(runtime, accounts)
        run_billing(runtime, PERIODS[0], at=ts("2026-10-02T06:00:00"))
        late = late_usage(runtime, ids, plan_id)
    finally:
        runtime.close()
    (building / "ids.txt").write_text("\n".join(map(str, ids)))
    (building / "late.txt").write_text("\n".join(map(str, late)))
    building.rename(store)
    return store


class _DraftedHere:
    """Counts the batches this process drafts (the drafting process's are not counted): how
    the run shared the drafting between the two."""

    def __init__(self) -> None:
        self.batches = 0
        draft = Ledger.draft_batch

        def counted(ledger: Ledger, *args: Any, **kwargs: Any) -> Any:
            self.batches += 1
            return draft(ledger, *args, **kwargs)

        Ledger.draft_batch = counted  # type: ignore[method-assign]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--draft", choices=["auto", "0", "1"], default="auto",
                        help="draft in a second process: auto (from 5,000 accounts), 0 never, 1 always")
    parser.add_argument("--stop-before-run", action="store_true", help="everything but the run (a baseline)")
    args = parser.parse_args()
    store = cached_store(args.accounts)
    options = {} if args.draft == "auto" else {"draft_process": args.draft == "1"}
    print(f"steady-state billing run, {args.accounts:,} accounts (1 in {LATE_EVERY} with late usage), SQLite")
    here = _DraftedHere()
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as scratch:
            shutil.copytree(store, scratch, dirs_exist_ok=True)
            runtime = build_runtime(Settings(data_dir=Path(scratch)))
            try:
                if args.stop_before_run:
                    print("stopped before the run")
                    continue
                here.batches = 0
                started, cpu, drafting = time.perf_counter(), time.process_time(), _children_cpu()
                result = run_billing(runtime, PERIODS[1], at=ts("2026-11-02T06:00:00"), **options)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
                drafted_here = here.batches
                drafting = _children_cpu() - drafting
                assert len(result.issued) == args.accounts, result
                ids = [uuid.UUID(line) for line in (Path(scratch) / "ids.txt").read_text().split()]
                late = {uuid.UUID(line) for line in (Path(scratch) / "late.txt").read_text().split()}
                _check_late(runtime, ids, late)
            finally:
                runtime.close()
            batches = -(-args.accounts // 1000)
            print(f"run {run + 1}: wall {wall:.2f} s, CPU {cpu:.2f} s here + {drafting:.2f} s drafting; "
                  f"{drafted_here} of {batches} batches drafted here", flush=True)


if __name__ == "__main__":
    main()
