"""`wispgate sessions by-ip --ip 100.64.1.7 --at 2026-11-18T12:00:00Z`: who had an IP at a moment."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from datetime import UTC, datetime
from typing import Any

from ..settings import Settings
from .common import add_store_options, parse_moment


def register(commands: Any) -> None:
    sessions = commands.add_parser("sessions", help="sessions read model queries")
    sub = sessions.add_subparsers(dest="sessions_command", required=True)
    by_ip = sub.add_parser("by-ip", help="who had a Framed-IP-Address at a moment (abuse, lawful requests)")
    add_store_options(by_ip)
    by_ip.add_argument("--ip", required=True)
    by_ip.add_argument("--at", required=True, help="epoch seconds or ISO 8601")
    by_ip.set_defaults(handler=by_ip_command)


def _iso(epoch: int | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def by_ip_command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.billing_runs import catch_up
    from projections import queries

    from ..bootstrap import build_runtime

    try:
        ip, at = str(ipaddress.ip_address(args.ip)), parse_moment(args.at)
    except ValueError as error:
        print(f"wispgate: {error}", file=sys.stderr)
        return 2
    runtime = build_runtime(settings)
    try:
        catch_up(runtime)
        found = queries.who_had_ip(runtime.engine, ip, at)
    finally:
        runtime.close()
    for row in found:
        print(f"{row['username'] or '?'}\taccount {row['account_id'] or '-'}\tNAS {row['nas_id']}\t"
              f"{_iso(row['started_at'])} .. {_iso(row['stopped_at'])}\tsession {row['acct_session_id']}")
    if not found:
        print(f"nobody had {ip} at {_iso(at)}")
    return 0 if found else 1
