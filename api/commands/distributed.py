"""What the distributed roles (`wispgate radius|rater|relay|projector|api`) share: the
settings they need, topic creation, SIGTERM handling and the optional /metrics port.
(No ``register``: this module is not a command.)"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from adapters import persistence
from adapters.kafka import Topics, ensure_topics

from ..bootstrap import Runtime, build_runtime
from ..settings import Settings

log = logging.getLogger("wispgate.distributed")



class NotDistributed(Exception):
    """The configuration lacks what a distributed role needs."""


def check_settings(settings: Settings) -> Topics:
    """The distributed roles run on PostgreSQL and Kafka; say clearly what is missing."""
    if not settings.uses_postgres:
        raise NotDistributed("set WISPGATE_DATABASE_URL (or --database-url) to a postgresql:// URL")
    if not settings.kafka_bootstrap:
        raise NotDistributed("set WISPGATE_KAFKA_BOOTSTRAP to the Kafka bootstrap servers (host:port,...)")
    return Topics(settings.kafka_topic_prefix)


def create_topics(settings: Settings, topics: Topics) -> None:
    """The accounting topic with the configured partitions and retention; the ledger topic
    has one partition (its order is the ledger's order) and keeps every message (a projector
    with an empty read model rebuilds from its first message)."""
    retention_ms = str(max(1, settings.kafka_accounting_retention_hours) * 3_600_000)
    ensure_topics(settings.kafka_bootstrap, {topics.accounting: settings.kafka_partitions, topics.ledger: 1},
                  settings.kafka_replication, configs={
                      topics.accounting: {"retention.ms": retention_ms},
                      topics.ledger: {"retention.ms": "-1", "retention.bytes": "-1"}})


def schema_lock(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """Serialise schema creation among the processes on the site's database
    (``adapters.persistence.schema_lock``)."""
    return persistence.schema_lock(settings.database_url)


# Connections per process of each event-store application (pool opened eagerly; overflow on
# demand). A role needs few, and every process's pool counts against PostgreSQL's
# max_connections (100 by default). WISPGATE-independent eventsourcing settings: override them
# in the environment (e.g. LEDGER_POSTGRES_POOL_SIZE=8 for a busy API).
ROLE_POOLS = {"LEDGER": (2, 4), "ACCOUNTINGLOG": (1, 1)}


def build_role_runtime(settings: Settings) -> Runtime:
    """The applications of a role, their tables created under the schema lock."""
    for app, (size, overflow) in ROLE_POOLS.items():
        os.environ.setdefault(f"{app}_POSTGRES_POOL_SIZE", str(size))
        os.environ.setdefault(f"{app}_POSTGRES_MAX_OVERFLOW", str(overflow))
    with schema_lock(settings):
        return build_runtime(settings)


def add_role_options(parser: Any) -> None:
    parser.add_argument("--kafka-bootstrap", help="($WISPGATE_KAFKA_BOOTSTRAP, default 127.0.0.1:9092)")
    parser.add_argument("--kafka-topic-prefix", help="($WISPGATE_KAFKA_TOPIC_PREFIX, default wispgate)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus /metrics port, 0 = none ($WISPGATE_METRICS_PORT)")


def role_settings(settings: Settings, args: Any) -> Settings:
    return settings.with_overrides(
        kafka_bootstrap=getattr(args, "kafka_bootstrap", None),
        kafka_topic_prefix=getattr(args, "kafka_topic_prefix", None),
        metrics_port=getattr(args, "metrics_port", None),
    )


def serve_metrics(settings: Settings) -> None:
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr="0.0.0.0")


def on_termination(stop: Callable[[], None]) -> threading.Event:
    """SIGTERM / SIGINT call ``stop`` once; the returned event is set too."""
    stopped = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stopped.set()
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stopped


def run_role(name: str, body: Callable[[Settings, Topics], int], settings: Settings) -> int:
    """Common entry: check the configuration, then run ``body``."""
    try:
        topics = check_settings(settings)
    except NotDistributed as error:
        print(f"wispgate {name}: {error}", file=sys.stderr)
        return 2
    return body(settings, topics)
