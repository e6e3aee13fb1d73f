"""The accounting log of the embedded mode: verified records made durable before the NAS
gets its Accounting-Response. One immutable event per record, named by the record's content
key, so a record re-sent with a new Identifier (or re-submitted by the other site) is stored
once. The rater follows this log's notifications."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, Recording, StoredEvent, Transcoder
from eventsourcing.utils import get_topic

from domain.accounting import AccountingRecord
from domain.ids import accounting_record_id

from .bulk import existing_ids
from .transcoder import with_fast_encoding


class ReceivedRecord(Aggregate):
    @staticmethod
    def create_id(key: str, **_: Any) -> UUID:
        return accounting_record_id(key)

    @event("Received")
    def __init__(self, key: str, record: dict[str, Any]) -> None:
        self.key = key
        self.record = record


_ORIGINATOR_TOPIC = get_topic(ReceivedRecord)
_RECEIVED = ReceivedRecord.Received  # type: ignore[attr-defined]
_RECEIVED_TOPIC = get_topic(_RECEIVED)


class AccountingLog(Application[UUID]):
    """Append-only, deduplicated by content. ``append`` returns after the commit."""

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.listeners: list[Callable[[], None]] = []

    def construct_transcoder(self) -> Transcoder:
        """The ledger's orjson encoder (the same bytes as eventsourcing's JSON transcoder)."""
        return with_fast_encoding(super().construct_transcoder(), self.register_transcodings)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        """Wake the rater after each commit."""
        super()._notify(recordings)
        for listener in self.listeners:
            listener()

    def appended_elsewhere(self) -> None:
        """Another process (the RADIUS listener's) committed records: wake the followers."""
        for listener in self.listeners:
            listener()

    def append(self, records: list[AccountingRecord]) -> list[bool]:
        """Make a batch durable in one transaction; True for each record new to the log.

        A duplicate inside the batch or already stored is not an error: it is the
        retransmission the protocol expects, acknowledged and stored once.

        The stored events are exactly what saving a new ``ReceivedRecord`` aggregate per
        record would store (same topic, state and originator id, version 1), built directly:
        the aggregate round trip was most of the intake's CPU time.
        """
        keys = [record.idempotency_key() for record in records]
        first: dict[str, int] = {}
        for index, key in enumerate(keys):
            first.setdefault(key, index)
        pending = {accounting_record_id(key): (key, i) for key, i in first.items()}
        stored: set[str] = set()
        while pending:
            try:
                self._insert([self._stored_event(aggregate_id, key, records[i])
                              for aggregate_id, (key, i) in pending.items()])
            except IntegrityError:
                # Some are in the log already (a retransmission, or the other site's copy);
                # drop those and insert the rest. A concurrent writer may beat us to one of
                # them between the check and the insert: then this repeats.
                already = existing_ids(self, pending)
                if not already:
                    raise
                for aggregate_id in already:
                    del pending[aggregate_id]
                continue
            stored.update(key for key, _ in pending.values())
            break
        return [first[key] == index and key in stored for index, key in enumerate(keys)]

    def _stored_event(self, aggregate_id: UUID, key: str, record: AccountingRecord) -> StoredEvent:
        """What the mapper stores for the ``Received`` event of a new ReceivedRecord, built
        from its state directly: the frozen event object, its topic lookup and the copy of
        its attributes were a tenth of the RADIUS process's CPU per record. The state's keys
        are in the event's field order, as ``vars(event)`` gives them."""
        mapper = self.mapper
        state = mapper.transcoder.encode({
            "timestamp": _RECEIVED.create_timestamp(), "originator_topic": _ORIGINATOR_TOPIC,
            "key": key, "record": record.to_dict()})
        if mapper.compressor is not None:
            state = mapper.compressor.compress(state)
        if mapper.cipher is not None:
            state = mapper.cipher.encrypt(state)
        return StoredEvent(originator_id=aggregate_id, originator_version=1, topic=_RECEIVED_TOPIC, state=state)

    def _insert(self, stored_events: list[StoredEvent]) -> None:
        if not stored_events:
            return
        self.recorder.insert_events(stored_events)
        self._notify([])

    def position(self) -> int:
        return self.recorder.max_notification_id() or 0
