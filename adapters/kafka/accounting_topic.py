"""The accounting log of the distributed mode: the RADIUS adapter's sink produces each
verified record to the accounting topic and returns only when the broker acknowledged every
one of them (acks=all), so the Accounting-Response follows durability (guarantee 1).

Partitioning: key = NAS + Acct-Session-Id, so every record of a session lands in one
partition, in order, and is rated by one rater. Accounting-On/Off concerns every session of
the NAS, and those are spread over all partitions: one copy goes to each partition, where the
rater closes the sessions that partition holds (its per-partition open-session registry).

Message format: one message per partition per committed batch, its value a JSON array of
records in arrival order (the partition is the one the producer's default partitioner picks
for each record's key, so a session's records land where they always did). Per-message work
in kafka-python's sender was most of a `radius` node's time; a group commit of 64 records
is now a handful of messages. A message holding a single JSON object (the earlier format,
one record per message) is still read.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from domain.accounting import AccountingRecord

from .topics import producer_config

log = logging.getLogger(__name__)


# Under kafka-python's default max_request_size (1 MiB) with room for the batch framing.
MESSAGE_BYTES = 900 * 1024


class LogUnavailable(Exception):
    """The broker did not acknowledge the batch: nothing may be answered."""


def session_key(record: AccountingRecord) -> bytes:
    """The partitioning key: every record of one session goes to one partition."""
    return f"{record.nas_id}\x1f{record.acct_session_id}".encode()


def partition_of(key: bytes, partitions: list[int]) -> int:
    """The partition kafka-python's (and the Java client's) default partitioner gives ``key``."""
    return partitions[int(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


def encode_records(records: list[AccountingRecord]) -> list[bytes]:
    """Message values holding ``records`` in order (JSON arrays of at most MESSAGE_BYTES)."""
    values: list[bytes] = []
    part: list[bytes] = []
    size = 2
    for record in records:
        item = orjson.dumps(record.to_dict(), option=orjson.OPT_SORT_KEYS)
        if part and size + len(item) + 1 > MESSAGE_BYTES:
            values.append(b"[" + b",".join(part) + b"]")
            part, size = [], 2
        part.append(item)
        size += len(item) + 1
    if part:
        values.append(b"[" + b",".join(part) + b"]")
    return values


def decode_message(value: bytes) -> list[AccountingRecord]:
    """The records of one accounting-topic message (an array, or one record: the earlier
    format). Raises ValueError (or TypeError, KeyError) for anything that is not records."""
    data: Any = orjson.loads(value)
    if isinstance(data, list):
        return [AccountingRecord.from_dict(item) for item in data]
    return [AccountingRecord.from_dict(data)]


class AccountingTopic:
    """Callable sink ``append(records) -> list[bool]`` for the AccountingServer."""

    def __init__(self, bootstrap: str, topic: str, *, client_id: str = "wispgate-radius",
                 flush_timeout: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_id = client_id
        self.flush_timeout = flush_timeout
        self._producer: KafkaProducer | None = None
        self._partitions: list[int] = []
        self._lock = threading.Lock()

    def _connect(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(**producer_config(self.bootstrap, self.client_id))
            partitions = self._producer.partitions_for(self.topic)
            if not partitions:
                self._discard()
                raise LogUnavailable(f"topic {self.topic} has no partitions (not created?)")
            self._partitions = sorted(partitions)
        return self._producer

    def _discard(self) -> None:
        """Drop a producer after a failure: its idempotence state may be unusable, and the
        records it still holds will come again with the NAS's retransmission."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:  # closing a broken client must not hide the original error
                log.debug("error closing a failed producer", exc_info=True)

    def append(self, records: list[AccountingRecord]) -> list[bool]:
        """Produce the batch and wait for the broker; True for each record (duplicates are
        recognised later, by the rater, from the record's content key). Raises
        LogUnavailable when any record was not acknowledged."""
        with self._lock:
            try:
                producer = self._connect()
                partitions = self._partitions
                by_partition: dict[int, list[AccountingRecord]] = {}
                for record in records:
                    if record.status.closes_nas:
                        for p in partitions:
                            by_partition.setdefault(p, []).append(record)
                    else:
                        by_partition.setdefault(partition_of(session_key(record), partitions), []).append(record)
                futures = [producer.send(self.topic, value=value, partition=p)
                           for p, part in by_partition.items() for value in encode_records(part)]
                producer.flush(timeout=self.flush_timeout)
                for future in futures:
                    if not future.is_done:
                        raise LogUnavailable("the broker did not acknowledge in time")
                    if future.exception is not None:
                        raise LogUnavailable(f"the broker refused a record: {future.exception}")
            except (KafkaError, LogUnavailable, OSError) as error:
                self._discard()
                if isinstance(error, LogUnavailable):
                    raise
                raise LogUnavailable(str(error)) from error
            return [True] * len(records)

    def __call__(self, records: list[AccountingRecord]) -> list[bool]:
        return self.append(records)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
