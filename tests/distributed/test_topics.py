"""Topic retention: the ledger topic keeps every message (a projector with an empty read
model rebuilds from its start, so a finite broker default would silently lose early events),
and the accounting topic keeps raw records as long as configured, re-applied at every start."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from adapters.kafka import Topics
from api.commands.distributed import create_topics
from api.settings import Settings
from tests.conftest import service

pytestmark = pytest.mark.kafka


def retention(bootstrap: str, topic: str) -> dict[str, str]:
    """The topic's retention settings set on it (not broker defaults)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                       configs=["retention.ms", "retention.bytes"])])
    finally:
        admin.close()
    return {key: entry["value"] for key, entry in found["topic"][topic].items()}


def test_ledger_topic_keeps_everything_and_accounting_retention_follows_the_setting() -> None:
    bootstrap = service("WISPGATE_TEST_KAFKA")
    topics = Topics(f"wgtopics-{uuid.uuid4().hex[:8]}")
    settings = Settings(kafka_bootstrap=bootstrap, kafka_topic_prefix=topics.prefix, kafka_partitions=2,
                        kafka_accounting_retention_hours=48)
    create_topics(settings, topics)
    try:
        check(bootstrap, settings, topics)
    finally:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.delete_topics([topics.accounting, topics.ledger])
        finally:
            admin.close()


def check(bootstrap: str, settings: Settings, topics: Topics) -> None:
    assert retention(bootstrap, topics.ledger) == {"retention.ms": "-1", "retention.bytes": "-1"}
    assert retention(bootstrap, topics.accounting) == {"retention.ms": str(48 * 3_600_000)}
    # A changed setting reaches the existing topic at the next start.
    create_topics(settings.with_overrides(kafka_accounting_retention_hours=24), topics)
    assert retention(bootstrap, topics.accounting) == {"retention.ms": str(24 * 3_600_000)}
