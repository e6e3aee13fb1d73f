"""`wispgate relay`: publish the ledger's notification log, in order, to the ledger topic.
Several may run; one publishes (PostgreSQL advisory lock), the others stand by."""

from __future__ import annotations

from typing import Any

from adapters.followers import Stage
from adapters.kafka.relay import LedgerRelay
from adapters.kafka.site import DistributedSiteController
from adapters.site_gate import SiteWriteLock
from ledger.snapshots import prune_snapshots

from ..settings import Settings
from .common import add_store_options
from .distributed import (
    add_role_options,
    build_role_runtime,
    create_topics,
    on_termination,
    role_settings,
    run_role,
    schema_lock,
    serve_metrics,
)


def register(commands: Any) -> None:
    parser = commands.add_parser("relay", help="distributed: publish ledger events to the ledger topic")
    add_store_options(parser)
    add_role_options(parser)
    parser.set_defaults(handler=lambda settings, args: run_role("relay", relay, role_settings(settings, args)))


def relay(settings: Settings, topics: Any) -> int:
    create_topics(settings, topics)
    runtime = build_role_runtime(settings)
    with schema_lock(settings):
        publisher = LedgerRelay(runtime.ledger, runtime.engine, settings.database_url, settings.kafka_bootstrap,
                                topics.ledger, gate=SiteWriteLock(settings.database_url))
        # The relay follows the whole ledger log: its site controller (one per site, among
        # several relays) links it into the hash chain, and, with two sites, ships, fences
        # and promotes (adapters.kafka.site).
        controller = DistributedSiteController(runtime, topics)
    on_termination(publisher.stop)
    serve_metrics(settings)
    print(f"WISPGate relay: ledger -> {topics.ledger}; site controller for {settings.site}", flush=True)
    controller.start()
    # Superseded snapshots are most of the bytes at rest of long sessions (ledger/snapshots.py);
    # every relay may prune (the statement is idempotent).
    housekeeping = Stage("housekeeping", lambda: 1 if prune_snapshots(runtime.ledger) else 0, poll_interval=3600)
    housekeeping.start()
    try:
        publisher.run()
    finally:
        housekeeping.stop()
        controller.stop()
        publisher.close()
        runtime.close()
    return 0
