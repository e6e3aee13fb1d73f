"""The read-model projector: follows the ledger's notification log and applies each batch of
events to the read-model tables in one transaction together with its position, so a crash
at any point resumes exactly where the committed state says. Rebuilding from position 0
reproduces the live tables (guarantee 4)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

from eventsourcing.persistence import Notification
from sqlalchemy import Connection, Engine, Table, delete, insert, select, update

from rating import UsageDelta, split_by_hour

from . import tables as t

DAY = 86_400


def _dec(text: str | None) -> Decimal:
    return Decimal(text) if text else Decimal(0)


def _fmt(amount: Decimal) -> str:
    return format(amount.normalize(), "f") if amount else "0"


class ReadModelProjector:
    """Projects ledger events into the read-model tables of ``engine``."""

    NAME = "readmodels"

    def __init__(self, engine: Engine, decode: Callable[[Notification], Any], *, name: str = NAME) -> None:
        self.engine = engine
        self.decode = decode
        self.name = name
        self._progress = threading.Condition()
        self._position = -1
        self.listeners: list[Callable[[int], None]] = []

    # ---- position ------------------------------------------------------------------

    def create_tables(self) -> None:
        t.metadata.create_all(self.engine)

    def position(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(select(t.positions.c.position).where(t.positions.c.name == self.name)).scalar()
        return int(value or 0)

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Block until the projected position reaches ``position`` (read-your-writes)."""
        with self._progress:
            if self._position < 0:
                self._position = self.position()
            return self._progress.wait_for(lambda: self._position >= position, timeout=timeout)

    def _advanced(self, position: int) -> None:
        with self._progress:
            self._position = position
            self._progress.notify_all()
        for listener in self.listeners:
            listener(position)

    def reset(self) -> None:
        """Empty every read-model table and the position: the next run rebuilds from 0."""
        with self.engine.begin() as conn:
            for table in reversed(t.READ_MODEL_TABLES):
                conn.execute(delete(table))
            conn.execute(delete(t.positions).where(t.positions.c.name == self.name))
        self._advanced(0)

    # ---- processing ----------------------------------------------------------------

    def process(self, notifications: Sequence[Notification]) -> int:
        """Apply a batch (ids ascending, after the stored position); returns the new position."""
        if not notifications:
            return self.position()
        with self.engine.begin() as conn:
            stored = conn.execute(
                select(t.positions.c.position).where(t.positions.c.name == self.name).with_for_update()
            ).scalar()
            current = int(stored or 0)
            fresh = [n for n in notifications if n.id > current]
            if fresh:
                batch = _Batch(conn)
                for notification in fresh:
                    batch.apply(notification.id, self.decode(notification))
                batch.flush()
                new_position = fresh[-1].id
                if stored is None:
                    conn.execute(insert(t.positions).values(name=self.name, position=new_position))
                else:
                    conn.execute(update(t.positions).where(t.positions.c.name == self.name)
                                 .values(position=new_position))
                current = new_position
        self._advanced(current)
        return current


