"""The Ledger: the event-sourced system of record for NAS, plans, accounts, payments, tokens,
sessions and billing periods. Admin commands (`commands.py`) come from the API; accounting
records (`rater.py`) come from the accounting log (embedded) or Kafka (distributed) and are
applied in batches, each recorded atomically with the upstream position it consumed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Mapper, ProcessRecorder, Recording, Transcoder

from .billing import BillingRun
from .billing_period import BillingPeriod
from .commands import AdminCommands
from .errors import Conflict, NotFound
from .event_encoders import with_class_encoders
from .nas_sessions import NasSessions
from .rater import CatalogCache, Rater
from .session import Session
from .transcoder import with_fast_encoding

A = TypeVar("A", bound=Aggregate)

__all__ = ["Conflict", "Ledger", "NotFound"]


class Ledger(AdminCommands, BillingRun, Rater, Application[UUID]):
    snapshotting_intervals = {Session: 100, NasSessions: 200, BillingPeriod: 200}

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        # The rater is the only writer of Session, NasSessions and BillingPeriod aggregates
        # (per partition in the distributed mode, where a conflict is retried), so it keeps
        # them in memory between batches; a failed batch or a partition move forgets them.
        self.live_sessions: dict[UUID, Aggregate] = {}
        self.live_sessions_limit = 50_000
        self.listeners: list[Callable[[], None]] = []
        self.catalog_cache = CatalogCache()
        # Told when cached aggregates are forgotten (other stages' caches, e.g. the enforcer's).
        self.forget_listeners: list[Callable[[], None]] = []

    def construct_transcoder(self) -> Transcoder:
        """eventsourcing's JSON format, encoded by orjson (ledger/transcoder.py): the same bytes."""
        return with_fast_encoding(super().construct_transcoder(), self.register_transcodings)

    def construct_mapper(self) -> Mapper[UUID]:
        """eventsourcing's Mapper with an encoder generated per event class (ledger/event_encoders.py):
        the same bytes."""
        return with_class_encoders(super().construct_mapper())

    def construct_recorder(self) -> ProcessRecorder:
        recorder = self.factory.process_recorder()
        assert isinstance(recorder, ProcessRecorder)
        return recorder

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        """Wake whoever follows this log (the projector) after each commit."""
        super()._notify(recordings)
        self.wake_followers()

    def wake_followers(self) -> None:
        """Call the listeners, as after a commit of this application: also when another process
        (serve's rater child, a replicated batch) committed to the same log."""
        for listener in self.listeners:
            listener()

    def forget_live_sessions(self) -> None:
        self.live_sessions.clear()
        self.catalog_cache.clear()
        for forget in self.forget_listeners:
            forget()

    def tracked_position(self, upstream: str) -> int:
        assert isinstance(self.recorder, ProcessRecorder)
        return self.recorder.max_tracking_id(upstream) or 0

    def _get(self, cls: type[A], aggregate_id: UUID, what: str) -> A:
        found = self._maybe_get(cls, aggregate_id)
        if found is None:
            raise NotFound(f"no {what} {aggregate_id}")
        return found

    def _maybe_get(self, cls: type[A], aggregate_id: UUID) -> A | None:
        try:
            aggregate: Any = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        return aggregate if isinstance(aggregate, cls) else None

    def _save_new(self, *aggregates: Aggregate, conflict: str) -> None:
        try:
            self.save(*aggregates)
        except IntegrityError:
            raise Conflict(conflict) from None
