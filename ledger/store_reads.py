"""Small bulk reads of the event store that need no aggregate rebuilt: the current version of
many aggregates, and the stored state of one kind of event of many aggregates. Used by billing
runs to tell, for thousands of accounts at once, that nothing changed since the last invoice.

Both are asked and answer by the aggregates' ids as hex text (``UUID.hex``), as SQLite stores
them: a run asks about thousands of ids per batch, and parsing each answer into a UUID, then
hashing it (``UUID.__hash__`` is Python code), cost more than the queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from .bulk import CHUNK, is_postgres, pg_table, sqlite_table, store_tuples


def current_versions(app: Application[UUID], ids: Iterable[str]) -> dict[str, int]:
    """The version (latest event's) of each aggregate of ``ids`` (hex) that has events."""
    found: dict[str, int] = {}
    for chunk in _chunks(ids):
        if is_postgres(app.recorder):
            from psycopg.sql import SQL

            query: Any = SQL("SELECT originator_id, MAX(originator_version) AS v FROM {} "
                             "WHERE originator_id = ANY(%s) GROUP BY originator_id").format(pg_table(app.recorder))
            found |= {key.hex: int(v) for key, v in store_tuples(app.recorder, query, [_uuids(chunk)])}
        else:
            query = (f"SELECT originator_id, MAX(originator_version) AS v FROM {sqlite_table(app.recorder)} "
                     f"WHERE originator_id IN ({','.join('?' * len(chunk))}) GROUP BY originator_id")
            found |= dict(store_tuples(app.recorder, query, chunk))
    return found


def latest_states(app: Application[UUID], ids: Iterable[str], event_class: type,
                  version: int | None = None) -> dict[str, bytes]:
    """The stored state (as the store holds it) of the latest ``event_class`` event of each
    aggregate of ``ids`` (hex) that has one; with ``version``, of the event at that version
    when it is an ``event_class`` (one row read per aggregate instead of all of its events).
    No compression or encryption may be configured."""
    if app.mapper.compressor is not None or app.mapper.cipher is not None:
        raise ValueError("stored states are compressed or encrypted: decode them with the mapper")
    topic = get_topic(event_class)
    found: dict[str, bytes] = {}
    for chunk in _chunks(ids):
        if is_postgres(app.recorder):
            from psycopg.sql import SQL

            at: Any = SQL("") if version is None else SQL("AND originator_version = %s ")
            query: Any = SQL("SELECT originator_id, state FROM {} "
                             "WHERE originator_id = ANY(%s) AND topic = %s {}"
                             "ORDER BY originator_id, originator_version").format(pg_table(app.recorder), at)
            params: list[Any] = [_uuids(chunk), topic] + ([] if version is None else [version])
            found |= {key.hex: bytes(state) for key, state in store_tuples(app.recorder, query, params)}
        else:
            query = (f"SELECT originator_id, state FROM {sqlite_table(app.recorder)} "
                     f"WHERE originator_id IN ({','.join('?' * len(chunk))}) AND topic = ? "
                     f"{'' if version is None else 'AND originator_version = ? '}"
                     f"ORDER BY originator_id, originator_version")
            found |= dict(store_tuples(app.recorder, query, [*chunk, topic] + ([] if version is None else [version])))
    return found


def _chunks(ids: Iterable[str]) -> list[list[str]]:
    wanted = list(dict.fromkeys(ids))
    return [wanted[offset:offset + CHUNK] for offset in range(0, len(wanted), CHUNK)]


def _uuids(ids: list[str]) -> list[UUID]:
    """Hex ids as the UUIDs PostgreSQL's uuid column is compared with."""
    return [UUID(hex=i) for i in ids]


__all__ = ["current_versions", "latest_states"]
