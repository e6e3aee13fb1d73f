"""Where a steady-state billing run's CPU goes, per phase, in one process.

    python -m bench.billing_phases --store 10000 [--accounts 10000] [--runs 3]

Bills October for the first ``--accounts`` accounts of a cached store (``bench.billing_steady``
builds it: ``bench/out/billing-steady-<store>``) on a fresh copy, in this process (no drafting
process), and prints each phase's thread CPU per account (``time.thread_time`` around the
phase's function; the projection runs in its own thread, measured there). Runs are printed
one by one, then the median per phase. For A/B runs against another tree, run it from that
tree with ``PYTHONPATH=<tree>``. Billing a part of the 100k store measures the run with the
large store's indexes at a fraction of the time.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters import billing_runs
from api.bootstrap import build_runtime
from api.settings import Settings
from ledger import billing, late_usage
from projections.projector import ReadModelProjector

from .billing_steady import cached_store
from .billing_store import PERIODS, ts

_spent: dict[str, float] = defaultdict(float)
_lock = threading.Lock()
_depth = threading.local()


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with its thread CPU added to ``_spent[name]`` (outermost call per name)."""

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        active: set[str] = _depth.__dict__.setdefault("active", set())
        if name in active:
            return function(*args, **kwargs)
        active.add(name)
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent = time.thread_time() - started
            active.discard(name)
            with _lock:
                _spent[name] += spent

    return timed


def _instrument() -> None:
    """Wrap the phases' functions where the run looks them up."""
    run: Any = billing.BillingRun
    run.draft_batch = _timed("draft", run.draft_batch)
    run._draft = _timed("draft: pricing+encoding", run._draft)  # noqa: SLF001
    run._issue = _timed("issue", run._issue)  # noqa: SLF001
    run._record_batch = _timed("issue: storing", run._record_batch)  # noqa: SLF001
    billing.existing_ids = _timed("draft: existing invoices", billing.existing_ids)
    billing.load_aggregates = _timed("draft: accounts", billing.load_aggregates)
    billing.period_usage = _timed("draft: period usage", billing.period_usage)
    billing.late_usage = _timed("draft: late usage", billing.late_usage)
    late_usage.late_usage_exact = _timed("draft: late usage exact", late_usage.late_usage_exact)
    projector: Any = ReadModelProjector
    projector.project_recorded = _timed("project", projector.project_recorded)


def one_run(store: Path, accounts: int) -> dict[str, float]:
    """Bill the first ``accounts`` accounts of a copy of ``store``; CPU seconds per phase."""
    _spent.clear()
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(store, scratch, dirs_exist_ok=True)
        runtime = build_runtime(Settings(data_dir=Path(scratch)))
        try:
            period, at = PERIODS[1], ts("2026-11-02T06:00:00")
            billing_runs.catch_up(runtime)
            engine = runtime.engine
            every = billing_runs.finance.account_ids(engine)[:accounts]
            known = frozenset(billing_runs.finance.invoiced_accounts(engine, period))
            carried = billing_runs.finance.carried_forward(engine, period, at)
            result = billing.RunResult(period)
            started, cpu = time.perf_counter(), time.process_time()
            with billing_runs._read_models_mapped(engine):  # noqa: SLF001
                projecting = billing_runs._ProjectingThread(runtime.projector.project_recorded)  # noqa: SLF001
                try:
                    billing_runs._bill(runtime, period, every, known, carried, result, at=at,  # noqa: SLF001
                                       batch_size=1000, progress=None, draft_process=False, recorded=projecting)
                finally:
                    projecting.close()
            spent = dict(_spent) | {"process (all threads)": time.process_time() - cpu,
                                    "wall": time.perf_counter() - started}
            assert len(result.issued) == accounts, result
        finally:
            runtime.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=int, default=10_000, help="the cached store's size")
    parser.add_argument("--accounts", type=int, default=0, help="accounts billed (default: all)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    accounts = args.accounts or args.store
    store = cached_store(args.store)
    _instrument()
    runs = []
    for number in range(args.runs):
        spent = one_run(store, accounts)
        runs.append(spent)
        print(f"run {number + 1}: " + ", ".join(f"{k} {v / accounts * 1e6:.0f}" for k, v in sorted(spent.items())),
              flush=True)
    print(f"\n{accounts:,} accounts of the {args.store:,} store, us per account (median of {args.runs} runs):")
    for name in sorted({k for r in runs for k in r}):
        values = [r.get(name, 0.0) / accounts * 1e6 for r in runs]
        print(f"  {name:<28} {statistics.median(values):>8.0f}   ({', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
