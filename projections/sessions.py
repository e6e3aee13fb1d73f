"""Read model of sessions (who had which IP when) and usage buckets (hour and day).

Live, the same sessions are touched batch after batch (an interim every few minutes until the
stop): their rows and keys are kept in memory between batches (``KeptSessions``, bounded), so a
batch reads only the rows it has not seen; usage buckets are added to by upserts, never read.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from operator import itemgetter
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, bindparam, case, delete, insert, literal_column, select, update

from rating import UsageDelta, split_by_hour

from . import tables as t
from .base import ModelBatch, ReadModel, chunks, dec, execute_many, execute_rows, fetch_in, fmt

DAY = 86_400


MAX_KEPT = 200_000  # session rows (and keys) kept between batches: ~1 KB each


class KeptSessions:
    """Session rows and session keys as the projector last committed them, kept between
    batches. ``keyless`` lists, by session id, the kept rows still without their session's key."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, tuple[str, str]] = {}
        self.keyless: dict[str, list[dict[str, Any]]] = {}

    def clear(self) -> None:
        self.rows, self.keys, self.keyless = {}, {}, {}

    def bound(self, limit: int | None = None) -> None:
        """Keep at most ``limit`` (``MAX_KEPT``) rows: closed sessions go first, then everything."""
        limit = MAX_KEPT if limit is None else limit
        if len(self.rows) > limit:
            self.rows = {k: r for k, r in self.rows.items() if r["stopped_at"] is None}
            if len(self.rows) > limit // 2:
                self.rows = {}
            self.keyless = {}
            for row in self.rows.values():
                if not row["nas_id"]:
                    self.keyless.setdefault(row["id"].split(":", 1)[0], []).append(row)
        if len(self.keys) > limit:
            self.keys = {}


