"""The accounting log of the distributed mode: the RADIUS adapter's sink produces each
verified record to the accounting topic and returns only when the broker acknowledged every
one of them (acks=all), so the Accounting-Response follows durability (guarantee 1).

Partitioning: key = NAS + Acct-Session-Id, so every record of a session lands in one
partition, in order, and is rated by one rater. Accounting-On/Off concerns every session of
the NAS, and those are spread over all partitions: one copy goes to each partition, where the
rater closes the sessions that partition holds (its per-partition open-session registry).
"""

from __future__ import annotations

import logging
import threading

from kafka import KafkaProducer
from kafka.errors import KafkaError

from domain.accounting import AccountingRecord

from .topics import producer_config

log = logging.getLogger(__name__)


class LogUnavailable(Exception):
    """The broker did not acknowledge the batch: nothing may be answered."""


def session_key(record: AccountingRecord) -> bytes:
    """The partitioning key: every record of one session goes to one partition."""
    return f"{record.nas_id}\x1f{record.acct_session_id}".encode()


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
                futures = []
                for record in records:
                    value = record.to_json()
                    if record.status.closes_nas:
                        futures += [producer.send(self.topic, value=value, key=session_key(record), partition=p)
                                    for p in self._partitions]
                    else:
                        futures.append(producer.send(self.topic, value=value, key=session_key(record)))
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
