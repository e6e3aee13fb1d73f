"""`wispgate snapshots prune`: delete superseded aggregate snapshots (see ledger/snapshots.py).
`wispgate serve` does this by itself every hour; the command is for the distributed mode's
cron or a one-off clean-up."""

from __future__ import annotations

import argparse
from typing import Any

from ..settings import Settings
from .common import add_store_options


def register(commands: Any) -> None:
    snapshots = commands.add_parser("snapshots", help="aggregate snapshots")
    sub = snapshots.add_subparsers(dest="snapshots_command", required=True)
    prune = sub.add_parser("prune", help="delete snapshots a later snapshot of the same aggregate supersedes")
    add_store_options(prune)
    prune.set_defaults(handler=prune_command)


def prune_command(settings: Settings, _args: argparse.Namespace) -> int:
    from ledger.snapshots import prune_snapshots

    from ..bootstrap import build_runtime

    runtime = build_runtime(settings)
    try:
        deleted = prune_snapshots(runtime.ledger)
    finally:
        runtime.close()
    print(f"deleted {deleted:,} superseded snapshots")
    return 0