class _SessionBatch(ModelBatch):
    def __init__(self, conn: Any, kept: KeptSessions | None = None) -> None:
        super().__init__(conn)
        self.kept = KeptSessions() if kept is None else kept
        self.usage_delta: dict[tuple[str, str, int, str], list[int]] = {}
        self.rows = self.kept.rows
        self.keys = self.kept.keys
        # Rows made before their session's key was known, by session id (see on_Session_Registered).
        self.keyless = self.kept.keyless
        self.touched: dict[str, dict[str, Any]] = {}  # rows this batch changes: what flush writes
        self.registered: list[dict[str, str]] = []
        self.prefetched = False

    def prepare(self, events: list[Any]) -> None:
        """Load the session rows and session keys the batch refers to and that are not kept
        from earlier batches, a chunk per query."""
        row_ids, session_ids, registered = set(), set(), set()
        for e in events:
            name = type(e).__qualname__
            if name == "Session.Registered":
                registered.add(str(e.originator_id))
            elif name in ("Session.RecordApplied", "Session.ClosedByNas"):
                row_ids.add(f"{e.originator_id}:{e.incarnation}")
                session_ids.add(str(e.originator_id))
            elif name == "BillingPeriod.UsageRated":
                row_ids.add(f"{e.session_id}:{e.incarnation}")
                session_ids.add(str(e.session_id))
        # Rows an earlier batch made before their session's Registered event (a UsageRated
        # logged first): completed by on_Session_Registered.
        conn = self.conn
        for ids in chunks(sorted(registered)):
            row_ids.update(r[0] for r in fetch_in(conn, t.sessions_keyless, ("row_id",), "session_id", ids))
        rows = self.rows
        for ids in chunks(sorted(i for i in row_ids if i not in rows)):
            for found in fetch_in(conn, t.sessions, _COLUMNS, "id", ids):
                self._loaded(dict(zip(_COLUMNS, found, strict=True)))
        # A key is needed only to make a row; a session registered in this batch has its key
        # from the event (a row made before it is completed by on_Session_Registered).
        unkeyed = {i.split(":", 1)[0] for i in row_ids if i not in rows} - registered
        for ids in chunks(sorted(i for i in unkeyed if i not in self.keys)):
            for session_id, nas_id, acct_session_id in fetch_in(
                    conn, t.session_aggregates, ("id", "nas_id", "acct_session_id"), "id", ids):
                self.keys[session_id] = (nas_id, acct_session_id)
        self.prefetched = True

    def on_Session_Registered(self, position: int, e: Any) -> None:
        session_id = str(e.originator_id)
        self.keys[session_id] = (e.nas_id, e.acct_session_id)
        # A billing period touched earlier in the same batch may have logged this session's
        # first UsageRated before its Registered event: complete the row made for it.
        for row in self.keyless.pop(session_id, ()):
            if not row["nas_id"]:
                row["nas_id"], row["acct_session_id"] = e.nas_id, e.acct_session_id
                self.touched[row["id"]] = row
        self.registered.append({"id": session_id, "nas_id": e.nas_id, "acct_session_id": e.acct_session_id})

    def _row(self, session_id: str, incarnation: str) -> dict[str, Any] | None:
        row_id = f"{session_id}:{incarnation}"
        if row_id not in self.rows and not self.prefetched:
            found = self.conn.execute(select(t.sessions).where(t.sessions.c.id == row_id)).mappings().first()
            if found is None:
                return None
            self._loaded(dict(found))
        row = self.rows.get(row_id)
        if row is not None:
            self.touched[row_id] = row
        return row

    def _loaded(self, row: dict[str, Any]) -> None:
        self.rows[row["id"]] = row | {"_new": False, "_keyless": not row["nas_id"],
                                      "_indexed": (row["account_id"], row["framed_ip"])}
        if not row["nas_id"]:  # its Registered event may be in this batch
            self.keyless.setdefault(row["id"].split(":", 1)[0], []).append(self.rows[row["id"]])

    def _key(self, session_id: str) -> tuple[str, str]:
        if session_id not in self.keys and not self.prefetched:
            found = self.conn.execute(select(t.session_aggregates).where(
                t.session_aggregates.c.id == session_id)).mappings().first()
            if found is not None:
                self.keys[session_id] = (found["nas_id"], found["acct_session_id"])
        # Missing: registered later in this batch (not remembered: see on_Session_Registered).
        return self.keys.get(session_id, ("", ""))

    def _new_row(self, session_id: str, incarnation: str, e: Any) -> dict[str, Any]:
        nas_id, acct_session_id = self._key(session_id)
        row: dict[str, Any] = {
            "id": f"{session_id}:{incarnation}", "nas_id": nas_id, "acct_session_id": acct_session_id,
            "username": "", "account_id": None, "started_at": int(incarnation),
            "updated_at": int(incarnation), "stopped_at": None, "upload_bytes": 0, "download_bytes": 0,
            "amount": "0", "currency": "", "framed_ip": "", "nas_ip": "",
            "calling_station_id": "", "terminate_cause": "", "_new": True, "_keyless": False}
        self.rows[row["id"]] = self.touched[row["id"]] = row
        if not nas_id:
            self.keyless.setdefault(session_id, []).append(row)
        return row

    def on_Session_RecordApplied(self, position: int, e: Any) -> None:
        session_id = str(e.originator_id)
        row = self._row(session_id, e.incarnation) or self._new_row(session_id, e.incarnation, e)
        if e.event_time > row["updated_at"]:
            row["updated_at"] = e.event_time
        row["upload_bytes"] += e.upload_bytes
        row["download_bytes"] += e.download_bytes
        # Each of the record's identifying fields replaces the row's when it is set (written
        # out rather than a loop of getattr calls: this runs for every record).
        if value := e.username:
            row["username"] = value
        if value := e.framed_ip:
            row["framed_ip"] = value
        if value := e.nas_ip:
            row["nas_ip"] = value
        if value := e.calling_station_id:
            row["calling_station_id"] = value
        if value := e.terminate_cause:
            row["terminate_cause"] = value
        if e.account_id is not None:
            row["account_id"] = str(e.account_id)
        if e.closes and row["stopped_at"] is None:
            row["stopped_at"] = e.event_time

    def on_BillingPeriod_UsageRated(self, position: int, e: Any) -> None:
        session_id = str(e.session_id)
        row = self._row(session_id, e.incarnation) or self._new_row(session_id, e.incarnation, e)
        amount = row["amount"]  # a Decimal in memory once added to; text as stored
        row["amount"] = (amount if amount.__class__ is Decimal else dec(amount)) + e.amount
        row["currency"] = e.currency
        self._usage(str(e.account_id), e.band, e.start, e.end, e.upload_bytes, e.download_bytes)

    def on_Session_ClosedByNas(self, position: int, e: Any) -> None:
        row = self._row(str(e.originator_id), e.incarnation)
        if row is not None and row["stopped_at"] is None:
            row["stopped_at"] = max(e.event_time, row["started_at"])
            row["terminate_cause"] = row["terminate_cause"] or "NAS-Reboot"

    def _usage(self, account_id: str, band: str, start: int, end: int, upload: int, download: int) -> None:
        if upload + download == 0:
            return
        hour = start - start % 3600
        if end <= hour + 3600:  # within one hour (most interims): what split_by_hour gives, unsplit
            self._bucket(account_id, band, hour, upload, download)
            return
        for part in split_by_hour(UsageDelta(start, end, upload, download)):
            self._bucket(account_id, band, part.start - part.start % 3600, part.upload_bytes, part.download_bytes)

    def _bucket(self, account_id: str, band: str, hour: int, upload: int, download: int) -> None:
        """Add to the hour's bucket and its day's."""
        for key in ((account_id, "hour", hour, band), (account_id, "day", hour - hour % DAY, band)):
            totals = self.usage_delta.setdefault(key, [0, 0])
            totals[0] += upload
            totals[1] += download

    def flush(self) -> None:
        conn = self.conn
        execute_many(conn, _INSERT_REGISTERED, self.registered)
        # Most updates leave the indexed columns as they were: leaving them out of the SET
        # spares SQLite the index maintenance (it updates every index a SET column is in).
        made, moved, kept = [], [], []
        for r in self.touched.values():
            if r["_new"]:
                made.append(_INSERT_VALUES(r))
            elif (r["account_id"], r["framed_ip"]) != r["_indexed"]:
                moved.append(_UPDATE_VALUES(r))
            else:
                kept.append(_UNINDEXED_VALUES(r))
        execute_rows(conn, _INSERT_SESSION, _COLUMNS, made)
        execute_rows(conn, _UPDATE_SESSION, _UPDATE_PARAMETERS, moved)
        execute_rows(conn, _UPDATE_UNINDEXED, _UNINDEXED_PARAMETERS, kept)
        self._flush_keyless()
        self._flush_usage()
        for r in self.touched.values():  # as stored now, for the next batch
            r["_new"], r["_keyless"], r["_indexed"] = False, not r["nas_id"], (r["account_id"], r["framed_ip"])
        self.touched = {}
        self.kept.bound()

    def _flush_keyless(self) -> None:
        """Remember rows still without their session's key; forget those that got it."""
        made, completed = [], []
        for row in self.touched.values():
            if not row["nas_id"] and not row["_keyless"]:
                made.append({"session_id": row["id"].split(":", 1)[0], "row_id": row["id"]})
            elif row["nas_id"] and row["_keyless"]:
                completed.append({"k_row": row["id"]})
        execute_many(self.conn, _INSERT_KEYLESS, made)
        execute_many(self.conn, _DELETE_KEYLESS, completed)

    def _flush_usage(self) -> None:
        """Add the batch's usage to its buckets: one upsert per bucket, nothing read."""
        if not self.usage_delta:
            return
        rows = [(account_id, granularity, start, band, min(up, BIGINT_MAX), min(down, BIGINT_MAX))
                for (account_id, granularity, start, band), (up, down) in sorted(self.usage_delta.items())]
        execute_rows(self.conn, _usage_upsert(self.conn.dialect.name), _USAGE_PARAMETERS, rows)