class _Batch:
    """Accumulates one batch's changes; additive figures are summed in memory first."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.balance_delta: dict[str, tuple[str, Decimal, int, int]] = {}
        self.usage_delta: dict[tuple[str, str, int], list[int]] = {}
        self.session_rows: dict[str, dict[str, Any]] = {}
        self.session_keys: dict[str, tuple[str, str]] = {}
        self.journal_rows: list[dict[str, Any]] = []

    def apply(self, position: int, event: Any) -> None:
        handler = getattr(self, "on_" + type(event).__qualname__.replace(".", "_"), None)
        if handler is not None:
            handler(position, event)

    # ---- catalogue, accounts, tokens -----------------------------------------------

    def on_Nas_Registered(self, position: int, e: Any) -> None:
        self.conn.execute(insert(t.nas).values(
            id=str(e.originator_id), address=e.address, name=e.name, secret=e.secret, vendor=e.vendor,
            require_message_authenticator=e.require_message_authenticator, site=e.site, retired=False))

    def on_Nas_Retired(self, position: int, e: Any) -> None:
        self.conn.execute(update(t.nas).where(t.nas.c.id == str(e.originator_id)).values(retired=True))

    def on_Plan_Created(self, position: int, e: Any) -> None:
        versions = [{"effective_from": e.effective_from, "terms": e.terms}]
        self.conn.execute(insert(t.plans).values(
            id=str(e.originator_id), name=e.name, currency=e.terms["currency"], versions=json.dumps(versions)))

    def on_Plan_Revised(self, position: int, e: Any) -> None:
        row = self.conn.execute(select(t.plans.c.versions).where(t.plans.c.id == str(e.originator_id))).scalar()
        versions = json.loads(row or "[]") + [{"effective_from": e.effective_from, "terms": e.terms}]
        self.conn.execute(update(t.plans).where(t.plans.c.id == str(e.originator_id))
                          .values(versions=json.dumps(versions)))

    def on_Account_Opened(self, position: int, e: Any) -> None:
        account_id = str(e.originator_id)
        self.conn.execute(insert(t.accounts).values(
            id=account_id, name=e.name, plan_id=str(e.plan_id), currency=e.currency, status="active",
            opened_at=e.opened_at, usernames=json.dumps(e.usernames)))
        self._balance(account_id, e.currency, Decimal(0), e.opened_at, position)

    def on_Account_PlanChanged(self, position: int, e: Any) -> None:
        self.conn.execute(update(t.accounts).where(t.accounts.c.id == str(e.originator_id))
                          .values(plan_id=str(e.plan_id)))

    def on_UsernameClaim_Claimed(self, position: int, e: Any) -> None:
        self.conn.execute(insert(t.usernames).values(username=e.username, account_id=str(e.account_id)))

    def on_ApiToken_Issued(self, position: int, e: Any) -> None:
        self.conn.execute(insert(t.api_tokens).values(
            id=str(e.originator_id), hashed=e.hashed, role=e.role, account_id=str(e.account_id) if e.account_id else None,
            label=e.label, revoked=False))

    def on_ApiToken_Revoked(self, position: int, e: Any) -> None:
        self.conn.execute(update(t.api_tokens).where(t.api_tokens.c.id == str(e.originator_id))
                          .values(revoked=True))

    # ---- money ---------------------------------------------------------------------

    def on_Payment_Received(self, position: int, e: Any) -> None:
        self.conn.execute(insert(t.payments).values(
            id=str(e.originator_id), account_id=str(e.account_id), amount=_fmt(e.amount), currency=e.currency,
            method=e.method, reference=e.reference, received_at=e.received_at))
        self._postings(position, f"payment:{e.originator_id}", e.received_at, e.postings)

    def _postings(self, position: int, ref: str, event_time: int, postings: Iterable[dict[str, str]]) -> None:
        for line, posting in enumerate(postings):
            amount = Decimal(posting["amount"])
            self.journal_rows.append({
                "position": position, "line": line, "transaction_ref": ref, "event_time": event_time,
                "ledger_account": posting["ledger_account"], "amount": _fmt(amount),
                "currency": posting["currency"]})
            account = posting["ledger_account"]
            if account.startswith("receivable:"):
                self._balance(account.split(":", 1)[1], posting["currency"], amount, event_time, position)

    def _balance(self, account_id: str, currency: str, amount: Decimal, at: int, position: int) -> None:
        _, total, last_at, _ = self.balance_delta.get(account_id, (currency, Decimal(0), at, position))
        self.balance_delta[account_id] = (currency, total + amount, max(last_at, at), position)

    # ---- sessions and usage ----------------------------------------------------------

    def on_Session_Registered(self, position: int, e: Any) -> None:
        self.session_keys[str(e.originator_id)] = (e.nas_id, e.acct_session_id)
        self.conn.execute(insert(t.session_aggregates).values(
            id=str(e.originator_id), nas_id=e.nas_id, acct_session_id=e.acct_session_id))

    def _session_row(self, session_id: str, incarnation: str) -> dict[str, Any] | None:
        row_id = f"{session_id}:{incarnation}"
        if row_id not in self.session_rows:
            found = self.conn.execute(select(t.sessions).where(t.sessions.c.id == row_id)).mappings().first()
            if found is None:
                return None
            self.session_rows[row_id] = dict(found) | {"_new": False}
        return self.session_rows[row_id]

    def on_Session_RecordApplied(self, position: int, e: Any) -> None:
        session_id = str(e.originator_id)
        row = self._session_row(session_id, e.incarnation)
        if row is None:
            nas_id, acct_session_id = self._session_key(session_id)
            row = {"id": f"{session_id}:{e.incarnation}", "nas_id": nas_id, "acct_session_id": acct_session_id,
                   "username": e.username, "account_id": None, "started_at": int(e.incarnation),
                   "updated_at": e.event_time, "stopped_at": None, "upload_bytes": 0, "download_bytes": 0,
                   "amount": "0", "currency": e.currency, "framed_ip": "", "nas_ip": "",
                   "calling_station_id": "", "terminate_cause": "", "_new": True}
            self.session_rows[row["id"]] = row
        row["updated_at"] = max(row["updated_at"], e.event_time)
        row["upload_bytes"] += e.upload_bytes
        row["download_bytes"] += e.download_bytes
        row["amount"] = _fmt(_dec(row["amount"]) + e.amount)
        for field in ("username", "framed_ip", "nas_ip", "calling_station_id", "terminate_cause", "currency"):
            if getattr(e, field):
                row[field] = getattr(e, field)
        if e.account_id is not None:
            row["account_id"] = str(e.account_id)
        if e.closes and row["stopped_at"] is None:
            row["stopped_at"] = e.event_time
        if e.account_id is not None:
            self._usage(str(e.account_id), UsageDelta(e.interval_start, e.interval_end,
                                                      e.upload_bytes, e.download_bytes))
            if e.postings:
                self._postings(position, f"usage:{session_id}:{e.originator_version}", e.event_time, e.postings)

    def on_Session_ClosedByNas(self, position: int, e: Any) -> None:
        row = self._session_row(str(e.originator_id), e.incarnation)
        if row is not None and row["stopped_at"] is None:
            row["stopped_at"] = max(e.event_time, row["started_at"])
            row["terminate_cause"] = row["terminate_cause"] or "NAS-Reboot"

    def _session_key(self, session_id: str) -> tuple[str, str]:
        if session_id not in self.session_keys:
            found = self.conn.execute(select(t.session_aggregates).where(
                t.session_aggregates.c.id == session_id)).mappings().first()
            self.session_keys[session_id] = (found["nas_id"], found["acct_session_id"]) if found else ("", "")
        return self.session_keys[session_id]

    def _usage(self, account_id: str, delta: UsageDelta) -> None:
        if delta.total_bytes == 0:
            return
        for part in split_by_hour(delta):
            hour = part.start - part.start % 3600
            for key in ((account_id, "hour", hour), (account_id, "day", hour - hour % DAY)):
                totals = self.usage_delta.setdefault(key, [0, 0])
                totals[0] += part.upload_bytes
                totals[1] += part.download_bytes

    # ---- flush -----------------------------------------------------------------------

    def flush(self) -> None:
        conn = self.conn
        if self.journal_rows:
            conn.execute(insert(t.journal), self.journal_rows)
        new_sessions = [_clean(r) for r in self.session_rows.values() if r["_new"]]
        if new_sessions:
            conn.execute(insert(t.sessions), new_sessions)
        for row in (r for r in self.session_rows.values() if not r["_new"]):
            values = _clean(row)
            conn.execute(update(t.sessions).where(t.sessions.c.id == values.pop("id")).values(**values))
        self._flush_balances()
        self._flush_usage()

    def _flush_balances(self) -> None:
        if not self.balance_delta:
            return
        ids = list(self.balance_delta)
        existing = {r.account_id: r for r in self.conn.execute(
            select(t.balances).where(t.balances.c.account_id.in_(ids)))}
        for account_id, (currency, amount, at, position) in self.balance_delta.items():
            old = existing.get(account_id)
            if old is None:
                self.conn.execute(insert(t.balances).values(
                    account_id=account_id, currency=currency, receivable=_fmt(amount), updated_at=at,
                    position=position))
            else:
                self.conn.execute(update(t.balances).where(t.balances.c.account_id == account_id).values(
                    receivable=_fmt(_dec(old.receivable) + amount), updated_at=max(old.updated_at, at),
                    position=position))

    def _flush_usage(self) -> None:
        if not self.usage_delta:
            return
        table: Table = t.usage
        for (account_id, granularity, start), (up, down) in sorted(self.usage_delta.items()):
            where = ((table.c.account_id == account_id) & (table.c.granularity == granularity)
                     & (table.c.bucket_start == start))
            changed = self.conn.execute(update(table).where(where).values(
                upload_bytes=table.c.upload_bytes + up, download_bytes=table.c.download_bytes + down)).rowcount
            if not changed:
                self.conn.execute(insert(table).values(account_id=account_id, granularity=granularity,
                                                       bucket_start=start, upload_bytes=up, download_bytes=down))


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}

