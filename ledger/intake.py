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
from eventsourcing.persistence import IntegrityError, Recording

from domain.accounting import AccountingRecord
from domain.ids import accounting_record_id


class ReceivedRecord(Aggregate):
    @staticmethod
    def create_id(key: str, **_: Any) -> UUID:
        return accounting_record_id(key)

    @event("Received")
    def __init__(self, key: str, record: dict[str, Any]) -> None:
        self.key = key
        self.record = record


class AccountingLog(Application[UUID]):
    """Append-only, deduplicated by content. ``append`` returns after the commit."""

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.listeners: list[Callable[[], None]] = []

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        """Wake the rater after each commit."""
        super()._notify(recordings)
        for listener in self.listeners:
            listener()

    def append(self, records: list[AccountingRecord]) -> list[bool]:
        """Make a batch durable in one transaction; True for each record new to the log.

        A duplicate inside the batch or already stored is not an error: it is the
        retransmission the protocol expects. Such a batch falls back to one save per record.
        """
        keys = [record.idempotency_key() for record in records]
        first: dict[str, int] = {}
        for index, key in enumerate(keys):
            first.setdefault(key, index)
        aggregates = {key: ReceivedRecord(key=key, record=records[i].to_dict()) for key, i in first.items()}
        try:
            self.save(*aggregates.values())
            stored = set(aggregates)
        except IntegrityError:
            stored = set()
            for key, aggregate in aggregates.items():
                try:
                    self.save(ReceivedRecord(key=key, record=aggregate.record))
                    stored.add(key)
                except IntegrityError:
                    pass
        return [first[key] == index and key in stored for index, key in enumerate(keys)]

    def position(self) -> int:
        return self.recorder.max_notification_id() or 0
