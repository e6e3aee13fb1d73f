"""`wispgate rater`: consume the accounting topic (consumer group), rate records into the
PostgreSQL ledger. Run as many as there are partitions; they share the work."""

from __future__ import annotations

import socket
from typing import Any

from adapters.event_log import LedgerStore
from adapters.kafka.rater import Rater
from adapters.site_gate import SiteWriteLock

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
    parser = commands.add_parser("rater", help="distributed: rate the accounting topic into the ledger")
    add_store_options(parser)
    add_role_options(parser)
    parser.set_defaults(handler=lambda settings, args: run_role("rater", rate, role_settings(settings, args)))


def rate(settings: Settings, topics: Any) -> int:
    create_topics(settings, topics)
    runtime = build_role_runtime(settings)
    with schema_lock(settings):
        LedgerStore.open(data_dir=settings.data_dir, database_url=settings.database_url).close()  # site_state
    # Rates only while the site is active; the site controller (in `relay`) can stop it.
    rater = Rater(runtime.ledger, settings.kafka_bootstrap, topics.accounting, topics.rater_group,
                  client_id=f"wispgate-rater-{socket.gethostname()}", gate=SiteWriteLock(settings.database_url))
    on_termination(rater.stop)
    serve_metrics(settings)
    print(f"WISPGate rater: {topics.accounting} -> ledger (group {topics.rater_group})", flush=True)
    try:
        rater.run()
    finally:
        rater.close()
        runtime.close()
    return 0
