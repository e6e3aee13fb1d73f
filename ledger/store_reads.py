"""Small bulk reads of the event store that need no aggregate rebuilt: the current version of
many aggregates, and the stored state of one kind of event of many aggregates. Used by billing
runs to tell, for thousands of accounts at once, that nothing changed since the last invoice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from .bulk import CHUNK, as_uuid, is_postgres, pg_table, sqlite_table, store_rows


def current_versions(app: Application[UUID], ids: Iterable[UUID]) -> dict[UUID, int]:
    """The version (latest event's) of each aggregate of ``ids`` that has events."""
    found: dict[UUID, int] = {}
    for chunk in _chunks(ids):
        if is_postgres(app.recorder):
            from psycopg.sql import SQL

            query: Any = SQL("SELECT originator_id, MAX(originator_version) AS v FROM {} "
                             "WHERE originator_id = ANY(%s) GROUP BY originator_id").format(pg_table(app.recorder))
            rows = store_rows(app.recorder, query, [chunk])
        else:
            query = (f"SELECT originator_id, MAX(originator_version) AS v FROM {sqlite_table(app.recorder)} "
                     f"WHERE originator_id IN ({','.join('?' * len(chunk))}) GROUP BY originator_id")
            rows = store_rows(app.recorder, query, [i.hex for i in chunk])
        found |= {as_uuid(row["originator_id"]): int(row["v"]) for row in rows}
    return found


def latest_states(app: Application[UUID], ids: Iterable[UUID], event_class: type) -> dict[UUID, bytes]:
    """The stored state (as the store holds it) of the latest ``event_class`` event of each
    aggregate of ``ids`` that has one. No compression or encryption may be configured."""
    if app.mapper.compressor is not None or app.mapper.cipher is not None:
        raise ValueError("stored states are compressed or encrypted: decode them with the mapper")
    topic = get_topic(event_class)
    found: dict[UUID, bytes] = {}
    for chunk in _chunks(ids):
        if is_postgres(app.recorder):
            from psycopg.sql import SQL

            query: Any = SQL("SELECT originator_id, originator_version, state FROM {} "
                             "WHERE originator_id = ANY(%s) AND topic = %s "
                             "ORDER BY originator_id, originator_version").format(pg_table(app.recorder))
            rows = store_rows(app.recorder, query, [chunk, topic])
        else:
            query = (f"SELECT originator_id, originator_version, state FROM {sqlite_table(app.recorder)} "
                     f"WHERE originator_id IN ({','.join('?' * len(chunk))}) AND topic = ? "
                     f"ORDER BY originator_id, originator_version")
            rows = store_rows(app.recorder, query, [*(i.hex for i in chunk), topic])
        found |= {as_uuid(row["originator_id"]): bytes(row["state"]) for row in rows}
    return found


def _chunks(ids: Iterable[UUID]) -> list[list[UUID]]:
    wanted = list(dict.fromkeys(ids))
    return [wanted[offset:offset + CHUNK] for offset in range(0, len(wanted), CHUNK)]


__all__ = ["current_versions", "latest_states"]
