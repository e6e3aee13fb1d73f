"""The rebuild's fold: the catalog, money and sessions read models kept as plain rows in memory
while a rebuild reads the ledger's log, written in bulk at the end of each window.

Live projection (``ReadModelProjector.process``) is the reference: every rule here mirrors a
handler of ``catalog.py``, ``money.py`` or ``sessions.py`` and must give the same rows
(``tests/test_rebuild.py`` compares every table on random traffic). What makes it cheaper than
the handlers: the hot events (session records, rated usage, accounts and usernames, ~95 % of a
log) are read straight from the stored JSON (orjson) without building event objects; every row
the rebuild made stays in memory, so nothing is read back from the database; amounts are summed
as Decimal and formatted once, when written. Rarer events arrive decoded (``decoding.py``) and
are folded by the same rules through their attributes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, NamedTuple

import orjson

from rating import UsageDelta, split_by_hour

from . import tables as t
from .base import fmt
from .money import _subscriber, _subscribers
from .sessions import BIGINT_MAX, DAY

Row = dict[str, Any]
# Decimal text that fmt() gives back unchanged: no exponent, no leading or trailing zeros
# (besides a lone "0"), at most 60 digits (well within the projector's 80-digit precision).
_CANONICAL = re.compile(r"-?(?:0|[1-9][0-9]{0,59})(?:\.[0-9]{0,59}[1-9])?")


_ids: dict[str, str] = {}
_UNSEEN = object()  # a ledger account not looked up yet


def uuid_text(value: Any) -> Any:
    """A stored id as the handlers see it (``str()`` of the decoded value): eventsourcing's
    ``{"_type_": "uuid_hex", ...}`` as hyphenated text (remembered: an account's id is in
    every event of its usage), None as None."""
    if value.__class__ is dict:
        if value.get("_type_") != "uuid_hex":
            raise ValueError(f"not an id: {value!r}")
        hex_text = value["_data_"]
        text = _ids.get(hex_text)
        if text is None:
            if len(_ids) > 500_000:
                _ids.clear()
            h = hex_text.lower()
            text = _ids[hex_text] = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        return text
    return value if value is None else str(value)


def decimal_value(value: Any) -> Decimal:
    """A stored ``{"_type_": "decimal_str", ...}`` as Decimal."""
    if value.__class__ is dict and value.get("_type_") == "decimal_str":
        return Decimal(value["_data_"])
    raise ValueError(f"not a decimal: {value!r}")


class TableRows:
    """One table's rows held in memory by key, with what the next flush must write: rows not
    stored yet (``new``) and stored rows changed since (``dirty``)."""

    def __init__(self, table: Any, key: Callable[[Row], Any]) -> None:
        self.table = table
        self.key = key
        self.rows: dict[Any, Row] = {}
        self.new: dict[Any, Row] = {}
        self.dirty: dict[Any, Row] = {}

    def insert(self, row: Row) -> None:
        key = self.key(row)
        if key in self.rows:  # the live projector's INSERT would fail on the duplicate key
            raise ValueError(f"{self.table.name}: row {key!r} made twice")
        self.rows[key] = self.new[key] = row

    def changed(self, key: Any, row: Row) -> None:
        if key not in self.new:
            self.dirty[key] = row

    def take(self) -> tuple[list[Row], list[Row]]:
        """(new rows, changed stored rows) since the last call."""
        new, dirty = list(self.new.values()), list(self.dirty.values())
        self.new, self.dirty = {}, {}
        return new, dirty


# Events of the sessions part (the sessions, sessions_keyless and session_aggregates
# tables); every other rule is the money part's (the catalog, balances, journal, payments and
# usage buckets). A rated usage event feeds both: the session's amount, and the usage
# buckets, the journal and the balance.
SESSION_EVENTS = frozenset({"Session.RecordApplied", "Session.Registered", "Session.ClosedByNas",
                            "BillingPeriod.UsageRated"})
# What a second process folding the sessions part reads itself: the rated usages' session
# amounts come from the rebuild's process, which parses rated usages anyway (``Fold.rated``).
SESSION_PROCESS_EVENTS = SESSION_EVENTS - {"BillingPeriod.UsageRated"}


# The accounts (by the last hex digit of their id) whose rated usages a second process folds
# whole (the session amount, usage buckets, journal lines and balance change; ``Fold(share=)``)
# when it folds the sessions part: the rebuild's own process, which folds everything else and
# writes every table, bounded the two-process rebuild with the second one idle a third of it.
# By account, so that each usage bucket is made by one process; balances are merged.
SECOND_SHARE = frozenset("012345")


class ShareMismatch(Exception):
    """A rated usage whose account is not of the share the process was given (the log's
    query split them otherwise): the window must be folded another way."""


def account_digit(s: dict[str, Any]) -> str | None:
    """The last hex digit of a stored rated usage's account id (what the share is by), None
    when it has no stored id."""
    account = s["account_id"]
    if account.__class__ is dict and account.get("_type_") == "uuid_hex":
        data = account["_data_"]
        if data.__class__ is str and len(data) == 32:
            return data[-1]
    return None


class SessionWrites(NamedTuple):
    """What a window's flush writes to the sessions part's tables (picklable: a second
    process may fold the sessions part)."""

    sessions_new: list[tuple[Any, ...]]  # in the table's column order
    sessions_dirty: list[tuple[Any, ...]]
    keyless_made: list[Row]
    keyless_completed: list[str]
    registered: list[tuple[str, str, str]]  # session_aggregates rows: id, nas_id, acct_session_id
    usage_new: list[tuple[Any, ...]]
    usage_dirty: list[tuple[Any, ...]]


class Fold:
    """State of the catalog, money and sessions read models during a rebuild: both parts, or
    one of them (``sessions`` / ``money`` False) when another process folds the other."""

    def __init__(self, *, sessions: bool = True, money: bool = True, share: frozenset[str] = frozenset()) -> None:
        """``share``: with ``sessions`` and not ``money``, the accounts whose rated usages
        this fold folds whole (journal lines and balance changes taken with ``take_share``);
        with ``money`` and not ``sessions``, those this fold must not be given."""
        by_id: Callable[[Row], Any] = lambda r: r["id"]  # noqa: E731
        self.nas = TableRows(t.nas, by_id)
        self.plans = TableRows(t.plans, by_id)
        self.accounts = TableRows(t.accounts, by_id)
        self.usernames = TableRows(t.usernames, lambda r: r["username"])
        self.api_tokens = TableRows(t.api_tokens, by_id)
        self.balances = TableRows(t.balances, lambda r: r["account_id"])
        self.sessions = TableRows(t.sessions, by_id)
        # Usage buckets by key (account, granularity, start, band) -> [up, down, stored]. A rated
        # usage adds to its hour buckets only; the day buckets are added to at a window's end
        # from what each hour bucket gained in it (``take_usage``): one bucket per event, not two.
        self.usage: dict[tuple[str, str, int, str], list[int]] = {}
        self.usage_new: list[tuple[str, str, int, str]] = []
        self.usage_dirty: dict[tuple[str, str, int, str], list[int]] = {}
        # Hour buckets added to since the last take -> [up, down, stored, up taken, down taken].
        self.hours_touched: dict[tuple[str, str, int, str], list[int]] = {}
        self.journal: list[tuple[Any, ...]] = []
        self.payments: list[Row] = []
        self.session_keys: dict[str, tuple[str, str]] = {}
        self.registered: list[tuple[str, str, str]] = []
        self.keyless: dict[str, list[Row]] = {}  # rows without their session's key, by session id
        self.keyless_stored: set[str] = set()  # their row ids in sessions_keyless
        self.hot: dict[str, Callable[[int, str, int, dict[str, Any]], None]] = {}
        self.cold: dict[str, Callable[[int, Any], None]] = {}
        # A rated usage feeds the session's amount (sessions part), and the usage buckets, the
        # journal and the balance (money part: the buckets are of the sessions model, but folded
        # where a rated usage's first bytes are read anyway; the second process is the longer one).
        if sessions:
            self.hot |= {"Session.RecordApplied": self.record_applied, "Session.Registered": self.session_registered,
                         "BillingPeriod.UsageRated": self.usage_rated_sessions}
            self.cold |= {"Session.ClosedByNas": self.closed_by_nas}
        if money:
            self.hot |= {"Account.Opened": self.account_opened, "UsernameClaim.Claimed": self.username_claimed,
                         "BillingPeriod.UsageRated": self.usage_rated_money}
            self.cold |= {
                "Nas.Registered": self.nas_registered, "Nas.Retired": self.nas_retired,
                "Plan.Created": self.plan_created, "Plan.Revised": self.plan_revised,
                "Account.PlanChanged": self.plan_changed, "ApiToken.Issued": self.token_issued,
                "ApiToken.Revoked": self.token_revoked, "Payment.Received": self.payment_received,
                "Account.AddonPurchased": self.addon_purchased, "Invoice.Issued": self.invoice_issued,
                "CreditNote.Issued": self.credit_note_issued}
        # How a hot event's stored JSON is read (orjson.loads unless named here).
        self.parsers: dict[str, Callable[[bytes], dict[str, Any]]] = {}
        if sessions and money:
            self.hot["BillingPeriod.UsageRated"] = self.usage_rated
        elif money:
            # The other process folds the sessions part but does not read rated usages: this
            # one hands it each one's session amount (``rated``, in log order).
            self.hot["BillingPeriod.UsageRated"] = self.usage_rated_elsewhere
        self.rated: list[tuple[int, str, str, str, str]] = []  # position, session id, incarnation, amount, currency
        self.share = share
        if share and sessions and not money:
            self.hot["BillingPeriod.UsageRated"] = self.usage_rated_share
        # Session row -> position of the rated usage its currency is from: with a share, the
        # session amounts of one session come in two orders (its share's in log order, the
        # others' after), and the currency must be the one logged last.
        self.currency_at: dict[str, int] = {}
        self.closes_unmatched: dict[str, int] = {}  # session row id -> position of a close that found no row

    # Hot events: (position, originator id as text, originator version, stored state).

    def record_applied(self, position: int, session_id: str, version: int, s: dict[str, Any]) -> None:
        # The hottest rule (a third of a log): fields one by one, no loop, no calls but the id's.
        incarnation = s["incarnation"]
        key = f"{session_id}:{incarnation}"
        sessions = self.sessions
        row = sessions.rows.get(key) or self._new_session(session_id, incarnation)
        event_time = s["event_time"]
        if event_time > row["updated_at"]:
            row["updated_at"] = event_time
        row["upload_bytes"] += s["upload_bytes"]
        row["download_bytes"] += s["download_bytes"]
        if value := s["username"]:
            row["username"] = value
        if value := s["framed_ip"]:
            row["framed_ip"] = value
        if value := s["nas_ip"]:
            row["nas_ip"] = value
        if value := s["calling_station_id"]:
            row["calling_station_id"] = value
        if value := s["terminate_cause"]:
            row["terminate_cause"] = value
        if (account_id := s["account_id"]) is not None:
            row["account_id"] = uuid_text(account_id)
        if s["closes"] and row["stopped_at"] is None:
            row["stopped_at"] = event_time
        if key not in sessions.new:  # TableRows.changed
            sessions.dirty[key] = row

    def usage_rated(self, position: int, period_id: str, version: int, s: dict[str, Any]) -> None:
        self.usage_rated_sessions(position, period_id, version, s)
        self.usage_rated_money(position, period_id, version, s)

    def usage_rated_sessions(self, position: int, period_id: str, version: int, s: dict[str, Any]) -> None:
        """A rated usage's session amount."""
        self._session_amount(uuid_text(s["session_id"]), s["incarnation"], decimal_value(s["amount"]), s["currency"])

    def _session_amount(self, session_id: str, incarnation: str, amount: Decimal, currency: str) -> None:
        key = f"{session_id}:{incarnation}"
        sessions = self.sessions
        row = sessions.rows.get(key) or self._new_session(session_id, incarnation)
        row["amount"] += amount
        row["currency"] = currency
        if key not in sessions.new:  # TableRows.changed
            sessions.dirty[key] = row

    def usage_rated_elsewhere(self, position: int, period_id: str, version: int, s: dict[str, Any]) -> None:
        """A rated usage's money part, and its session amount kept for the process folding the
        sessions part (``take_rated``)."""
        if self.share and account_digit(s) in self.share:
            raise ShareMismatch(f"position {position}: a rated usage of the second process's share")
        amount = s["amount"]
        if amount.__class__ is not dict or amount.get("_type_") != "decimal_str":
            raise ValueError(f"not a decimal: {amount!r}")
        self.rated.append((position, uuid_text(s["session_id"]), s["incarnation"], amount["_data_"], s["currency"]))
        self.usage_rated_money(position, period_id, version, s)

    def take_rated(self) -> list[tuple[int, str, str, str, str]]:
        """The session amounts of the rated usages folded since the last call, in log order."""
        rated, self.rated = self.rated, []
        return rated

    def apply_rated(self, rated: list[tuple[int, str, str, str, str]]) -> bool:
        """Fold the session amounts of a window's rated usages (``take_rated`` of the other
        process) after this window's own events. That order gives the rows log order gives
        (amounts and currencies commute with every other rule here; a row is the same whichever
        event makes it; a session key found first completes its rows either way) except where
        a NAS's close found no row that a rated usage logged before the close would have made:
        False then, and the window must be folded another way."""
        unmatched = self.closes_unmatched
        for position, session_id, incarnation, amount, currency in rated:
            if unmatched:
                closed_at = unmatched.get(f"{session_id}:{incarnation}")
                if closed_at is not None and position < closed_at:
                    return False
            if self.share:
                self._session_amount_at(position, session_id, incarnation, Decimal(amount), currency)
            else:
                self._session_amount(session_id, incarnation, Decimal(amount), currency)
        self.closes_unmatched = {}
        return True

    def usage_rated_share(self, position: int, period_id: str, version: int, s: dict[str, Any]) -> None:
        """A rated usage of this process's share (the second's): all of it, in log order with
        the sessions part's own events."""
        if account_digit(s) not in self.share:
            raise ShareMismatch(f"position {position}: a rated usage outside the share")
        self._session_amount_at(position, uuid_text(s["session_id"]), s["incarnation"], decimal_value(s["amount"]),
                                s["currency"])
        self.usage_rated_money(position, period_id, version, s)

    def _session_amount_at(self, position: int, session_id: str, incarnation: str, amount: Decimal,
                           currency: str) -> None:
        """``_session_amount`` where the amounts may come out of log order: the currency is the
        one of the latest position."""
        key = f"{session_id}:{incarnation}"
        sessions = self.sessions
        row = sessions.rows.get(key) or self._new_session(session_id, incarnation)
        row["amount"] += amount
        if position >= self.currency_at.get(key, 0):
            self.currency_at[key] = position
            row["currency"] = currency
        if key not in sessions.new:  # TableRows.changed
            sessions.dirty[key] = row

    def take_share(self) -> tuple[list[tuple[Any, ...]], list[Row]]:
        """The share's journal lines and balance changes folded since the last call: one row
        per account as if its balance had none before (``merge_balances`` adds them up)."""
        journal, self.journal = self.journal, []
        changes, _ = self.balances.take()
        self.balances = TableRows(t.balances, lambda r: r["account_id"])
        return journal, changes

    def merge_balances(self, changes: list[Row]) -> None:
        """Add the other process's balance changes of a window (``take_share``) to the
        balances, once this window's own events are folded: the same rows as folding every
        posting here in log order (sums; the latest time; the latest position, with its
        currency for a balance made in this window, as ``_balance`` keeps it)."""
        balances = self.balances
        rows, new = balances.rows, balances.new
        for change in changes:
            account_id = change["account_id"]
            row = rows.get(account_id)
            if row is None:
                balances.insert(dict(change))
                continue
            if account_id in new:
                if change["position"] > row["position"]:
                    row["currency"] = change["currency"]
            else:
                balances.dirty[account_id] = row
            row["receivable"] += change["receivable"]
            if change["updated_at"] > row["updated_at"]:
                row["updated_at"] = change["updated_at"]
            if change["position"] > row["position"]:
                row["position"] = change["position"]

    def usage_rated_money(self, position: int, period_id: str, version: int, s: dict[str, Any]) -> None:
        """A rated usage's usage buckets, journal lines and balance (a third of a log's events,
        most of the rebuild's own process: ``_usage`` and ``postings``' common cases inline)."""
        up, down = s["upload_bytes"], s["download_bytes"]
        if up or down:
            account = s["account_id"]
            hex_id = account["_data_"] if account.__class__ is dict and account.get("_type_") == "uuid_hex" else None
            account_id = _ids.get(hex_id) or uuid_text(account)  # type: ignore[arg-type]
            start, end = s["start"], s["end"]
            hour = start - start % 3600
            if start < end <= hour + 3600 and up + down:  # within one hour: split_by_hour's one part
                key = (account_id, "hour", hour, s["band"])
                totals = self.usage.get(key)
                if totals is None:
                    self.usage[key] = self.hours_touched[key] = [up, down, 0, 0, 0]
                    self.usage_new.append(key)
                else:
                    totals[0] += up
                    totals[1] += down
                    self.hours_touched[key] = totals
            else:
                self._usage(account_id, s["band"], start, end, up, down)
        if s["postings"]:
            self.postings(position, f"usage:{period_id}:{version}", s["end"], s["postings"])

    def session_registered(self, position: int, session_id: str, version: int, s: dict[str, Any]) -> None:
        nas_id, acct_session_id = s["nas_id"], s["acct_session_id"]
        self.session_keys[session_id] = (nas_id, acct_session_id)
        for row in self.keyless.pop(session_id, ()):
            if not row["nas_id"]:
                row["nas_id"], row["acct_session_id"] = nas_id, acct_session_id
                self.sessions.changed(row["id"], row)
        self.registered.append((session_id, nas_id, acct_session_id))  # in the table's column order

    def account_opened(self, position: int, account_id: str, version: int, s: dict[str, Any]) -> None:
        self.accounts.insert({"id": account_id, "name": s["name"], "plan_id": uuid_text(s["plan_id"]),
                              "currency": s["currency"], "status": "active", "opened_at": s["opened_at"],
                              "usernames": json.dumps(s["usernames"])})
        self._balance(account_id, s["currency"], Decimal(0), s["opened_at"], position)

    def username_claimed(self, position: int, claim_id: str, version: int, s: dict[str, Any]) -> None:
        self.usernames.insert({"username": s["username"], "account_id": uuid_text(s["account_id"])})

    # Sessions and usage, as sessions.py.

    def _new_session(self, session_id: str, incarnation: str) -> Row:
        nas_id, acct_session_id = self.session_keys.get(session_id, ("", ""))
        row = {"id": f"{session_id}:{incarnation}", "nas_id": nas_id, "acct_session_id": acct_session_id,
               "username": "", "account_id": None, "started_at": int(incarnation),
               "updated_at": int(incarnation), "stopped_at": None, "upload_bytes": 0, "download_bytes": 0,
               "amount": Decimal(0), "currency": "", "framed_ip": "", "nas_ip": "",
               "calling_station_id": "", "terminate_cause": ""}
        self.sessions.insert(row)
        if not nas_id:
            self.keyless.setdefault(session_id, []).append(row)
        return row

    def _usage(self, account_id: str, band: str, start: int, end: int, up: int, down: int) -> None:
        if up + down == 0:
            return
        if end <= start or end <= start - start % 3600 + 3600:  # within one hour: split_by_hour's one part
            parts: Iterable[tuple[int, int, int]] = ((start, up, down),)
        else:
            parts = ((p.start, p.upload_bytes, p.download_bytes)
                     for p in split_by_hour(UsageDelta(start, end, up, down)))
        usage, touched = self.usage, self.hours_touched
        for part_start, part_up, part_down in parts:
            key = (account_id, "hour", part_start - part_start % 3600, band)
            totals = usage.get(key)
            if totals is None:
                usage[key] = touched[key] = [part_up, part_down, 0, 0, 0]
                self.usage_new.append(key)
            else:
                totals[0] += part_up
                totals[1] += part_down
                touched[key] = totals

    def closed_by_nas(self, position: int, e: Any) -> None:
        key = f"{e.originator_id}:{e.incarnation}"
        row = self.sessions.rows.get(key)
        if row is None:  # (see apply_rated: the last such close counts)
            self.closes_unmatched[key] = position
        elif row["stopped_at"] is None:
            row["stopped_at"] = max(e.event_time, row["started_at"])
            row["terminate_cause"] = row["terminate_cause"] or "NAS-Reboot"
            self.sessions.changed(row["id"], row)

    # Money, as money.py.

    def postings(self, position: int, ref: str, event_time: int, postings: Iterable[dict[str, str]]) -> None:
        journal, canonical = self.journal.append, _CANONICAL.fullmatch
        balances = self.balances
        rows, new, dirty = balances.rows, balances.new, balances.dirty
        for line, posting in enumerate(postings):
            text, ledger_account, currency = posting["amount"], posting["ledger_account"], posting["currency"]
            # Stored amounts are usually already in fmt's form: no Decimal round trip for them.
            journal((position, line, ref, event_time, ledger_account,
                     text if canonical(text) and text != "-0" else fmt(Decimal(text)), currency))
            subscriber: Any = _subscribers.get(ledger_account, _UNSEEN)
            if subscriber is _UNSEEN:
                subscriber = _subscriber(ledger_account)
            if subscriber is None:
                continue
            row = rows.get(subscriber)
            if row is None:
                self._balance(subscriber, currency, Decimal(text), event_time, position)
                continue
            # _balance's change of a balance there is, inline
            if subscriber in new:  # live: the currency of a window's last change
                row["currency"] = currency
            else:
                dirty[subscriber] = row
            row["receivable"] += Decimal(text)
            if event_time > row["updated_at"]:
                row["updated_at"] = event_time
            row["position"] = position

    def _balance(self, account_id: str, currency: str, amount: Decimal, at: int, position: int) -> None:
        row = self.balances.rows.get(account_id)
        if row is None:
            self.balances.insert({"account_id": account_id, "currency": currency, "receivable": amount,
                                  "updated_at": at, "position": position})
            return
        if account_id in self.balances.new:  # live: the currency of a window's last change
            row["currency"] = currency
        row["receivable"] += amount
        if at > row["updated_at"]:
            row["updated_at"] = at
        row["position"] = position
        self.balances.changed(account_id, row)

    def payment_received(self, position: int, e: Any) -> None:
        self.payments.append({"id": str(e.originator_id), "account_id": str(e.account_id), "amount": fmt(e.amount),
                              "currency": e.currency, "method": e.method, "reference": e.reference,
                              "received_at": e.received_at})
        self.postings(position, f"payment:{e.originator_id}", e.received_at, e.postings)

    def addon_purchased(self, position: int, e: Any) -> None:
        if e.postings:
            self.postings(position, f"addon:{e.originator_id}:{e.pack_id}", e.valid_from, e.postings)

    def invoice_issued(self, position: int, e: Any) -> None:
        if e.postings:
            self.postings(position, f"invoice:{e.number}", e.issued_at, e.postings)

    def credit_note_issued(self, position: int, e: Any) -> None:
        self.postings(position, f"credit-note:{e.number}", e.issued_at, e.postings)

    # The catalog, as catalog.py.

    def _update(self, rows: TableRows, key: str, **values: Any) -> None:
        row = rows.rows.get(key)
        if row is not None:  # live: an UPDATE of a missing row changes nothing
            row.update(values)
            rows.changed(key, row)

    def nas_registered(self, position: int, e: Any) -> None:
        self.nas.insert({"id": str(e.originator_id), "address": e.address, "name": e.name, "secret": e.secret,
                         "vendor": e.vendor, "require_message_authenticator": e.require_message_authenticator,
                         "site": e.site, "coa_port": e.coa_port, "retired": False})

    def nas_retired(self, position: int, e: Any) -> None:
        self._update(self.nas, str(e.originator_id), retired=True)

    def plan_created(self, position: int, e: Any) -> None:
        versions = [{"effective_from": e.effective_from, "terms": e.terms}]
        self.plans.insert({"id": str(e.originator_id), "name": e.name, "currency": e.terms["currency"],
                           "versions": json.dumps(versions)})

    def plan_revised(self, position: int, e: Any) -> None:
        plan_id = str(e.originator_id)
        row = self.plans.rows.get(plan_id)
        if row is not None:
            versions = json.loads(row["versions"]) + [{"effective_from": e.effective_from, "terms": e.terms}]
            self._update(self.plans, plan_id, versions=json.dumps(versions))

    def plan_changed(self, position: int, e: Any) -> None:
        self._update(self.accounts, str(e.originator_id), plan_id=str(e.plan_id))

    def token_issued(self, position: int, e: Any) -> None:
        self.api_tokens.insert({"hashed": e.hashed, "id": str(e.originator_id), "role": e.role,
                                "account_id": str(e.account_id) if e.account_id else None, "label": e.label,
                                "revoked": False})

    def token_revoked(self, position: int, e: Any) -> None:
        self._update(self.api_tokens, str(e.originator_id), revoked=True)

    # What a window's flush writes.

    def take_session_writes(self) -> SessionWrites:
        """The sessions part's rows to write since the last call."""
        sessions_new, sessions_dirty = self.take_sessions()
        keyless_made, keyless_completed = self.take_keyless()
        usage_new, usage_dirty = self.take_usage()
        registered, self.registered = self.registered, []
        return SessionWrites(sessions_new, sessions_dirty, keyless_made, keyless_completed, registered,
                             usage_new, usage_dirty)

    def take_sessions(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Session rows to insert and to update, as the table stores them (tuples in its column
        order, amounts formatted, byte totals saturated at BIGINT like sessions._row_values)."""
        new, dirty = self.sessions.take()
        return [_session_values(r) for r in new], [_session_values(r) for r in dirty]

    def take_keyless(self) -> tuple[list[Row], list[str]]:
        """sessions_keyless rows to insert (stored rows still without a key) and row ids to
        delete (rows that got their key since they were stored)."""
        made, completed = [], []
        for session_id, rows in self.keyless.items():
            for row in rows:
                if row["id"] not in self.keyless_stored:
                    self.keyless_stored.add(row["id"])
                    made.append({"session_id": session_id, "row_id": row["id"]})
        for row_id in list(self.keyless_stored):
            if self.sessions.rows[row_id]["nas_id"]:
                self.keyless_stored.discard(row_id)
                completed.append(row_id)
        return made, completed

    def _add_days(self) -> None:
        """Add to the day buckets what each hour bucket touched since the last call gained (the
        sums are the same as adding every part to both buckets, as the live model does)."""
        usage = self.usage
        for key, totals in self.hours_touched.items():
            up, down, stored, before_up, before_down = totals
            totals[3], totals[4] = up, down
            if stored:
                self.usage_dirty[key] = totals
            account_id, _, hour, band = key
            day = (account_id, "day", hour - hour % DAY, band)
            day_totals = usage.get(day)
            if day_totals is None:
                usage[day] = [up - before_up, down - before_down, 0]
                self.usage_new.append(day)
            else:
                day_totals[0] += up - before_up
                day_totals[1] += down - before_down
                if day_totals[2]:
                    self.usage_dirty[day] = day_totals
        self.hours_touched = {}

    def take_usage(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Usage buckets to insert and to update, as (key..., upload, download)."""
        self._add_days()
        new = []
        for key in self.usage_new:
            totals = self.usage[key]
            totals[2] = 1
            new.append((*key, min(totals[0], BIGINT_MAX), min(totals[1], BIGINT_MAX)))
        dirty = [(*key, min(v[0], BIGINT_MAX), min(v[1], BIGINT_MAX)) for key, v in self.usage_dirty.items()]
        self.usage_new, self.usage_dirty = [], {}
        return new, dirty


SESSION_COLUMNS = tuple(c.name for c in t.sessions.columns)


def _session_values(row: Row) -> tuple[Any, ...]:
    values = row | {"amount": fmt(row["amount"])}
    for key in ("upload_bytes", "download_bytes"):
        if values[key] > BIGINT_MAX:
            values[key] = BIGINT_MAX
    return tuple([values[name] for name in SESSION_COLUMNS])


def balance_values(row: Row) -> Row:
    return row | {"receivable": fmt(row["receivable"])}


def rated_postings(state: bytes) -> dict[str, Any]:
    """What the money part needs of a stored ``BillingPeriod.UsageRated`` (its "postings"
    and "end"), without parsing the rest (lines, meter, ids: two thirds of its bytes).

    Sound because stored JSON escapes every quote inside a string: ``"postings":[`` and
    ``"end":`` can only be keys, each must occur once, and the first ``]`` after the postings'
    ``[`` either closes the array or lies inside one of its strings, where the slice does not
    parse. Anything else (a nested array, a key twice, a value that is not an integer) is
    parsed whole, so the result always equals ``orjson.loads(state)``'s for these two keys."""
    start = state.find(b'"postings":[')
    at = state.find(b'"end":')
    if start < 0 or at < 0 or state.find(b'"postings":', start + 1) >= 0 or state.find(b'"end":', at + 1) >= 0:
        return orjson.loads(state)  # type: ignore[no-any-return]
    stop = state.find(b"]", start)
    comma, brace = state.find(b",", at), state.find(b"}", at)
    end_stop = comma if 0 <= comma < brace or brace < 0 else brace
    try:
        postings = orjson.loads(state[start + 11:stop + 1])
        end_text = state[at + 6:end_stop]
        if not end_text.lstrip(b"-").isdigit():
            return orjson.loads(state)  # type: ignore[no-any-return]
        return {"postings": postings, "end": int(end_text)}
    except orjson.JSONDecodeError:
        return orjson.loads(state)  # type: ignore[no-any-return]
