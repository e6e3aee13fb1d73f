"""Which sessions of a NAS are open, so Accounting-On/Off can close all of them
deterministically from the log (not from a read model that may lag)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.ids import nas_sessions_id


class NasSessions(Aggregate):
    @staticmethod
    def create_id(nas_id: str, **_: Any) -> UUID:
        return nas_sessions_id(nas_id)

    @event("Started")
    def __init__(self, nas_id: str) -> None:
        self.nas_id = nas_id
        self.open: dict[str, int] = {}  # session aggregate id (hex) -> open incarnations

    @event("SessionOpened")
    def session_opened(self, session_id: UUID) -> None:
        key = str(session_id)
        self.open[key] = self.open.get(key, 0) + 1

    @event("SessionClosed")
    def session_closed(self, session_id: UUID) -> None:
        key = str(session_id)
        remaining = self.open.get(key, 0) - 1
        if remaining > 0:
            self.open[key] = remaining
        else:
            self.open.pop(key, None)

    @event("NasRestarted")
    def nas_restarted(self, event_time: int, status: str) -> None:
        self.open = {}
