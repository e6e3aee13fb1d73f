"""`wispgate projector`: build the read models in PostgreSQL from the ledger topic."""

from __future__ import annotations

from typing import Any

from adapters.kafka.projector import TopicProjector

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
    parser = commands.add_parser("projector", help="distributed: build the read models from the ledger topic")
    add_store_options(parser)
    add_role_options(parser)
    parser.set_defaults(handler=lambda settings, args: run_role("projector", project,
                                                                role_settings(settings, args)))


def project(settings: Settings, topics: Any) -> int:
    create_topics(settings, topics)
    runtime = build_role_runtime(settings)
    with schema_lock(settings):
        consumer = TopicProjector(runtime.projector, settings.kafka_bootstrap, topics.ledger, topics.projector_group)
    on_termination(consumer.stop)
    serve_metrics(settings)
    print(f"WISPGate projector: {topics.ledger} -> read models", flush=True)
    try:
        consumer.run()
    finally:
        consumer.close()
        runtime.close()
    return 0
