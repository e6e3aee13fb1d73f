"""Reading the ledger's notification log for live projection, without eventsourcing's reader.

``select_notifications`` builds a ``Notification`` dataclass with a ``UUID`` per event, and the
projector's handlers then take ``str()`` of that UUID: 10-15 % of `serve`'s projector child.
``LiveLog.read`` runs one raw query and gives ``LogEntry`` tuples with the same attributes
(``id``, ``originator_id``, ``originator_version``, ``topic``, ``state``), the originator id as
hyphenated text (what ``str(UUID)`` gives, remembered per aggregate: a session has several
events). A recorder it does not know is read through ``select_notifications``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import Notification

MAX_IDS = 200_000  # originator ids remembered as text (a few hundred bytes each)


class LogEntry(NamedTuple):
    """One stored ledger event as the projector reads it (a ``Notification``'s attributes)."""

    id: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes

    def notification(self) -> Notification:
        """The same as the ``Notification`` eventsourcing's reader gives (for the mapper)."""
        return Notification(id=self.id, originator_id=UUID(self.originator_id),
                            originator_version=self.originator_version, topic=self.topic, state=self.state)


def _hyphenated(stored: Any) -> str:
    if isinstance(stored, str):
        h = stored.lower()
        if len(h) == 32:
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        return str(UUID(h))  # any other spelling UUID accepts, as the recorder's reader would
    return str(stored)  # a UUID (PostgreSQL's uuid column)


class LiveLog:
    """The log after a position, ``limit`` notifications at most, in id order."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.ids: dict[Any, str] = {}
        self._statement = ""
        kind = recorder_kind(recorder)
        if kind == "sqlite" and getattr(recorder.datastore, "originator_id_type", "uuid") == "uuid":
            self._statement = (f"SELECT rowid, originator_id, originator_version, topic, state "
                               f"FROM {recorder.events_table_name} WHERE rowid > ? ORDER BY rowid LIMIT ?")
            self.read = self._sqlite_read  # type: ignore[method-assign]
        elif kind == "postgres" and getattr(recorder.datastore, "originator_id_type", "uuid") == "uuid":
            table = f'"{recorder.datastore.schema}"."{recorder.events_table_name}"'
            self._statement = (f"SELECT notification_id, originator_id, originator_version, topic, state "
                               f"FROM {table} WHERE notification_id > %s ORDER BY notification_id LIMIT %s")
            self.read = self._postgres_read  # type: ignore[method-assign]

    def read(self, after: int, limit: int) -> Sequence[Any]:
        """Notifications with ids above ``after`` (``LogEntry`` from a known store)."""
        return self.recorder.select_notifications(start=after + 1, limit=limit)  # type: ignore[no-any-return]

    def _entries(self, rows: list[Any]) -> list[LogEntry]:
        ids = self.ids
        if len(ids) > MAX_IDS:
            ids.clear()
        entries = []
        for notification_id, stored_id, version, topic, state in rows:
            text = ids.get(stored_id)
            if text is None:
                text = ids[stored_id] = _hyphenated(stored_id)
            entries.append(LogEntry(notification_id, text, version, topic, bytes(state)))
        return entries

    def _sqlite_read(self, after: int, limit: int) -> list[LogEntry]:
        with self.recorder.datastore.transaction(commit=False) as c:
            cursor = getattr(c, "sqlite_cursor", c)
            cursor.row_factory = None  # plain tuples
            cursor.execute(self._statement, (after, limit))
            return self._entries(cursor.fetchall())

    def _postgres_read(self, after: int, limit: int) -> list[LogEntry]:
        from psycopg.rows import tuple_row

        with self.recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(self._statement, (after, limit))
            return self._entries(cur.fetchall())


def recorder_kind(recorder: Any) -> str | None:
    """"sqlite", "postgres" or None (a recorder the raw readers here and in rebuild.py do not know)."""
    # Only modules already imported: a PostgreSQL recorder implies its module was (and
    # importing psycopg to find out costs half a second).
    for kind, module, name in (("sqlite", "eventsourcing.sqlite", "SQLiteApplicationRecorder"),
                               ("postgres", "eventsourcing.postgres", "PostgresApplicationRecorder")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(recorder, cls):
            return kind
    return None
