"""`wispgate site status|promote|demote`: the two-site runbook's commands. They change the
durable site record; a running `wispgate serve` on the same store follows it within a second."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..settings import Settings
from .common import add_store_options


def register(commands: Any) -> None:
    site = commands.add_parser("site", help="this site's role and epoch; failover and failback")
    sub = site.add_subparsers(dest="site_command", required=True)
    for name, help_text, handler in (
        ("status", "role, epoch, head and replication lag", status_command),
        ("promote", "make this site active at a higher epoch", promote_command),
        ("demote", "make this site a standby that follows its peer", demote_command),
    ):
        parser = sub.add_parser(name, help=help_text)
        add_store_options(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(handler=handler)


def _open(settings: Settings) -> Any:
    from adapters.event_log import LedgerStore

    return LedgerStore.open(data_dir=settings.data_dir, database_url=settings.database_url)


def _show(settings: Settings, as_json: bool) -> int:
    import time

    store = _open(settings)
    try:
        record = store.site(default_name=settings.site, default_role=settings.site_role)
        head, head_hash = store.chain_head()
        status = {"name": record.name, "role": record.role, "epoch": record.epoch, "reason": record.reason,
                  "head_position": head, "head_hash": head_hash,
                  "divergent_events_set_aside": store.divergent_count()}
        if not record.active:
            lag = max(0, record.peer_head - head)
            status["lag_positions"] = lag
            status["lag_seconds"] = max(0, int(time.time()) - record.caught_up_at) if record.caught_up_at else None
            status["resubmission_pending_from"] = record.resubmit_from or None
    finally:
        store.close()
    if as_json:
        print(json.dumps(status))
    else:
        for key, value in status.items():
            print(f"{key:<28} {value}")
    return 0


def status_command(settings: Settings, args: argparse.Namespace) -> int:
    return _show(settings, args.json)


def promote_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.shipping import promote

    store = _open(settings)
    try:
        record = store.site(default_name=settings.site, default_role=settings.site_role)
        if record.active:
            print(f"site {record.name} is already active (epoch {record.epoch})")
        else:
            record = promote(store, record, reason="promoted with `wispgate site promote`")
            print(f"site {record.name} promoted: active at epoch {record.epoch}")
    finally:
        store.close()
    return _show(settings, args.json) if args.json else 0


def demote_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.shipping import demote

    store = _open(settings)
    try:
        record = store.site(default_name=settings.site, default_role=settings.site_role)
        if not record.active:
            print(f"site {record.name} is already a standby (epoch {record.epoch})")
        else:
            record = demote(store, record, reason="demoted with `wispgate site demote`")
            print(f"site {record.name} demoted: standby at epoch {record.epoch}")
    finally:
        store.close()
    return _show(settings, args.json) if args.json else 0
