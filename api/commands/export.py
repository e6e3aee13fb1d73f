"""`wispgate export <kind> --format csv|xlsx|parquet --period YYYY-MM --out FILE`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..settings import Settings
from .billing import Bar
from .common import add_store_options


def register(commands: Any) -> None:
    from adapters.exports import FORMATS, KINDS

    export = commands.add_parser("export", help="finance exports: invoices, invoice-lines, journal, usage")
    add_store_options(export)
    export.add_argument("kind", choices=KINDS)
    export.add_argument("--format", choices=FORMATS, default="csv")
    export.add_argument("--period", help="YYYY-MM (default: everything)")
    export.add_argument("--out", type=Path, help="output file (default: <kind>-<period>.<format>)")
    export.set_defaults(handler=export_command)


def export_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.billing_runs import catch_up
    from adapters.exports import write_export

    from ..bootstrap import build_runtime

    out = args.out or Path(f"{args.kind}-{args.period or 'all'}.{args.format}")
    runtime = build_runtime(settings)
    bar = Bar("rows")
    try:
        catch_up(runtime)
        rows = write_export(runtime.engine, args.kind, args.format, out, period=args.period, progress=bar)
    except ValueError as error:
        print(f"wispgate: {error}", file=sys.stderr)
        return 2
    finally:
        runtime.close()
    bar.finish()
    print(f"{out}: {rows:,} rows")
    return 0
