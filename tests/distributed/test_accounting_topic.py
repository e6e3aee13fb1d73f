"""The accounting topic's messages (adapters/kafka/accounting_topic.py), on the real broker:
one message per partition per committed batch, each session's records in the partition the
default partitioner gives its key and in arrival order, an Accounting-On/Off in every
partition at its place, and messages of the earlier one-record format still read."""

from __future__ import annotations

import random
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from adapters.kafka import Topics
from adapters.kafka.accounting_topic import (
    MESSAGE_BYTES,
    AccountingTopic,
    decode_message,
    encode_records,
    session_key,
)
from adapters.kafka.rater import decode_records
from api.commands.distributed import create_topics
from api.settings import Settings
from domain.accounting import AccountingRecord, StatusType
from tests.conftest import service

pytestmark = pytest.mark.kafka

PARTITIONS = 4


def record(session: str, status: StatusType, at: int, octets: int = 0) -> AccountingRecord:
    return AccountingRecord(nas_id="nas-1", status=status, event_time=at, received_at=at, event_timestamp_sent=True,
                            acct_session_id="" if status.closes_nas else session, username=f"u-{session}",
                            session_time=0, output_octets=octets, extra={"Class": "gold"})


def messages(bootstrap: str, topic: str) -> dict[int, list[bytes]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        found: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for tp, batch in consumer.poll(timeout_ms=1000).items():
                found[tp.partition] += [m.value for m in batch]
        return found
    finally:
        consumer.close()


def test_a_batch_is_one_message_per_partition_with_sessions_in_order_and_nas_events_everywhere() -> None:
    seed = random.SystemRandom().randrange(10**6)
    print(f"seed {seed}")
    rng = random.Random(seed)
    bootstrap = service("WISPGATE_TEST_KAFKA")
    topics = Topics(f"wgacct-{uuid.uuid4().hex[:8]}")
    create_topics(Settings(kafka_bootstrap=bootstrap, kafka_topic_prefix=topics.prefix,
                           kafka_partitions=PARTITIONS), topics)
    sink = AccountingTopic(bootstrap, topics.accounting)
    plain = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        sessions = [f"S{i}" for i in range(40)]
        batch = [record(rng.choice(sessions), StatusType.INTERIM, 1000 + i, i) for i in range(300)]
        batch.insert(150, record("", StatusType.ACCOUNTING_ON, 5000))
        assert sink.append(batch) == [True] * len(batch)
        # Where a plain keyed message of each session lands: the default partitioner's choice.
        expected_partition = {}
        for session in sessions:
            sent = plain.send(topics.accounting, key=session_key(record(session, StatusType.INTERIM, 0)),
                              value=record(session, StatusType.INTERIM, 0).to_json())
            expected_partition[session] = sent.get(timeout=10).partition
        plain.flush()

        found = messages(bootstrap, topics.accounting)
        for partition, values in found.items():
            batched, singles = values[0], values[1:]  # the batch's message, then the plain ones
            assert batched.startswith(b"[")
            records = decode_message(batched)
            assert [r.acct_session_id for r in records if not r.status.closes_nas] == [
                r.acct_session_id for r in batch
                if not r.status.closes_nas and expected_partition[r.acct_session_id] == partition]
            assert records == [r for r in batch if r.status.closes_nas
                               or expected_partition[r.acct_session_id] == partition]
            assert sum(r.status is StatusType.ACCOUNTING_ON for r in records) == 1
            for value in singles:  # the earlier format, one record per message, still read
                (single,) = decode_message(value)
                assert expected_partition[single.acct_session_id] == partition
    finally:
        sink.close()
        plain.close()
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.delete_topics([topics.accounting, topics.ledger])
        finally:
            admin.close()


def test_large_batches_are_split_under_the_message_limit_and_read_back_whole() -> None:
    big = [record(f"L{i}", StatusType.INTERIM, i, i) for i in range(4000)]
    for r in big:
        r.extra.update({"Filler": "x" * 200})
    values = encode_records(big)
    assert len(values) > 1 and all(len(v) <= MESSAGE_BYTES for v in values)
    assert [r for v in values for r in decode_message(v)] == big


def test_a_message_that_is_not_records_is_dropped_and_the_rest_of_the_batch_kept() -> None:
    class Message:
        def __init__(self, value: bytes, offset: int) -> None:
            self.value, self.offset, self.topic, self.partition = value, offset, "t", 0

    good = encode_records([record("G1", StatusType.START, 1), record("G2", StatusType.STOP, 2)])[0]
    got = decode_records([Message(b"not json", 0), Message(good, 1), Message(b'{"status": "nonsense"}', 2),
                          Message(record("G3", StatusType.INTERIM, 3).to_json(), 3)])
    assert [r.acct_session_id for r in got] == ["G1", "G2", "G3"]
