"""Read model of sessions (who had which IP when) and usage buckets (hour and day)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from rating import UsageDelta, split_by_hour

from . import tables as t
from .base import ModelBatch, ReadModel, dec, fmt

DAY = 86_400


class _SessionBatch(ModelBatch):
    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.usage_delta: dict[tuple[str, str, int, str], list[int]] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, tuple[str, str]] = {}

    def on_Session_Registered(self, position: int, e: Any) -> None:
        session_id = str(e.originator_id)
        self.keys[session_id] = (e.nas_id, e.acct_session_id)
        # A billing period touched earlier in the same batch may have logged this session's
        # first UsageRated before its Registered event: complete the row made for it.
        for row in self.rows.values():
            if row["id"].startswith(session_id + ":") and not row["nas_id"]:
                row["nas_id"], row["acct_session_id"] = e.nas_id, e.acct_session_id
        self.conn.execute(insert(t.session_aggregates).values(
            id=str(e.originator_id), nas_id=e.nas_id, acct_session_id=e.acct_session_id))

    def _row(self, session_id: str, incarnation: str) -> dict[str, Any] | None:
        row_id = f"{session_id}:{incarnation}"
        if row_id not in self.rows:
            found = self.conn.execute(select(t.sessions).where(t.sessions.c.id == row_id)).mappings().first()
            if found is None:
                return None
            self.rows[row_id] = dict(found) | {"_new": False}
        return self.rows[row_id]

    def _key(self, session_id: str) -> tuple[str, str]:
        if session_id not in self.keys:
            found = self.conn.execute(select(t.session_aggregates).where(
                t.session_aggregates.c.id == session_id)).mappings().first()
            if found is None:
                return ("", "")  # registered later in this batch (not remembered: see above)
            self.keys[session_id] = (found["nas_id"], found["acct_session_id"])
        return self.keys[session_id]

    def _new_row(self, session_id: str, incarnation: str, e: Any) -> dict[str, Any]:
        nas_id, acct_session_id = self._key(session_id)
        row = {"id": f"{session_id}:{incarnation}", "nas_id": nas_id, "acct_session_id": acct_session_id,
               "username": "", "account_id": None, "started_at": int(incarnation),
               "updated_at": int(incarnation), "stopped_at": None, "upload_bytes": 0, "download_bytes": 0,
               "amount": "0", "currency": "", "framed_ip": "", "nas_ip": "",
               "calling_station_id": "", "terminate_cause": "", "_new": True}
        self.rows[row["id"]] = row
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
        new_rows = [_clean(r) for r in self.rows.values() if r["_new"]]
        if new_rows:
            self.conn.execute(insert(t.sessions), new_rows)
        for row in (r for r in self.rows.values() if not r["_new"]):
            values = _clean(row)
            self.conn.execute(update(t.sessions).where(t.sessions.c.id == values.pop("id")).values(**values))
        usage = t.usage
        for (account_id, granularity, start, band), (up, down) in sorted(self.usage_delta.items()):
            where = ((usage.c.account_id == account_id) & (usage.c.granularity == granularity)
                     & (usage.c.bucket_start == start) & (usage.c.band == band))
            up, down = min(up, BIGINT_MAX), min(down, BIGINT_MAX)
            existing = self.conn.execute(select(usage.c.upload_bytes, usage.c.download_bytes).where(where)).first()
            if existing is not None:
                self.conn.execute(update(usage).where(where).values(
                    upload_bytes=min(existing[0] + up, BIGINT_MAX), download_bytes=min(existing[1] + down, BIGINT_MAX)))
            changed = existing is not None
            if not changed:
                self.conn.execute(insert(usage).values(account_id=account_id, granularity=granularity,
                                                       bucket_start=start, band=band, upload_bytes=up,
                                                       download_bytes=down))


BIGINT_MAX = 2**63 - 1


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Row values for the table; byte totals saturate at BIGINT's range (only absurd counters
    from a faulty NAS get there; the ledger keeps the exact figures, the projector keeps going)."""
    values = {k: v for k, v in row.items() if not k.startswith("_")}
    for key in ("upload_bytes", "download_bytes"):
        values[key] = min(values[key], BIGINT_MAX)
    return values


class SessionModel(ReadModel):
    name = "sessions"
    tables = (t.session_aggregates, t.sessions, t.usage)
    batch_class = _SessionBatch
