"""`wispgate billing run --period 2026-11` and `wispgate billing dunning`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from ..settings import Settings
from .common import add_store_options, parse_moment


class Bar:
    """A progress bar on stderr: done/total and the rate."""

    def __init__(self, unit: str, stream: TextIO = sys.stderr) -> None:
        self.unit, self.stream, self.started, self.shown = unit, stream, time.monotonic(), 0.0

    def __call__(self, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if now - self.shown < 0.2 and done != total:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        if total:
            share = min(1.0, done / total)
            self.stream.write(f"\r[{'#' * int(share * 30):<30}] {share:4.0%} {done:,}/{total:,} {self.unit} "
                              f"{rate:,.0f}/s")
        else:
            self.stream.write(f"\r{done:,} {self.unit} {rate:,.0f}/s")
        self.stream.flush()

    def finish(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def register(commands: Any) -> None:
    billing = commands.add_parser("billing", help="billing cycles: issue invoices, dunning")
    sub = billing.add_subparsers(dest="billing_command", required=True)
    run = sub.add_parser("run", help="issue every account's invoice for a period (safe to repeat)")
    add_store_options(run)
    run.add_argument("--period", required=True, help="YYYY-MM: the periods that start in this month")
    run.add_argument("--at", help="the run's date, epoch or ISO 8601 (default now); periods must have ended")
    run.add_argument("--batch", type=int, default=500, help="invoices per transaction (default 500)")
    run.set_defaults(handler=run_command)
    dunning = sub.add_parser("dunning", help="suspend accounts overdue beyond their plan's dunning days")
    add_store_options(dunning)
    dunning.add_argument("--at", help="as of (default now)")
    dunning.set_defaults(handler=dunning_command)


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.billing_runs import run_billing

    from ..bootstrap import build_runtime

    try:
        at = parse_moment(args.at)
    except ValueError as error:
        print(f"wispgate: {error}", file=sys.stderr)
        return 2
    runtime = build_runtime(settings)
    bar = Bar("accounts")
    started = time.monotonic()
    try:
        result = run_billing(runtime, args.period, at=at, batch_size=args.batch, progress=bar)
    except ValueError as error:
        print(f"wispgate: {error}", file=sys.stderr)
        return 2
    finally:
        runtime.close()
    bar.finish()
    numbers = f" ({result.issued[0]} .. {result.issued[-1]})" if result.issued else ""
    print(f"billing {result.period}: {len(result.issued)} invoices issued{numbers}, {result.existing} already "
          f"issued, {result.skipped} with nothing to bill, {result.not_ended} not ended yet "
          f"in {time.monotonic() - started:.1f} s")
    return 0


def dunning_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.billing_runs import run_dunning

    from ..bootstrap import build_runtime

    runtime = build_runtime(settings)
    try:
        suspended = run_dunning(runtime, at=parse_moment(args.at))
    finally:
        runtime.close()
    for entry in suspended:
        print(f"suspended {entry['account_id']}: invoice {entry['invoice']} {entry['days_overdue']} days overdue")
    print(f"dunning: {len(suspended)} accounts suspended")
    return 0
