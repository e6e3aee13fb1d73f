"""Reading many aggregates at once, for batch work such as a billing run.

The application's repository reads one aggregate per call (a query for its snapshot, one for
its events, and a deep copy out of the aggregate cache). A billing run needs thousands of
accounts and billing periods, so this module reads the events of up to ``CHUNK`` aggregates in
one query straight from the application's recorder (SQLite or PostgreSQL), starting after the
latest snapshot of each where the application takes snapshots, and rebuilds each aggregate
with the application's mapper, exactly as the repository would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import AggregateRecorder, StoredEvent

A = TypeVar("A", bound=Aggregate)

CHUNK = 500  # ids per query: 2 bound parameters each keeps SQLite under its 32,766 limit


def load_aggregates(app: Application[UUID], cls: type[A], ids: Iterable[UUID]) -> dict[UUID, A]:
    """The current state of each aggregate of ``ids`` that exists and is a ``cls``, by id;
    missing ids (and aggregates of another type) are left out."""
    wanted = list(dict.fromkeys(ids))
    found: dict[UUID, A] = {}
    for offset in range(0, len(wanted), CHUNK):
        chunk = wanted[offset:offset + CHUNK]
        after: dict[UUID, int] = {}
        aggregates: dict[UUID, Any] = {}
        if app.snapshots is not None:
            for stored in latest_snapshots(app.snapshots.recorder, chunk):
                snapshot: Any = app.mapper.to_domain_event(stored)
                aggregates[as_uuid(stored.originator_id)] = snapshot.mutate(None)
                after[as_uuid(stored.originator_id)] = stored.originator_version
        for stored in events_after(app.recorder, chunk, after):
            event: Any = app.mapper.to_domain_event(stored)
            key = as_uuid(stored.originator_id)
            aggregates[key] = event.mutate(aggregates.get(key))
        for aggregate_id in chunk:
            aggregate = aggregates.get(aggregate_id)
            if isinstance(aggregate, cls):
                found[aggregate_id] = aggregate
    return found


def existing_ids(app: Application[UUID], ids: Iterable[UUID]) -> set[UUID]:
    """Which of ``ids`` have at least one stored event (without rebuilding anything)."""
    wanted = list(dict.fromkeys(ids))
    found: set[UUID] = set()
    recorder = app.recorder
    for offset in range(0, len(wanted), CHUNK):
        chunk = wanted[offset:offset + CHUNK]
        if is_postgres(recorder):
            from psycopg.sql import SQL

            pg_query = SQL("SELECT DISTINCT originator_id FROM {} WHERE originator_id = ANY(%s)").format(
                pg_table(recorder))
            found |= {as_uuid(row["originator_id"]) for row in store_rows(recorder, pg_query, [chunk])}
        else:
            marks = ",".join("?" * len(chunk))
            query = f"SELECT DISTINCT originator_id FROM {sqlite_table(recorder)} WHERE originator_id IN ({marks})"
            found |= {as_uuid(row["originator_id"]) for row in store_rows(recorder, query, [i.hex for i in chunk])}
    return found


def latest_snapshots(recorder: AggregateRecorder, ids: Sequence[UUID]) -> list[StoredEvent]:
    """The latest stored snapshot of each of ``ids`` that has one (a snapshot store's recorder)."""
    if is_postgres(recorder):
        from psycopg.sql import SQL

        pg_query = SQL("SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, state FROM {} "
                       "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version DESC").format(
            pg_table(recorder))
        return [_stored(row) for row in store_rows(recorder, pg_query, [list(ids)])]
    table = sqlite_table(recorder)
    lookup = {i.hex: i for i in ids}
    marks = ",".join("?" * len(ids))
    query = (f"SELECT s.originator_id, s.originator_version, s.topic, s.state FROM {table} s JOIN "
             f"(SELECT originator_id, MAX(originator_version) AS v FROM {table} WHERE originator_id IN ({marks}) "
             f"GROUP BY originator_id) latest ON s.originator_id = latest.originator_id "
             f"AND s.originator_version = latest.v")
    return [_stored(row, lookup) for row in store_rows(recorder, query, list(lookup))]


def events_after(recorder: AggregateRecorder, ids: Sequence[UUID], after: dict[UUID, int]) -> list[StoredEvent]:
    """Events of ``ids`` past each one's snapshot version (0: all), in version order per id."""
    versions = [after.get(i, 0) for i in ids]
    if is_postgres(recorder):
        from psycopg.sql import SQL

        pg_query = SQL("SELECT e.originator_id, e.originator_version, e.topic, e.state FROM {} e "
                       "JOIN unnest(%s::uuid[], %s::bigint[]) AS b(id, v) "
                       "ON e.originator_id = b.id AND e.originator_version > b.v "
                       "ORDER BY e.originator_id, e.originator_version").format(pg_table(recorder))
        return [_stored(row) for row in store_rows(recorder, pg_query, [list(ids), versions])]
    bounds = ",".join("(?,?)" for _ in ids)
    query = (f"WITH b(id, v) AS (VALUES {bounds}) SELECT e.originator_id, e.originator_version, e.topic, e.state "
             f"FROM b JOIN {sqlite_table(recorder)} e ON e.originator_id = b.id AND e.originator_version > b.v "
             f"ORDER BY e.originator_id, e.originator_version")
    params: list[Any] = []
    lookup: dict[str, UUID] = {}
    for aggregate_id, version in zip(ids, versions, strict=True):
        lookup[aggregate_id.hex] = aggregate_id
        params += [aggregate_id.hex, version]
    return [_stored(row, lookup) for row in store_rows(recorder, query, params)]


def is_postgres(recorder: Any) -> bool:
    """Whether the recorder is eventsourcing's PostgreSQL one (else SQLite: the two this store uses)."""
    return type(recorder).__module__ == "eventsourcing.postgres"


def pg_table(recorder: Any) -> Any:
    """The recorder's events table as a psycopg SQL identifier (schema-qualified)."""
    from psycopg.sql import Identifier

    return Identifier(recorder.datastore.schema, recorder.events_table_name)


# SQLite reads a store this large (~1 GB of events at 100,000 accounts) through a memory map
# rather than copying each page into the connection's small cache: about a tenth of the CPU
# of drafting a billing run's batch. Reading only: writes still go through SQLite's pager.
SQLITE_MMAP = "PRAGMA mmap_size=4294967296"


def store_rows(recorder: Any, query: Any, params: list[Any]) -> list[Any]:
    """The rows of a read-only ``query`` on the recorder's own connection (no commit)."""
    with recorder.datastore.transaction(commit=False) as cursor:
        if not is_postgres(recorder):  # a setting of the connection, which the pool hands out again
            cursor.execute(SQLITE_MMAP)
        cursor.execute(query, params)
        return list(cursor.fetchall())


def sqlite_table(recorder: Any) -> str:
    """The recorder's events table name, checked plain enough to put into SQL text."""
    name = str(recorder.events_table_name)
    if not name.replace("_", "").isalnum():  # it is put into the SQL text: only plain names
        raise ValueError(f"unexpected events table name {name!r}")
    return name


def as_uuid(value: Any) -> UUID:
    """An originator id as read back (UUID from PostgreSQL, hex text from SQLite) as a UUID."""
    return value if isinstance(value, UUID) else UUID(str(value))


def _stored(row: Any, lookup: dict[str, UUID] | None = None) -> StoredEvent:
    """A row as a StoredEvent; ``lookup`` gives the UUIDs of the ids asked for by their stored
    text (SQLite's hex), which saves parsing one per row."""
    stored_id = row["originator_id"]
    found = lookup.get(stored_id) if lookup is not None and type(stored_id) is str else None
    return StoredEvent(originator_id=found or as_uuid(stored_id), originator_version=row["originator_version"],
                       topic=row["topic"], state=bytes(row["state"]))


__all__ = ["CHUNK", "SQLITE_MMAP", "as_uuid", "events_after", "existing_ids", "is_postgres", "latest_snapshots",
           "load_aggregates", "pg_table", "sqlite_table", "store_rows"]
