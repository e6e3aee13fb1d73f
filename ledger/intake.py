"""The accounting log of the embedded mode: verified records made durable before the NAS
gets its Accounting-Response. One immutable event per record, named by the record's content
key, so a record re-sent with a new Identifier (or re-submitted by the other site) is stored
once. The rater follows this log's notifications."""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from collections.abc import Callable
from datetime import UTC
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Recording, StoredEvent, Transcoder
from eventsourcing.sqlite import SQLiteAggregateRecorder
from eventsourcing.utils import get_topic

from domain.accounting import AccountingRecord, StatusType
from domain.ids import NAMESPACE, accounting_record_id

from .bulk import existing_ids
from .transcoder import FastJSONTranscoder, with_fast_encoding


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
_RECORD_ID_PREFIX = NAMESPACE.bytes + b"record:"


def accounting_record_hex(key: str) -> str:
    """``accounting_record_id(key).hex`` without the UUID object: uuid5's SHA-1 with the
    version (5) and variant (RFC 4122) bits set, as ``uuid.uuid5`` does."""
    digest = bytearray(hashlib.sha1(_RECORD_ID_PREFIX + key.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


# Every field but ``extra`` (checked on its own), at once.
_field_values = operator.attrgetter(
    *(field.name for field in dataclasses.fields(AccountingRecord) if field.name != "extra"))
# What those fields may hold for orjson to write the record (a dataclass: its fields in order,
# an enum as its value) exactly as the standard encoder writes ``record.to_dict()``.
_DIRECT = frozenset({str, int, bool, StatusType})


def _writes_alike(record: AccountingRecord) -> bool:
    """Whether orjson, given the record itself, writes the bytes the application's JSON
    transcoder writes for ``record.to_dict()``: every field a plain str, int or bool (the
    status a StatusType) and ``extra`` a dict of str to str, which is all the codec makes; a
    float, a subclass or a nested object is left to the transcoder."""
    if not _DIRECT.issuperset(map(type, _field_values(record))) or type(record.extra) is not dict:
        return False
    for key, text in record.extra.items():
        if type(key) is not str or type(text) is not str:
            return False
    return type(record.status) is StatusType


class AccountingLog(Application[UUID]):
    """Append-only, deduplicated by content. ``append`` returns after the commit."""

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.listeners: list[Callable[[], None]] = []
        # eventsourcing's JSON (or the same bytes by orjson): then orjson may write the state.
        self._json = type(self.mapper.transcoder) in (JSONTranscoder, FastJSONTranscoder)

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
        record would store (same topic, state bytes and originator id, version 1), built
        directly: the aggregate round trip was most of the intake's CPU time.
        """
        keys = [record.idempotency_key() for record in records]
        first: dict[str, int] = {}
        for index, key in enumerate(keys):
            first.setdefault(key, index)
        # record id (hex) -> (key, index of its first occurrence)
        pending = {accounting_record_hex(key): (key, i) for key, i in first.items()}
        rows = [(record_hex, self._event_state(key, records[i])) for record_hex, (key, i) in pending.items()]
        stored: set[str] = set()
        while pending:
            try:
                self._insert(rows)
            except IntegrityError:
                # Some are in the log already (a retransmission, or the other site's copy);
                # drop those and insert the rest. A concurrent writer may beat us to one of
                # them between the check and the insert: then this repeats.
                already = {found.hex for found in existing_ids(self, [UUID(h) for h in pending])}
                if not already:
                    raise
                for record_hex in already:
                    del pending[record_hex]
                rows = [row for row in rows if row[0] in pending]
                continue
            stored.update(key for key, _ in pending.values())
            break
        return [first[key] == index and key in stored for index, key in enumerate(keys)]

    def _event_state(self, key: str, record: AccountingRecord) -> bytes:
        """The stored state of the ``Received`` event of a new ReceivedRecord for ``record``:
        the bytes the mapper writes (keys in the event's field order, as ``vars(event)``
        gives them), written by orjson in one call when every value is a plain str, int or
        bool (what the codec produces), by the application's transcoder otherwise, then
        compressed and encrypted as the mapper would."""
        mapper = self.mapper
        timestamp = _RECEIVED.create_timestamp()
        state: bytes | None = None
        if self._json and _writes_alike(record):
            try:
                # orjson writes a UTC datetime as isoformat() does, in a tenth of its time.
                when = timestamp if timestamp.tzinfo is UTC else timestamp.isoformat()
                state = orjson.dumps({
                    "timestamp": {"_type_": "datetime_iso", "_data_": when},
                    "originator_topic": _ORIGINATOR_TOPIC, "key": key, "record": record})
            except orjson.JSONEncodeError:  # e.g. a lone surrogate, or an int beyond 64 bits
                state = None
        if state is None:
            state = mapper.transcoder.encode({
                "timestamp": timestamp, "originator_topic": _ORIGINATOR_TOPIC, "key": key,
                "record": record.to_dict()})
        if mapper.compressor is not None:
            state = mapper.compressor.compress(state)
        if mapper.cipher is not None:
            state = mapper.cipher.encrypt(state)
        return state

    def _insert(self, rows: list[tuple[str, bytes]]) -> None:
        """Insert (record id hex, state) rows as version 1 of their ReceivedRecord, in one
        transaction. On SQLite one executemany (eventsourcing's recorder executes row by
        row to collect notification ids, which nothing here reads)."""
        if not rows:
            return
        recorder = self.recorder
        if isinstance(recorder, SQLiteAggregateRecorder):
            params = [(record_hex, 1, _RECEIVED_TOPIC, state) for record_hex, state in rows]
            with recorder.datastore.transaction(commit=True) as cursor:
                cursor.executemany(recorder.insert_events_statement, params)
        else:
            recorder.insert_events([StoredEvent(originator_id=UUID(record_hex), originator_version=1,
                                                topic=_RECEIVED_TOPIC, state=state) for record_hex, state in rows])
        self._notify([])

    def position(self) -> int:
        return self.recorder.max_notification_id() or 0