BIGINT_MAX = 2**63 - 1
_USAGE_PARAMETERS = ("account_id", "granularity", "bucket_start", "band", "upload_bytes", "download_bytes")
_USAGE_UPSERTS: dict[str, Any] = {}


def _usage_upsert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE adding to a bucket's totals, saturating at BIGINT's
    range like ``_row_values`` (without overflowing on the way: deltas are never negative)."""
    statement = _USAGE_UPSERTS.get(dialect)
    if statement is None:
        # Imported here: the PostgreSQL dialects package takes ~0.3 s to import.
        from sqlalchemy.dialects import postgresql, sqlite

        usage = t.usage
        insert_ = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(usage)

        def added(column: str) -> ColumnElement[Any]:
            stored, delta = usage.c[column], insert_.excluded[column]
            most = literal_column(str(BIGINT_MAX), BigInteger)
            return case((stored > most - delta, most), else_=stored + delta)

        statement = _USAGE_UPSERTS[dialect] = insert_.on_conflict_do_update(
            index_elements=[c.name for c in usage.primary_key.columns],
            set_={"upload_bytes": added("upload_bytes"), "download_bytes": added("download_bytes")})
    return statement


_COLUMNS = tuple(c.name for c in t.sessions.columns)
_ALL_BUT_ID = tuple(name for name in _COLUMNS if name != "id")
# Not in the table's key nor its indexes (see tables.py); started_at never changes anyway.
_UNINDEXED = ("id", *(name for name in _COLUMNS if name not in {"id", "account_id", "framed_ip", "started_at"}))
_INSERT_REGISTERED = insert(t.session_aggregates)
_INSERT_SESSION = insert(t.sessions)
_UPDATE_SESSION = (update(t.sessions).where(t.sessions.c.id == bindparam("id"))
                   .values({name: bindparam(name) for name in _ALL_BUT_ID}))
_UPDATE_UNINDEXED = (update(t.sessions).where(t.sessions.c.id == bindparam("id"))
                     .values({name: bindparam(name) for name in _UNINDEXED if name != "id"}))
_INSERT_KEYLESS = insert(t.sessions_keyless)
_DELETE_KEYLESS = delete(t.sessions_keyless).where(t.sessions_keyless.c.row_id == bindparam("k_row"))


def _row_values(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A kept row's values of ``names``, in that order, for the table: the amount as text, byte
    totals saturated at BIGINT's range (only absurd counters from a faulty NAS get there; the
    ledger keeps the exact figures, the projector keeps going)."""
    pick = itemgetter(*names)
    amount, upload, download = names.index("amount"), names.index("upload_bytes"), names.index("download_bytes")

    def values(row: dict[str, Any]) -> tuple[Any, ...]:
        picked = pick(row)
        if picked[amount].__class__ is Decimal or picked[upload] > BIGINT_MAX or picked[download] > BIGINT_MAX:
            fixed = list(picked)
            if fixed[amount].__class__ is Decimal:
                fixed[amount] = fmt(fixed[amount])
            fixed[upload], fixed[download] = min(fixed[upload], BIGINT_MAX), min(fixed[download], BIGINT_MAX)
            return tuple(fixed)
        return picked  # type: ignore[no-any-return]

    return values


# Each statement's parameters in the order of its SQL (``execute_rows`` checks it).
_UPDATE_PARAMETERS = (*_ALL_BUT_ID, "id")
_UNINDEXED_PARAMETERS = (*_UNINDEXED[1:], "id")
_INSERT_VALUES = _row_values(_COLUMNS)
_UPDATE_VALUES = _row_values(_UPDATE_PARAMETERS)
_UNINDEXED_VALUES = _row_values(_UNINDEXED_PARAMETERS)


class SessionModel(ReadModel):
    name = "sessions"
    tables = (t.session_aggregates, t.sessions, t.sessions_keyless, t.usage)
    batch_class = _SessionBatch

    def __init__(self) -> None:
        self.kept = KeptSessions()

    def batch(self, conn: Any) -> _SessionBatch:
        return _SessionBatch(conn, self.kept)

    def forget(self) -> None:
        self.kept.clear()
