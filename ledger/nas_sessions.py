"""Which sessions of a NAS are open, so Accounting-On/Off can close all of them
deterministically from the log (not from a read model that may lag).

In the distributed mode the sessions of one NAS are spread over the accounting topic's
partitions, each owned by one rater: there is one registry per (NAS, partition) ``shard``,
so two raters never write the same registry, and an Accounting-On/Off is copied to every
partition, where it closes the sessions that partition holds.

The rater records the sessions a batch opened and closed as one ``SessionsChanged`` event
per registry (the changes in order), not one event per change: with one per change, the
registry's events were a sixth of the ledger's, each built, encoded, stored, chained and
read past by the projector, and its snapshots (every open session of the NAS) fell due every
200 sessions. ``SessionOpened``/``SessionClosed`` are kept for logs that hold them."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.ids import nas_sessions_id

from .emit import emit


@lru_cache(maxsize=4096)  # named for every session that opens or closes: uuid5 is not free
def _registry_id(nas_id: str, shard: str) -> UUID:
    return nas_sessions_id(nas_id, shard)


class NasSessions(Aggregate):
    @staticmethod
    def create_id(nas_id: str, shard: str = "", **_: Any) -> UUID:
        return _registry_id(nas_id, shard)

    @event("Started")
    def __init__(self, nas_id: str, shard: str = "") -> None:
        self.nas_id = nas_id
        self.shard = shard
        self.open: dict[str, int] = {}  # session aggregate id (hex) -> open incarnations
        self.restarts: dict[str, int] = {}  # Accounting-On/Off content key -> event time

    def sessions_changed(self, changes: list[str]) -> None:
        """Sessions opened (``"+"`` and the session aggregate's id) and closed (``"-"``...),
        in the order they happened: what session_opened/session_closed each would do."""
        emit(self, NasSessions.SessionsChanged, changes=changes)  # type: ignore[attr-defined]

    @event("SessionsChanged")
    def _on_sessions_changed(self, changes: list[str]) -> None:
        open_sessions = self.open
        for change in changes:
            key = change[1:]
            if change[0] == "+":
                open_sessions[key] = open_sessions.get(key, 0) + 1
                continue
            remaining = open_sessions.get(key, 0) - 1
            if remaining > 0:
                open_sessions[key] = remaining
            else:
                open_sessions.pop(key, None)

    def session_opened(self, session_id: UUID) -> None:
        emit(self, NasSessions.SessionOpened, session_id=session_id)  # type: ignore[attr-defined]

    def session_closed(self, session_id: UUID) -> None:
        emit(self, NasSessions.SessionClosed, session_id=session_id)  # type: ignore[attr-defined]

    @event("SessionOpened")
    def _on_session_opened(self, session_id: UUID) -> None:
        key = str(session_id)
        self.open[key] = self.open.get(key, 0) + 1

    @event("SessionClosed")
    def _on_session_closed(self, session_id: UUID) -> None:
        key = str(session_id)
        remaining = self.open.get(key, 0) - 1
        if remaining > 0:
            self.open[key] = remaining
        else:
            self.open.pop(key, None)

    def has_restarted(self, key: str) -> bool:
        """Was this Accounting-On/Off (content key) applied already? A redelivered copy
        must not close sessions opened after the first one."""
        return key in getattr(self, "restarts", {})

    @event("NasRestarted")
    def nas_restarted(self, event_time: int, status: str, key: str = "",
                      still_open: dict[str, int] | None = None) -> None:
        # still_open: sessions that began after the restart (its Accounting-On came late)
        self.open = dict(still_open or {})
        if key:
            # getattr: registries started before restarts were recorded
            self.restarts = getattr(self, "restarts", {}) | {key: event_time}
