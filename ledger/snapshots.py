"""Keeping snapshot storage bounded.

eventsourcing keeps every snapshot it takes. A snapshot is derived data (the state an
aggregate's events replay to at that version): it is not part of the hash-chained log, and
loading an aggregate uses only its latest one. Superseded snapshots of long-lived aggregates
(a session open for weeks, a NAS's open-session registry) are most of the bytes at rest, so
they are deleted; an aggregate then loads from its latest snapshot exactly as before, and an
audit at an earlier version replays from the start (slower, same result).
"""

from __future__ import annotations

from typing import Any

from eventsourcing.application import Application


def prune_snapshots(app: Application[Any]) -> int:
    """Delete every snapshot that a later snapshot of the same aggregate supersedes; returns
    how many were deleted. Safe while the application runs (a reader that already chose a
    snapshot keeps reading its events; the latest one is never deleted)."""
    if app.snapshots is None:
        return 0
    recorder: Any = app.snapshots.recorder
    table = str(recorder.events_table_name)
    if not table.replace("_", "").replace(".", "").isalnum():  # it goes into the SQL text
        raise ValueError(f"unexpected snapshots table name {table!r}")
    if type(recorder).__module__ == "eventsourcing.postgres":
        from psycopg.sql import SQL, Identifier

        query: Any = SQL(
            "DELETE FROM {t} s USING (SELECT originator_id, max(originator_version) AS v FROM {t} "
            "GROUP BY originator_id HAVING count(*) > 1) latest "
            "WHERE s.originator_id = latest.originator_id AND s.originator_version < latest.v"
        ).format(t=Identifier(recorder.datastore.schema, table))
    else:
        query = (f"DELETE FROM {table} WHERE originator_version < (SELECT max(l.originator_version) "
                 f"FROM {table} AS l WHERE l.originator_id = {table}.originator_id)")
    with recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute(query)
        raw = getattr(cursor, "sqlite_cursor", cursor)  # eventsourcing wraps sqlite3's cursor
        return int(raw.rowcount or 0)
