"""The relay: publishes every event of the ledger's notification log, in order, to the
single-partition ledger topic, so that every domain event can also be read from Kafka and the
projectors need no connection to the event store's log.

At-least-once: the relay's position (last notification id published) is committed after the
producer flush succeeded; a crash in between publishes a stretch again, and consumers skip
ids at or below their own position. Order needs a single writer: relays take a PostgreSQL
advisory lock, so a second relay (for availability) waits until the first one is gone.
PostgreSQL notification ids follow commit order (inserts take a table lock), so nothing can
appear later below the relay's position; ids may have gaps after a rollback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import zlib
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import Notification
from kafka import KafkaProducer
from prometheus_client import Gauge
from sqlalchemy import BigInteger, Column, Engine, MetaData, String, Table, insert, select, update

from adapters.site_gate import SiteWriteLock
from ledger import Ledger

from .topics import producer_config

log = logging.getLogger(__name__)

POSITION = Gauge("wispgate_relay_position", "Last ledger notification id published to the ledger topic")

_metadata = MetaData()
relay_positions = Table(
    "relay_positions", _metadata,
    Column("name", String(200), primary_key=True),
    Column("position", BigInteger, nullable=False),
)


def encode_notification(notification: Notification, generation: int = 0) -> bytes:
    """The ledger-topic message for one notification (state bytes as stored). ``generation``
    counts the times a fenced site rewrote its log's tail: ids after the common prefix are
    reused then, so a projector must not mix messages of two generations."""
    return json.dumps({
        "generation": generation,
        "id": notification.id,
        "originator_id": str(notification.originator_id),
        "originator_version": notification.originator_version,
        "topic": notification.topic,
        "state": base64.b64encode(notification.state).decode(),
    }, separators=(",", ":")).encode()


def decode_notification(raw: bytes) -> Notification:
    return decode_message(raw)[1]


def decode_message(raw: bytes) -> tuple[int, Notification]:
    """(generation, notification) of a ledger-topic message (generation 0 when absent)."""
    data: dict[str, Any] = json.loads(raw)
    return int(data.get("generation", 0)), Notification(
        id=int(data["id"]), originator_id=UUID(data["originator_id"]),
        originator_version=int(data["originator_version"]), topic=data["topic"],
        state=base64.b64decode(data["state"]),
    )


def relay_name(topic: str) -> str:
    return f"relay:{topic}"


def generation_name(topic: str) -> str:
    return f"relay:{topic}#generation"


def rewind_relay(conn: Any, topic: str) -> int:
    """A fenced site's log lost its tail: publish the whole log again, as a new generation
    (run inside the transaction that sets the tail aside). Returns the new generation."""
    _metadata.create_all(conn)
    current = conn.execute(select(relay_positions.c.position)
                           .where(relay_positions.c.name == generation_name(topic))).scalar()
    generation = int(current or 0) + 1
    for name, value in ((relay_name(topic), 0), (generation_name(topic), generation)):
        done = conn.execute(update(relay_positions).where(relay_positions.c.name == name).values(position=value))
        if done.rowcount == 0:
            conn.execute(insert(relay_positions).values(name=name, position=value))
    return generation


class LedgerRelay:
    """Copies the ledger notification log to ``topic``; ``run`` loops until ``stop``."""

    def __init__(self, ledger: Ledger, engine: Engine, database_url: str, bootstrap: str, topic: str,
                 *, batch: int = 2000, poll_interval: float = 0.05, gate: SiteWriteLock | None = None) -> None:
        self.ledger = ledger
        self.engine = engine
        self.database_url = database_url
        self.bootstrap = bootstrap
        self.topic = topic
        self.batch = batch
        self.poll_interval = poll_interval
        self.gate = gate
        self.name = relay_name(topic)
        self.stopping = threading.Event()
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._producer: KafkaProducer | None = None
        _metadata.create_all(engine)

    # ---- leadership --------------------------------------------------------------------

    def _holds_lock(self) -> bool:
        """True while this relay holds the advisory lock (re-taken after a lost connection)."""
        conn = self._lock_conn
        if conn is not None:
            try:
                conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                log.warning("lost the relay lock connection")
                self._drop_lock()
        conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)
        key = zlib.crc32(self.name.encode())
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        if row is not None and row[0]:
            self._lock_conn = conn
            log.info("relay %s is the active relay", self.name)
            return True
        conn.close()
        return False

    def _drop_lock(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    # ---- position ----------------------------------------------------------------------

    def position(self) -> int:
        return self.position_and_generation()[0]

    def position_and_generation(self) -> tuple[int, int]:
        with self.engine.connect() as conn:
            rows = dict(conn.execute(select(relay_positions.c.name, relay_positions.c.position).where(
                relay_positions.c.name.in_([self.name, generation_name(self.topic)]))).all())
        return int(rows.get(self.name) or 0), int(rows.get(generation_name(self.topic)) or 0)

    def _store_position(self, position: int) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(update(relay_positions).where(relay_positions.c.name == self.name)
                                .values(position=position))
            if done.rowcount == 0:
                conn.execute(insert(relay_positions).values(name=self.name, position=position))
        POSITION.set(position)

    # ---- publishing --------------------------------------------------------------------

    def step(self) -> int:
        """Publish the next batch; returns how many notifications were published."""
        if not self._holds_lock():
            return 0
        if self.gate is None:
            return self._publish()
        position, _generation = self.position_and_generation()
        if not self.ledger.recorder.select_notifications(start=position + 1, limit=1):
            return 0  # idle: no need for the lock (a fence meanwhile is seen under it below)
        # A fence (another process, the site controller) rewinds this relay: never half-way
        # through a batch. The relay publishes whatever the site's role.
        with self.gate.shared():
            return self._publish()

    def _publish(self) -> int:
        position, generation = self.position_and_generation()
        notifications = self.ledger.recorder.select_notifications(start=position + 1, limit=self.batch)
        if not notifications:
            return 0
        if self._producer is None:
            self._producer = KafkaProducer(**producer_config(self.bootstrap, "wispgate-relay"))
        try:
            futures = [self._producer.send(self.topic, value=encode_notification(n, generation), partition=0)
                       for n in notifications]
            self._producer.flush(timeout=15)
            for future in futures:
                if not future.is_done or future.exception is not None:
                    raise RuntimeError(f"ledger topic did not acknowledge: {future.exception}")
        except Exception:
            producer, self._producer = self._producer, None
            producer.close(timeout=0)
            raise
        self._store_position(notifications[-1].id)
        return len(notifications)

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                handled = self.step()
                failures = 0
            except Exception:
                failures += 1
                log.exception("relay failed (attempt %d); retrying from its stored position", failures)
                self.stopping.wait(min(5.0, 0.1 * 2**failures))
                continue
            if handled == 0:
                self.stopping.wait(self.poll_interval if self._lock_conn is not None else 1.0)

    def stop(self) -> None:
        self.stopping.set()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
        self._drop_lock()
