"""Read model of sessions (who had which IP when) and usage buckets (hour and day)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, select, update

from rating import UsageDelta, split_by_hour

from . import tables as t
from .base import ModelBatch, ReadModel, chunks, dec, fmt

DAY = 86_400


class _SessionBatch(ModelBatch):
    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.usage_delta: dict[tuple[str, str, int, str], list[int]] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, tuple[str, str]] = {}
        self.registered: list[dict[str, str]] = []
        # Rows made before their session's key was known, by session id (see on_Session_Registered).
        self.keyless: dict[str, list[dict[str, Any]]] = {}
        self.prefetched = False

    def prepare(self, events: list[Any]) -> None:
        """Load the session rows and session keys the batch refers to, a chunk per query."""
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
        keyless = t.sessions_keyless
        for ids in chunks(sorted(registered)):
            row_ids.update(r[0] for r in self.conn.execute(select(keyless.c.row_id).where(
                keyless.c.session_id.in_(ids))))
        for ids in chunks(sorted(row_ids)):
            for found in self.conn.execute(select(t.sessions).where(t.sessions.c.id.in_(ids))).mappings():
                self._loaded(dict(found))
        for ids in chunks(sorted(session_ids)):
            query = select(t.session_aggregates).where(t.session_aggregates.c.id.in_(ids))
            for found in self.conn.execute(query).mappings():
                self.keys[found["id"]] = (found["nas_id"], found["acct_session_id"])
        self.prefetched = True

    def on_Session_Registered(self, position: int, e: Any) -> None:
        session_id = str(e.originator_id)
        self.keys[session_id] = (e.nas_id, e.acct_session_id)
        # A billing period touched earlier in the same batch may have logged this session's
        # first UsageRated before its Registered event: complete the row made for it.
        for row in self.keyless.pop(session_id, ()):
            if not row["nas_id"]:
                row["nas_id"], row["acct_session_id"] = e.nas_id, e.acct_session_id
        self.registered.append({"id": session_id, "nas_id": e.nas_id, "acct_session_id": e.acct_session_id})

    def _row(self, session_id: str, incarnation: str) -> dict[str, Any] | None:
        row_id = f"{session_id}:{incarnation}"
        if row_id not in self.rows and not self.prefetched:
            found = self.conn.execute(select(t.sessions).where(t.sessions.c.id == row_id)).mappings().first()
            if found is None:
                return None
            self._loaded(dict(found))
        return self.rows.get(row_id)

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
        row = {"id": f"{session_id}:{incarnation}", "nas_id": nas_id, "acct_session_id": acct_session_id,
               "username": "", "account_id": None, "started_at": int(incarnation),
               "updated_at": int(incarnation), "stopped_at": None, "upload_bytes": 0, "download_bytes": 0,
               "amount": "0", "currency": "", "framed_ip": "", "nas_ip": "",
               "calling_station_id": "", "terminate_cause": "", "_new": True, "_keyless": False}
        self.rows[row["id"]] = row
        if not nas_id:
            self.keyless.setdefault(session_id, []).append(row)
        return row

    def on_Session_RecordApplied(self, position: int, e: Any) -> None:
        session_id = str(e.originator_id)
        row = self._row(session_id, e.incarnation) or self._new_row(session_id, e.incarnation, e)
        row["updated_at"] = max(row["updated_at"], e.event_time)
        row["upload_bytes"] += e.upload_bytes
        row["download_bytes"] += e.download_bytes
        for field in ("username", "framed_ip", "nas_ip", "calling_station_id", "terminate_cause"):
            if getattr(e, field):
                row[field] = getattr(e, field)
        if e.account_id is not None:
            row["account_id"] = str(e.account_id)
        if e.closes and row["stopped_at"] is None:
            row["stopped_at"] = e.event_time

    def on_BillingPeriod_UsageRated(self, position: int, e: Any) -> None:
        session_id = str(e.session_id)
        row = self._row(session_id, e.incarnation) or self._new_row(session_id, e.incarnation, e)
        row["amount"] = fmt(dec(row["amount"]) + e.amount)
        row["currency"] = e.currency
        self._usage(str(e.account_id), e.band, UsageDelta(e.start, e.end, e.upload_bytes, e.download_bytes))

    def on_Session_ClosedByNas(self, position: int, e: Any) -> None:
        row = self._row(str(e.originator_id), e.incarnation)
        if row is not None and row["stopped_at"] is None:
            row["stopped_at"] = max(e.event_time, row["started_at"])
            row["terminate_cause"] = row["terminate_cause"] or "NAS-Reboot"

    def _usage(self, account_id: str, band: str, delta: UsageDelta) -> None:
        if delta.total_bytes == 0:
            return
        for part in split_by_hour(delta):
            hour = part.start - part.start % 3600
            for key in ((account_id, "hour", hour, band), (account_id, "day", hour - hour % DAY, band)):
                totals = self.usage_delta.setdefault(key, [0, 0])
                totals[0] += part.upload_bytes
                totals[1] += part.download_bytes

    def flush(self) -> None:
        if self.registered:
            self.conn.execute(insert(t.session_aggregates), self.registered)
        new_rows = [_clean(r) for r in self.rows.values() if r["_new"]]
        if new_rows:
            self.conn.execute(insert(t.sessions), new_rows)
        # Most updates leave the indexed columns as they were: leaving them out of the SET
        # spares SQLite the index maintenance (it updates every index a SET column is in).
        moved, kept = [], []
        for r in self.rows.values():
            if not r["_new"]:
                if (r["account_id"], r["framed_ip"]) != r["_indexed"]:
                    moved.append(_clean(r, _ALL_BUT_ID) | {"_id": r["id"]})
                else:
                    kept.append(_clean(r, _UNINDEXED) | {"_id": r["id"]})
        for rows, columns in ((moved, _ALL_BUT_ID), (kept, _UNINDEXED)):
            if rows:
                statement = (update(t.sessions).where(t.sessions.c.id == bindparam("_id"))
                             .values({name: bindparam(name) for name in columns}))
                self.conn.execute(statement, rows)
        self._flush_keyless()
        self._flush_usage()

    def _flush_keyless(self) -> None:
        """Remember rows still without their session's key; forget those that got it."""
        keyless = t.sessions_keyless
        made, completed = [], []
        for row in self.rows.values():
            if not row["nas_id"] and not row["_keyless"]:
                made.append({"session_id": row["id"].split(":", 1)[0], "row_id": row["id"]})
            elif row["nas_id"] and row["_keyless"]:
                completed.append({"k_row": row["id"]})
        if made:
            self.conn.execute(insert(keyless), made)
        if completed:
            self.conn.execute(delete(keyless).where(keyless.c.row_id == bindparam("k_row")), completed)

    def _flush_usage(self) -> None:
        if not self.usage_delta:
            return
        usage = t.usage
        existing: dict[tuple[str, str, int, str], tuple[int, int]] = {}
        low = min(key[2] for key in self.usage_delta)
        high = max(key[2] for key in self.usage_delta)
        for accounts in chunks(sorted({key[0] for key in self.usage_delta})):
            query = select(usage).where(and_(usage.c.account_id.in_(accounts), usage.c.bucket_start >= low,
                                             usage.c.bucket_start <= high))
            for row in self.conn.execute(query):
                existing[(row.account_id, row.granularity, row.bucket_start, row.band)] = (
                    row.upload_bytes, row.download_bytes)
        inserts, updates = [], []
        for key, (up, down) in sorted(self.usage_delta.items()):
            account_id, granularity, start, band = key
            old_up, old_down = existing.get(key, (0, 0))
            values = {"account_id": account_id, "granularity": granularity, "bucket_start": start, "band": band,
                      "upload_bytes": min(old_up + up, BIGINT_MAX), "download_bytes": min(old_down + down, BIGINT_MAX)}
            (updates if key in existing else inserts).append(values)
        if inserts:
            self.conn.execute(insert(usage), inserts)
        if updates:
            statement = (update(usage).where(and_(
                usage.c.account_id == bindparam("k_account"), usage.c.granularity == bindparam("k_granularity"),
                usage.c.bucket_start == bindparam("k_start"), usage.c.band == bindparam("k_band")))
                .values(upload_bytes=bindparam("upload_bytes"), download_bytes=bindparam("download_bytes")))
            self.conn.execute(statement, [
                {"k_account": v["account_id"], "k_granularity": v["granularity"], "k_start": v["bucket_start"],
                 "k_band": v["band"], "upload_bytes": v["upload_bytes"], "download_bytes": v["download_bytes"]}
                for v in updates])


BIGINT_MAX = 2**63 - 1
_COLUMNS = tuple(c.name for c in t.sessions.columns)
_ALL_BUT_ID = tuple(name for name in _COLUMNS if name != "id")
# Not in the table's key nor its indexes (see tables.py); started_at never changes anyway.
_UNINDEXED = tuple(name for name in _COLUMNS if name not in {"id", "account_id", "framed_ip", "started_at"})


def _clean(row: dict[str, Any], columns: tuple[str, ...] = _COLUMNS) -> dict[str, Any]:
    """Row values for the table; byte totals saturate at BIGINT's range (only absurd counters
    from a faulty NAS get there; the ledger keeps the exact figures, the projector keeps going)."""
    values = {name: row[name] for name in columns}
    for key in ("upload_bytes", "download_bytes"):
        if values[key] > BIGINT_MAX:
            values[key] = BIGINT_MAX
    return values


class SessionModel(ReadModel):
    name = "sessions"
    tables = (t.session_aggregates, t.sessions, t.sessions_keyless, t.usage)
    batch_class = _SessionBatch
