"""The real services the suite runs against are there and behave.

`make test` runs tests/services/ensure.sh and sources .cache/services.env, which sets
WISPGATE_TEST_PG_DSN, WISPGATE_TEST_PG_DSN2 and WISPGATE_TEST_KAFKA. A missing variable is an
error here, never a skip: a suite that silently skips its database and broker tests proves nothing.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import defaultdict

import pytest


def _required_env(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.fail(
            f"{name} is not set. Run `tests/services/ensure.sh && . .cache/services.env` first "
            "(`make test` does both).",
            pytrace=False,
        )
    return value


@pytest.fixture(scope="module")
def pg_dsn() -> str:
    return _required_env("WISPGATE_TEST_PG_DSN")


@pytest.fixture(scope="module")
def pg_dsn2() -> str:
    return _required_env("WISPGATE_TEST_PG_DSN2")


@pytest.fixture(scope="module")
def kafka_bootstrap() -> str:
    return _required_env("WISPGATE_TEST_KAFKA")


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_query(pg_dsn: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, connect_timeout=10) as conn:
        row = conn.execute("select current_user, current_database(), 6 * 7, version()").fetchone()
    assert row is not None
    user, database, answer, version = row
    assert user == "wispgate"
    assert database == pg_dsn.rsplit("/", 1)[-1]
    assert answer == 42
    assert version.startswith("PostgreSQL ")


@pytest.mark.postgres
def test_postgres_second_database_and_create_drop(pg_dsn: str, pg_dsn2: str) -> None:
    """The second database is reachable, and the role may create and drop databases."""
    import psycopg

    with psycopg.connect(pg_dsn2, connect_timeout=10) as conn:
        row = conn.execute("select current_database()").fetchone()
    assert row == (pg_dsn2.rsplit("/", 1)[-1],)

    name = f"wispgate_svc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, connect_timeout=10, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
        try:
            found = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            assert found == (1,)
        finally:
            conn.execute(f'drop database "{name}"')


# --------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------


def _wait_for_topic(admin, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Block until every partition of `topic` has a leader (topic creation is asynchronous)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            [info] = admin.describe_topics([topic])
            parts = info.get("partitions") or []
            if (
                info.get("error_code", 0) == 0
                and len(parts) == partitions
                and all(p.get("error_code", 0) == 0 and p.get("leader_id", -1) >= 0 for p in parts)
            ):
                return
            last = info
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} not ready after {timeout}s: {last!r}")


@pytest.mark.kafka
def test_kafka_produce_consume_round_trip(kafka_bootstrap: str) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    run = uuid.uuid4().hex[:12]
    topic = f"wispgate-svc-{run}"
    partitions = 3
    keys = [f"subscriber-{i}" for i in range(10)]
    per_key = 10  # 10 keys x 10 messages = 100

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id=f"svc-admin-{run}")
    try:
        admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)], timeout_ms=30000
        )
        _wait_for_topic(admin, topic, partitions)

        producer = KafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            client_id=f"svc-producer-{run}",
            acks="all",
            enable_idempotence=True,
        )
        sent: dict[str, list[str]] = defaultdict(list)
        partition_of_key: dict[str, set[int]] = defaultdict(set)
        try:
            futures = []
            for seq in range(per_key):
                for key in keys:
                    value = f"{key}:{seq:03d}:{run}"
                    sent[key].append(value)
                    futures.append((key, producer.send(topic, key=key.encode(), value=value.encode())))
            producer.flush(timeout=60)
            for key, fut in futures:
                meta = fut.get(timeout=30)
                partition_of_key[key].add(meta.partition)
        finally:
            producer.close(timeout=10)
        # keyed messages: one partition per key
        assert all(len(parts) == 1 for parts in partition_of_key.values()), partition_of_key
        expected = sorted(v for values in sent.values() for v in values)
        assert len(expected) == 100

        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            client_id=f"svc-consumer-{run}",
            group_id=f"wispgate-svc-{run}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        received: list[tuple[str, str, int]] = []
        try:
            deadline = time.monotonic() + 60
            while len(received) < len(expected) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=1000).values():
                    received.extend((r.key.decode(), r.value.decode(), r.partition) for r in records)
            # a little more polling: nothing beyond the 100 may show up (no duplicates)
            for records in consumer.poll(timeout_ms=1000).values():
                received.extend((r.key.decode(), r.value.decode(), r.partition) for r in records)
            consumer.commit()
        finally:
            consumer.close()

        assert sorted(value for _, value, _ in received) == expected
        got_by_key: dict[str, list[str]] = defaultdict(list)
        for key, value, partition in received:
            assert value.startswith(f"{key}:")
            assert {partition} == partition_of_key[key]
            got_by_key[key].append(value)
        for key in keys:
            assert got_by_key[key] == sent[key], f"per-key order broken for {key}"
    finally:
        with contextlib.suppress(Exception):  # cleanup only
            admin.delete_topics([topic], timeout_ms=30000)
        admin.close()
