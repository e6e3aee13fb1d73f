"""Recording a rated batch: its events, its upstream position and its snapshots in one commit.

eventsourcing's SQLite process recorder inserts a batch's events one statement each (it
returns each row id; the rater reads none), and every snapshot the batch brought due was
committed in a transaction of its own afterwards (a commit writes and syncs the WAL: the
costliest statement of all). On SQLite, when the snapshots table lives in the same database
as the events (eventsourcing's layout), ``record_batch`` writes the events with multi-row
INSERTs (row ids follow the list's order, as one row at a time gives), the tracking row
through the recorder's own statement, and the snapshots, in one transaction. Anything else
(PostgreSQL, another recorder) goes through the recorders' ``insert_events``: the events with
their tracking in one transaction, then the snapshots in one more.

A snapshot committed with the events it summarises is as valid as one committed after them
(it is derived data, never part of the hash-chained log); if the transaction fails, neither is
recorded and the batch is retried as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteProcessRecorder

# Rows per INSERT statement, largest first: a batch is cut into chunks of these sizes, so a
# handful of statement texts (compiled once, kept by sqlite3's statement cache) serve any
# batch length. 256 rows x 4 values stays far below SQLite's bound on parameters.
_CHUNKS = (256, 64, 16, 4, 1)


def record_batch(recorder: Any, events: Sequence[StoredEvent], tracking: Tracking | None,
                 snapshots_recorder: Any = None, snapshots: Sequence[StoredEvent] = ()) -> None:
    """Insert ``events`` with ``tracking`` (atomically), and ``snapshots`` into
    ``snapshots_recorder``: in one transaction where both are SQLite tables of one database."""
    if (type(recorder) is SQLiteProcessRecorder
            and (not snapshots or (type(snapshots_recorder) is SQLiteAggregateRecorder
                                   and snapshots_recorder.datastore is recorder.datastore))):
        with recorder.datastore.transaction(commit=True) as cursor:
            insert_rows(cursor, recorder.events_table_name, events)
            if tracking is not None:
                recorder._insert_tracking(cursor, tracking)  # noqa: SLF001 - its own statement and checks
            if snapshots:
                # OR REPLACE: a snapshot at a version is that version's state whoever took it;
                # one left from an earlier life of the log must not make the batch fail.
                insert_rows(cursor, snapshots_recorder.events_table_name, snapshots, replace=True)
        return
    recorder.insert_events(events, tracking=tracking)
    if snapshots:
        snapshots_recorder.insert_events(snapshots)


def insert_rows(cursor: Any, table: str, events: Sequence[StoredEvent], *, replace: bool = False) -> None:
    """The rows eventsourcing's SQLite recorders insert for ``events``, in their order
    (``replace``: a row with the same originator id and version is replaced)."""
    offset = 0
    remaining = len(events)
    for size in _CHUNKS:
        while remaining >= size:
            params: list[Any] = []
            for stored in events[offset:offset + size]:
                originator_id = stored.originator_id
                params += (originator_id.hex if isinstance(originator_id, UUID) else originator_id,
                           stored.originator_version, stored.topic, stored.state)
            cursor.execute(_insert_statement(table, size, replace), params)
            offset += size
            remaining -= size


@lru_cache(maxsize=64)
def _insert_statement(table: str, rows: int, replace: bool) -> str:
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    return f"{verb} INTO {table} VALUES " + ",".join(["(?,?,?,?)"] * rows)
