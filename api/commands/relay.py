"""`wispgate relay`: publish the ledger's notification log, in order, to the ledger topic.
Several may run; one publishes (PostgreSQL advisory lock), the others stand by."""

from __future__ import annotations

from typing import Any

from adapters.audit import chain_step
from adapters.event_log import LedgerStore
from adapters.followers import Stage
from adapters.kafka.relay import LedgerRelay

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
                                topics.ledger)
        chain_store = LedgerStore.open(data_dir=settings.data_dir, database_url=settings.database_url)
    # The relay follows the whole ledger log, so it also links it into the hash chain (audit).
    chainer = Stage("chainer", chain_step(chain_store), poll_interval=0.2)
    on_termination(publisher.stop)
    serve_metrics(settings)
    print(f"WISPGate relay: ledger -> {topics.ledger}", flush=True)
    chainer.start()
    try:
        publisher.run()
    finally:
        chainer.stop()
        chainer.join(timeout=10)
        chain_store.close()
        publisher.close()
        runtime.close()
    return 0
