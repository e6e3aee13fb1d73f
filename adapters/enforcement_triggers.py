"""What in the ledger log makes the enforcer look at an account, read without decoding events
it does not act on.

The enforcer follows every ledger event, but acts on a few kinds only: rated usage, payments,
fair-use caps, new billing periods, sessions opening, and account changes; plan changes
only matter to its cache. They are told apart by the notification's topic (resolved to the
event class once per topic, so a renamed-and-registered topic still counts), and only those
are decoded, with orjson and just the fields the enforcer reads. A stored state this reader
does not know how to read (a cipher or compressor, a transcoding it does not know, an
upcast class) goes through the application's mapper, so it is never wrong, only slower.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import Mapper, Notification
from eventsourcing.utils import get_topic, resolve_topic

from domain.enforcement import THROTTLE, Decision
from ledger.account import Account, Payment
from ledger.billing_period import BillingPeriod
from ledger.bulk import as_uuid, is_postgres, pg_table, sqlite_table, store_tuples
from ledger.catalog import Plan
from ledger.session import Session

# Event class qualified name -> what it means to the enforcer.
USAGE, PAYMENT, FAIR_USE, PERIOD, SESSION, ACCOUNT_CHECK, ACCOUNT, PLAN = (
    "usage", "payment", "fair-use", "period", "session", "account-check", "account", "plan")
KINDS: dict[str, str] = {
    "BillingPeriod.UsageRated": USAGE,
    "Payment.Received": PAYMENT,
    "BillingPeriod.FairUseCapReached": FAIR_USE,
    "BillingPeriod.Opened": PERIOD,
    "Session.RecordApplied": SESSION,
    # Account changes that can change a decision (the others only refresh the cache).
    **{f"Account.{name}": ACCOUNT_CHECK for name in ("AddonPurchased", "Suspended", "Resumed", "PlanChanged",
                                                    "BillingSettingsChanged", "Terminated")},
}


def _event_classes(aggregate: type[Aggregate]) -> list[type]:
    return [value for value in vars(aggregate).values()
            if isinstance(value, type) and issubclass(value, Aggregate.Event)]


# Every topic the enforcer reads: the ones it acts on, and every Account and Plan event (they
# change what it has cached). Everything else in the log is skipped by the database.
WATCHED_CLASSES: list[type] = [
    BillingPeriod.UsageRated, Payment.Received,  # type: ignore[attr-defined]
    BillingPeriod.FairUseCapReached, BillingPeriod.Opened,  # type: ignore[attr-defined]
    Session.RecordApplied,  # type: ignore[attr-defined]
    *_event_classes(Account), *_event_classes(Plan)]
WATCHED_TOPICS = tuple(sorted({get_topic(cls) for cls in WATCHED_CLASSES}))
# The kinds of a billing period's events: each carries the period's account.
PERIOD_KINDS = frozenset((USAGE, PERIOD, FAIR_USE))


@dataclass
class Triggers:
    """Why the enforcer looks at one account in this batch."""

    check: bool = False
    fair_use: Decision | None = None
    period_reset: bool = False
    new_sessions: bool = False


@dataclass
class BatchTriggers:
    """A batch of the log read for the enforcer: triggers per account (by id's hex), and the
    accounts (hex, version) and plans whose state changed in it."""

    accounts: dict[str, Triggers] = field(default_factory=dict)
    changed_accounts: list[tuple[str, int]] = field(default_factory=list)
    changed_plans: set[UUID] = field(default_factory=set)

    def of(self, account: str) -> Triggers:
        found = self.accounts.get(account)
        if found is None:
            found = self.accounts[account] = Triggers()
        return found


class WatchedRow(NamedTuple):
    """One watched notification as stored: the originator id as the store gives it (hex text
    from SQLite, a UUID from PostgreSQL), so no UUID is made for the many that need none. A
    named tuple: made from the store's plain tuple, where a frozen dataclass's ``__init__``
    set each field through ``object.__setattr__`` (~2 rows of the log per record)."""

    id: int
    originator_id: Any
    originator_version: int
    topic: str
    state: bytes

    def notification(self) -> Notification:
        return Notification(id=self.id, originator_id=as_uuid(self.originator_id),
                            originator_version=self.originator_version, topic=self.topic, state=self.state)


def watched_rows(recorder: Any, start: int, stop: int, limit: int) -> list[WatchedRow]:
    """The watched notifications with ids in [start, stop], at most ``limit``, ascending: read
    on the recorder's own connection like eventsourcing's select_notifications(topics=...)
    does, without making a Notification and a UUID for each."""
    if is_postgres(recorder):
        from psycopg.sql import SQL

        query: Any = SQL("SELECT notification_id AS id, originator_id, originator_version, topic, state FROM {} "
                         "WHERE notification_id >= %s AND notification_id <= %s AND topic = ANY(%s) "
                         "ORDER BY notification_id LIMIT %s").format(pg_table(recorder))
        params: list[Any] = [start, stop, list(WATCHED_TOPICS), limit]
    else:
        marks = ",".join("?" * len(WATCHED_TOPICS))
        query = (f"SELECT rowid AS id, originator_id, originator_version, topic, state FROM {sqlite_table(recorder)} "
                 f"WHERE rowid >= ? AND rowid <= ? AND topic IN ({marks}) ORDER BY rowid LIMIT ?")
        params = [start, stop, *WATCHED_TOPICS, limit]
    return [WatchedRow(number, originator, version, topic, state if type(state) is bytes else bytes(state))
            for number, originator, version, topic, state in store_tuples(recorder, query, params)]


class _Unreadable(Exception):
    """A stored state this reader does not read: the mapper decodes it."""


def _hex(value: Any) -> str | None:
    """An id field of a stored state as 32 hex digits (None stays None)."""
    if value is None:
        return None
    if type(value) is dict and value.get("_type_") == "uuid_hex" and type(value.get("_data_")) is str:
        text: str = value["_data_"]
        if len(text) == 32:
            return text.lower()
    raise _Unreadable(value)


class TriggerReader:
    """Classifies the ledger's notifications for the enforcer (see the module's docstring).

    A billing period belongs to one account for good (its id is derived from the account's,
    and its events carry that account), so once one of its events has been read, its rated
    usages (a kilobyte of JSON each, ~5 us to parse, most of what the enforcer reads) are
    attributed by the period's id without reading them again."""

    period_limit = 200_000  # periods remembered; beyond that the memo starts over

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        self.plain = mapper.cipher is None and mapper.compressor is None
        self.kinds: dict[str, str | None] = {}
        # Billing period id (as the store gives it) -> its account's id hex.
        self.period_accounts: dict[Any, str] = {}

    def _kind(self, topic: str) -> str | None:
        kind = self.kinds.get(topic, "")
        if kind == "":
            cls = resolve_topic(topic)
            name = cls.__qualname__
            kind = KINDS.get(name)
            if kind is None and name.startswith("Account."):
                kind = ACCOUNT
            elif kind is None and name.startswith("Plan."):
                kind = PLAN
            if kind not in (None, ACCOUNT, ACCOUNT_CHECK, PLAN) and getattr(cls, "class_version", 1) != 1:
                kind = "mapper:" + kind  # stored states may need upcasting: decode fully
            self.kinds[topic] = kind
        return kind

    def read(self, rows: Iterable[WatchedRow | Notification]) -> BatchTriggers:
        batch = BatchTriggers()
        for row in rows:
            kind = self._kind(row.topic)
            if kind is None:
                continue
            if kind in (ACCOUNT, ACCOUNT_CHECK):
                account = as_uuid(row.originator_id).hex
                batch.changed_accounts.append((account, row.originator_version))
                if kind == ACCOUNT_CHECK:
                    batch.of(account).check = True
            elif kind == PLAN:
                batch.changed_plans.add(as_uuid(row.originator_id))
            elif kind == USAGE and (known := self.period_accounts.get(row.originator_id)) is not None:
                batch.of(known).check = True
            else:
                try:
                    if not self.plain or kind.startswith("mapper:"):
                        raise _Unreadable(kind)
                    account = self._read_state(kind, orjson.loads(row.state), batch)
                except (_Unreadable, orjson.JSONDecodeError, KeyError, TypeError):
                    notification = row.notification() if isinstance(row, WatchedRow) else row
                    account = self._read_event(kind.removeprefix("mapper:"), self.mapper.to_domain_event(notification),
                                               batch)
                if kind in PERIOD_KINDS and account is not None:
                    if len(self.period_accounts) >= self.period_limit:
                        self.period_accounts.clear()
                    self.period_accounts[row.originator_id] = account
        return batch

    @staticmethod
    def _read_state(kind: str, state: dict[str, Any], batch: BatchTriggers) -> str | None:
        """Reads one watched event's stored state into ``batch``; returns the account (id hex)
        it was attributed to, if any."""
        if kind == SESSION:
            if state["opened"] is True:
                account = _hex(state["account_id"])
                if account is not None:
                    batch.of(account).new_sessions = True
                return account
            if state["opened"] is not False:
                raise _Unreadable(state["opened"])
            return None
        account = _hex(state["account_id"])
        if account is None:
            raise _Unreadable(None)
        if kind in (USAGE, PAYMENT):
            batch.of(account).check = True
        elif kind == PERIOD:
            batch.of(account).period_reset = True
        elif kind == FAIR_USE:
            action, rate = state["action"], state["throttle_rate"]
            if type(action) is not str or type(rate) is not str:
                raise _Unreadable(action)
            batch.of(account).fair_use = Decision(action, "fair-use", rate if action == THROTTLE else "")
        return account

    @staticmethod
    def _read_event(kind: str, event: Any, batch: BatchTriggers) -> str | None:
        """The reference reading, from a decoded domain event; returns the account (id hex)
        it was attributed to, if any."""
        if kind == SESSION:
            if event.opened and event.account_id is not None:
                batch.of(event.account_id.hex).new_sessions = True
                return str(event.account_id.hex)
            return None
        if kind in (USAGE, PAYMENT):
            batch.of(event.account_id.hex).check = True
        elif kind == PERIOD:
            batch.of(event.account_id.hex).period_reset = True
        elif kind == FAIR_USE:
            rate = event.throttle_rate if event.action == THROTTLE else ""
            batch.of(event.account_id.hex).fair_use = Decision(event.action, "fair-use", rate)
        else:
            return None
        return str(event.account_id.hex)


def read_by_mapper(mapper: Mapper[Any], notifications: Sequence[Notification]) -> BatchTriggers:
    """The same reading with every watched event decoded by the mapper (the reference the
    fast reading is tested against)."""
    reader = TriggerReader(mapper)
    batch = BatchTriggers()
    for notification in notifications:
        kind = reader._kind(notification.topic)
        if kind is None:
            continue
        kind = kind.removeprefix("mapper:")
        event = mapper.to_domain_event(notification)
        if kind in (ACCOUNT, ACCOUNT_CHECK):
            batch.changed_accounts.append((event.originator_id.hex, event.originator_version))
            if kind == ACCOUNT_CHECK:
                batch.of(event.originator_id.hex).check = True
        elif kind == PLAN:
            batch.changed_plans.add(event.originator_id)
        else:
            TriggerReader._read_event(kind, event, batch)
    return batch
