"""The projector of the distributed mode: builds the read models from the ledger topic.

The position that matters is the projector's own (last notification id applied), written by
`ReadModelProjector.process` in the same transaction as the read-model rows; messages at or
below it are skipped, so the relay's at-least-once publication and any re-read are harmless.
The consumer group's committed Kafka offset is only a hint where to start reading (committed
after the database commit, so it is never ahead); with an empty read model (position 0, e.g.
after a reset for a rebuild) the projector reads the topic from the beginning.
"""

from __future__ import annotations

import logging
import threading

from eventsourcing.persistence import Notification
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from sqlalchemy import BigInteger, Boolean, Column, MetaData, String, Table, insert, select, update

from projections import ReadModelProjector

from .relay import decode_message
from .topics import GroupWatchdog, consumer_config, replace_consumer, wait_for_metadata

log = logging.getLogger(__name__)


_metadata = MetaData()
# Which generation of the ledger topic the read models hold (see relay.encode_notification):
# ``clean`` is false between deciding on a rebuild and having emptied the read models.
projector_generations = Table(
    "projector_generations", _metadata,
    Column("name", String(200), primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("clean", Boolean, nullable=False),
)


def generation_runs(decoded: list[tuple[int, Notification]]) -> list[tuple[int, list[Notification]]]:
    """Consecutive messages of the same generation, in topic order."""
    runs: list[tuple[int, list[Notification]]] = []
    for generation, notification in decoded:
        if runs and runs[-1][0] == generation:
            runs[-1][1].append(notification)
        else:
            runs.append((generation, [notification]))
    return runs


def ascending(notifications: list[Notification]) -> list[Notification]:
    """Drop re-published stretches: ids ascend within one run of the relay, and a relay that
    restarts publishes again from its stored position, below what was already seen."""
    kept: list[Notification] = []
    for notification in notifications:
        if not kept or notification.id > kept[-1].id:
            kept.append(notification)
    return kept


class _FromStart(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    def __init__(self, owner: TopicProjector) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        try:
            empty = self.owner.projector.position() == 0
        except Exception:
            log.exception("could not read the projector position; reading the topic from the start")
            empty = True
        if empty and assigned:
            self.owner.consumer.seek_to_beginning(*assigned)


class TopicProjector:
    """Consumes ``topic`` into ``projector``; ``run`` loops until ``stop``."""

    def __init__(self, projector: ReadModelProjector, bootstrap: str, topic: str, group: str,
                 *, client_id: str = "wispgate-projector", max_records: int = 5000) -> None:
        self.projector = projector
        self.max_records = max_records
        self.topic = topic
        self.config = consumer_config(bootstrap, client_id, group)
        self.consumer = self._subscribe()
        self.watchdog = GroupWatchdog()
        self.stopping = threading.Event()
        _metadata.create_all(projector.engine)

    def _generation(self) -> tuple[int, bool]:
        with self.projector.engine.connect() as conn:
            row = conn.execute(select(projector_generations.c.generation, projector_generations.c.clean)
                               .where(projector_generations.c.name == self.topic)).first()
        return (0, True) if row is None else (int(row[0]), bool(row[1]))

    def _set_generation(self, generation: int, clean: bool) -> None:
        with self.projector.engine.begin() as conn:
            done = conn.execute(update(projector_generations).where(projector_generations.c.name == self.topic)
                                .values(generation=generation, clean=clean))
            if done.rowcount == 0:
                conn.execute(insert(projector_generations).values(name=self.topic, generation=generation,
                                                                   clean=clean))

    def _rebuild(self, generation: int) -> None:
        """The site's log lost a divergent tail (a fence) and the relay publishes it again from
        position 1 as ``generation``: empty the read models and build them from that."""
        log.warning("ledger topic generation %d: rebuilding the read models from position 0", generation)
        self._set_generation(generation, clean=False)
        self.projector.reset()
        self._set_generation(generation, clean=True)

    def _project(self, decoded: list[tuple[int, Notification]]) -> None:
        for generation, notifications in generation_runs(decoded):
            current, clean = self._generation()
            if generation < current:
                continue  # published before the fence: ids after the common prefix mean other events
            if generation > current or not clean:
                self._rebuild(generation)
            self.projector.process(ascending(notifications))

    def _subscribe(self) -> KafkaConsumer:
        consumer = KafkaConsumer(**self.config)
        wait_for_metadata(consumer, self.topic)
        consumer.subscribe([self.topic], listener=_FromStart(self))
        return consumer

    def step(self, timeout_ms: int = 200) -> int:
        batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.max_records)
        handled = 0
        for messages in batches.values():
            self._project([decode_message(m.value) for m in messages])
            handled += len(messages)
        if handled:
            try:
                self.consumer.commit()  # a hint only; see the module docstring
            except Exception:
                log.warning("could not commit the ledger-topic offset (harmless)", exc_info=True)
        return handled

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                if self.watchdog.stalled(self.consumer):
                    log.error("the consumer has not rejoined its group for %.0f s; replacing it",
                              self.watchdog.limit)
                    replace_consumer(self.consumer)
                    self.consumer = self._subscribe()
                self.step()
                failures = 0
            except Exception:
                failures += 1
                log.exception("projection failed (attempt %d); re-reading from the committed hint", failures)
                self._rewind()
                self.stopping.wait(min(5.0, 0.1 * 2**failures))

    def _rewind(self) -> None:
        """After a failed batch, read again from the last committed offset (or the start)."""
        try:
            for tp in self.consumer.assignment():
                committed = self.consumer.committed(tp)
                if committed is None:
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, committed)
        except Exception:
            log.warning("could not rewind the ledger topic; will retry", exc_info=True)

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        self.consumer.close(autocommit=False)
