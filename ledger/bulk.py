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
from operator import itemgetter
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import AggregateRecorder, StoredEvent

from .bulk_decoding import quick_mapper

A = TypeVar("A", bound=Aggregate)

CHUNK = 500  # ids per query: 2 bound parameters each keeps SQLite under its 32,766 limit


def load_aggregates(app: Application[UUID], cls: type[A], ids: Iterable[UUID]) -> dict[UUID, A]:
    """The current state of each aggregate of ``ids`` that exists and is a ``cls``, by id;
    missing ids (and aggregates of another type) are left out. The stored JSON is decoded
    by orjson (``ledger/bulk_decoding.py``: the transcoder's result)."""
    wanted = list(dict.fromkeys(ids))
    mapper = quick_mapper(app.mapper)
    found: dict[UUID, A] = {}
    for offset in range(0, len(wanted), CHUNK):
        chunk = wanted[offset:offset + CHUNK]
        keys = {i.hex: i for i in chunk}
        after: dict[str, int] = {}
        aggregates: dict[str, Any] = {}
        if app.snapshots is not None:
            for key, version, topic, state in snapshot_rows(app.snapshots.recorder, chunk):
                snapshot: Any = mapper.to_domain_event(StoredEvent(originator_id=keys[key], originator_version=version,
                                                                   topic=topic, state=state))
                aggregates[key] = snapshot.mutate(None)
                after[key] = version
        for key, version, topic, state in rows_after(app.recorder, chunk, [after.get(k, 0) for k in keys]):
            event: Any = mapper.to_domain_event(StoredEvent(originator_id=keys[key], originator_version=version,
                                                            topic=topic, state=state))
            aggregates[key] = event.mutate(aggregates.get(key))
        for key, aggregate_id in keys.items():
            aggregate = aggregates.get(key)
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
            found |= {as_uuid(row[0]) for row in store_tuples(recorder, pg_query, [chunk])}
        else:
            keys = {i.hex: i for i in chunk}
            marks = ",".join("?" * len(chunk))
            query = f"SELECT DISTINCT originator_id FROM {sqlite_table(recorder)} WHERE originator_id IN ({marks})"
            found |= {keys.get(row[0]) or as_uuid(row[0]) for row in store_tuples(recorder, query, list(keys))}
    return found


def latest_snapshots(recorder: AggregateRecorder, ids: Sequence[UUID]) -> list[StoredEvent]:
    """The latest stored snapshot of each of ``ids`` that has one (a snapshot store's recorder)."""
    return _as_stored(snapshot_rows(recorder, ids), ids)


def events_after(recorder: AggregateRecorder, ids: Sequence[UUID], after: dict[UUID, int]) -> list[StoredEvent]:
    """Events of ``ids`` past each one's snapshot version (0: all), in version order per id."""
    return _as_stored(rows_after(recorder, ids, [after.get(i, 0) for i in ids]), ids)


# A stored event as read in bulk: (originator id as hex text, version, topic, state). Hex text
# rather than UUIDs: parsing one per row, and hashing them (UUID.__hash__ is Python code) in
# the dicts of a batch, were a large part of reading a billing run's batch.
Row = tuple[str, int, str, bytes]


def snapshot_rows(recorder: AggregateRecorder, ids: Sequence[UUID]) -> list[Row]:
    """``latest_snapshots`` as rows."""
    if is_postgres(recorder):
        from psycopg.sql import SQL

        pg_query = SQL("SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, state FROM {} "
                       "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version DESC").format(
            pg_table(recorder))
        return _pg_rows(store_tuples(recorder, pg_query, [list(ids)]))
    table = sqlite_table(recorder)
    marks = ",".join("?" * len(ids))
    query = (f"SELECT s.originator_id, s.originator_version, s.topic, s.state FROM {table} s JOIN "
             f"(SELECT originator_id, MAX(originator_version) AS v FROM {table} WHERE originator_id IN ({marks}) "
             f"GROUP BY originator_id) latest ON s.originator_id = latest.originator_id "
             f"AND s.originator_version = latest.v")
    return store_tuples(recorder, query, [i.hex for i in ids])


def rows_after(recorder: AggregateRecorder, ids: Sequence[UUID], versions: Sequence[int]) -> list[Row]:
    """``events_after`` as rows: the events of ``ids`` past the version of each in
    ``versions`` (same order; 0: all), in version order per id."""
    if is_postgres(recorder):
        from psycopg.sql import SQL

        pg_query = SQL("SELECT e.originator_id, e.originator_version, e.topic, e.state FROM {} e "
                       "JOIN unnest(%s::uuid[], %s::bigint[]) AS b(id, v) "
                       "ON e.originator_id = b.id AND e.originator_version > b.v "
                       "ORDER BY e.originator_id, e.originator_version").format(pg_table(recorder))
        return _pg_rows(store_tuples(recorder, pg_query, [list(ids), list(versions)]))
    bounds = ",".join("(?,?)" for _ in ids)
    # Not ordered by SQLite: its sort copied every row's state once more (a third of the
    # query); the rows are sorted here by (id, version), which is all the order promised.
    query = (f"WITH b(id, v) AS (VALUES {bounds}) SELECT e.originator_id, e.originator_version, e.topic, e.state "
             f"FROM b JOIN {sqlite_table(recorder)} e ON e.originator_id = b.id AND e.originator_version > b.v")
    params: list[Any] = []
    for aggregate_id, version in zip(ids, versions, strict=True):
        params += [aggregate_id.hex, version]
    rows = store_tuples(recorder, query, params)
    rows.sort(key=_ID_AND_VERSION)
    return rows


_ID_AND_VERSION = itemgetter(0, 1)


def _pg_rows(rows: list[Any]) -> list[Row]:
    """PostgreSQL's rows (UUIDs, memoryviews) as ``Row`` tuples."""
    return [(row[0].hex, row[1], row[2], bytes(row[3])) for row in rows]


def _as_stored(rows: list[Row], ids: Sequence[UUID]) -> list[StoredEvent]:
    """Rows of the aggregates ``ids`` as StoredEvents with those UUIDs."""
    lookup = {i.hex: i for i in ids}
    return [StoredEvent(originator_id=lookup.get(key) or UUID(key), originator_version=version, topic=topic,
                        state=state) for key, version, topic, state in rows]


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


def store_tuples(recorder: Any, query: Any, params: list[Any]) -> list[Any]:
    """``store_rows`` as plain tuples (faster than SQLite's named rows or psycopg's dicts)."""
    with recorder.datastore.transaction(commit=False) as cursor:
        if is_postgres(recorder):
            from psycopg.rows import tuple_row

            cursor.row_factory = tuple_row
        else:
            cursor.execute(SQLITE_MMAP)
            cursor.sqlite_cursor.row_factory = None  # this cursor's own; the connection keeps its
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


__all__ = ["CHUNK", "SQLITE_MMAP", "Row", "as_uuid", "events_after", "existing_ids", "is_postgres",
           "latest_snapshots", "load_aggregates", "pg_table", "rows_after", "snapshot_rows", "sqlite_table",
           "store_rows", "store_tuples"]
