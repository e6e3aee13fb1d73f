"""`wispgate projections rebuild`: empty the read models and rebuild them from position 0."""

from __future__ import annotations

import argparse
from typing import Any

from ..settings import Settings
from .common import add_store_options


def register(commands: Any) -> None:
    projections = commands.add_parser("projections", help="read models")
    sub = projections.add_subparsers(dest="projections_command", required=True)
    rebuild = sub.add_parser("rebuild", help="rebuild every read model from the ledger log (progress on stderr)")
    add_store_options(rebuild)
    rebuild.add_argument("--batch", type=int, default=50_000,
                         help="events per transaction (larger is faster; ~3.5 KB of memory per event)")
    rebuild.set_defaults(handler=rebuild_command)


def rebuild_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.audit import Progress

    from ..bootstrap import build_runtime

    runtime = build_runtime(settings)
    try:
        head = runtime.ledger.recorder.max_notification_id() or 0
        runtime.projector.reset()
        progress = Progress(head, "projected")
        done = runtime.projector.rebuild(runtime.ledger.recorder, upto=head, window=args.batch,
                                         progress=progress.update)
        progress.finish()
    finally:
        runtime.close()
    print(f"read models rebuilt from {done:,} events (position {head})")
    return 0
