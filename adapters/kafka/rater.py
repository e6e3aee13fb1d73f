"""The rater of the distributed mode: a consumer group over the accounting topic.

Each partition's position lives in the ledger's tracking table (upstream name
``topic:partition``, value = next offset to read, so offset 0 is representable), written in
the same transaction as the events its records produced. On assignment the consumer seeks to
that position; Kafka's committed offsets are never used. A second rater joining the group
takes partitions over from exactly where the first one's last commit left them; a batch the
first one was still applying either commits before the revocation completes, or fails on the
tracking row / aggregate versions (optimistic concurrency) and is applied by the new owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from eventsourcing.persistence import Tracking
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter

from adapters.site_gate import SiteWriteLock
from domain.accounting import AccountingRecord
from ledger import Ledger

from .accounting_topic import decode_message
from .topics import GroupWatchdog, consumer_config, replace_consumer, wait_for_metadata

log = logging.getLogger(__name__)

DROPPED = Counter("wispgate_rater_messages_dropped_total",
                  "Accounting-topic messages that are not accounting records (skipped)")
APPLIED = Counter("wispgate_rater_messages_applied_total", "Accounting-topic messages applied")


def upstream_name(topic: str, partition: int) -> str:
    """The tracking name of one accounting-topic partition in the ledger."""
    return f"{topic}:{partition}"


def decode_records(messages: list[ConsumerRecord]) -> list[AccountingRecord]:
    """Records of a partition batch, in order; a message that is not records is dropped and counted
    (its offset is still tracked, so it is not read again)."""
    records = []
    for message in messages:
        try:
            records += decode_message(message.value)
        except (ValueError, TypeError, KeyError):
            DROPPED.inc()
            log.error("dropping undecodable message at %s:%d offset %d",
                      message.topic, message.partition, message.offset)
    return records


class _Assignment(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    def __init__(self, rater: Rater) -> None:
        self.rater = rater

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Another rater may now write these sessions: cached aggregates would be stale.
        self.rater.ledger.forget_live_sessions()
        if revoked:
            log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.rater.ledger.forget_live_sessions()
        if assigned:
            log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
        try:
            self.rater.seek_to_tracked(assigned)
        except Exception:
            # The database is unavailable: apply nothing until the seek succeeds.
            log.exception("could not read the tracked positions; will retry")
            self.rater.reseek = True


class Rater:
    """Consumes the accounting topic and applies each partition batch atomically with its
    offset. ``run`` loops until ``stop``; every failure leads to a re-seek from the tracked
    positions, so nothing is skipped and nothing is applied twice."""

    def __init__(self, ledger: Ledger, bootstrap: str, topic: str, group: str, *,
                 client_id: str = "wispgate-rater", max_records: int = 2000,
                 gate: SiteWriteLock | None = None) -> None:
        self.ledger = ledger
        # Two sites: each batch holds the site's write lock shared and is applied only while
        # the site is active (see adapters.site_gate.SiteWriteLock).
        self.gate = gate
        self.site_stamp: tuple[str, int, int] | None = None
        self.site_checked = 0.0
        self.topic = topic
        self.max_records = max_records
        self.config = consumer_config(bootstrap, client_id, group)
        self.consumer = self._subscribe()
        self.watchdog = GroupWatchdog()
        self.reseek = True
        self.stopping = threading.Event()
        self.applied = 0
        self.on_applied: Callable[[int], None] | None = None

    def _subscribe(self) -> KafkaConsumer:
        consumer = KafkaConsumer(**self.config)
        wait_for_metadata(consumer, self.topic)
        consumer.subscribe([self.topic], listener=_Assignment(self))
        return consumer

    def seek_to_tracked(self, partitions: list[TopicPartition] | None = None) -> None:
        """Position the assigned partitions at the offsets the ledger recorded."""
        for tp in self.consumer.assignment() if partitions is None else partitions:
            self.consumer.seek(tp, self.ledger.tracked_position(upstream_name(tp.topic, tp.partition)))
        self.reseek = False

    def step(self, timeout_ms: int = 200) -> int:
        """Poll once and apply what came; returns the number of messages applied."""
        batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.max_records)
        if self.reseek:
            # A seek on assignment failed inside poll: what it returned may start at an
            # offset other than the tracked one. Discard it and seek.
            self.seek_to_tracked()
            return 0
        if self.gate is None:
            return self._apply(batches)
        if not any(batches.values()) and time.monotonic() - self.site_checked < 0.5:
            return 0
        with self.gate.shared() as site:
            self.site_checked = time.monotonic()
            if site.stamp != self.site_stamp:
                # Promoted, demoted or fenced since the last batch: aggregates cached here may
                # be stale (replicated or set-aside events) and the controller may have moved
                # the tracked offsets. Start over from the database.
                if self.site_stamp is not None or site.stamp is not None:
                    log.warning("site record now %s: re-reading positions and aggregates", site.stamp)
                self.site_stamp = site.stamp
                self.forget_cached()
                self.reseek = True
                return 0
            if site.active:
                return self._apply(batches)
        self.reseek = True  # what was polled is rated when (if) this site is promoted
        self.stopping.wait(0.5)
        return 0

    def forget_cached(self) -> None:
        self.ledger.forget_live_sessions()
        cache = getattr(self.ledger.repository, "cache", None)
        if cache is not None and hasattr(cache, "maxsize"):
            self.ledger.repository.cache = type(cache)(maxsize=cache.maxsize)

    def _apply(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        handled = 0
        for tp, messages in sorted(batches.items(), key=lambda item: item[0].partition):
            if not messages:
                continue
            records = decode_records(messages)
            tracking = Tracking(upstream_name(tp.topic, tp.partition), messages[-1].offset + 1)
            started = time.monotonic()
            self.ledger.apply_records(records, tracking, shard=str(tp.partition))
            if (took := time.monotonic() - started) > 2.0:
                log.warning("slow batch: %d records of partition %d took %.1f s", len(records), tp.partition, took)
            handled += len(messages)
        self.applied += handled
        APPLIED.inc(handled)
        if handled and self.on_applied is not None:
            self.on_applied(handled)
        return handled

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                if self.watchdog.stalled(self.consumer):
                    log.error("the consumer has not rejoined its group for %.0f s; replacing it",
                              self.watchdog.limit)
                    self.ledger.forget_live_sessions()
                    replace_consumer(self.consumer)
                    self.consumer = self._subscribe()
                    self.reseek = True
                if self.reseek:
                    self.seek_to_tracked()
                self.step()
                failures = 0
            except Exception:
                # Database or broker unavailable, or a rebalance race (IntegrityError on the
                # tracking row or an aggregate version): nothing of the batch was committed.
                failures += 1
                self.reseek = True
                self.ledger.forget_live_sessions()
                log.exception("rating failed (attempt %d); resuming from the tracked positions", failures)
                self.stopping.wait(min(5.0, 0.1 * 2**failures))

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.consumer.close(autocommit=False)
