"""An account as of a moment, folded from the ledger's events alone (the auditor's answer to
"what was this balance at time T"). Pure: events in, figures out.

Each event counts at its business time (the event time of a record, the receipt time of a
payment...), not at the moment it was stored, so a late record counts when its usage happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

SUBSCRIBER_PREFIXES = ("receivable:", "prepaid:")
# Attribute names that carry an event's business time, in order of preference.
TIME_ATTRIBUTES = ("event_time", "received_at", "at", "end", "issued_at", "opened_at")


def business_time(event: Any) -> int:
    """When an event happened in the business sense (epoch seconds)."""
    for name in TIME_ATTRIBUTES:
        value = getattr(event, name, None)
        if isinstance(value, int):
            return value
    return int(event.timestamp.timestamp())


def _kind(event: Any) -> str:
    return type(event).__qualname__


@dataclass
class AccountAsOf:
    """Balance, usage and open sessions of ``account_id`` at ``at`` (inclusive)."""

    account_id: str
    at: int
    currency: str = ""
    owed: Decimal = Decimal(0)  # debit-positive: what the subscriber owes
    upload_bytes: int = 0
    download_bytes: int = 0
    events_counted: int = 0
    # session id:incarnation -> {"started_at", "last_event_time", "closed_at"}
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def feed(self, event: Any) -> None:
        """Fold one ledger event (any order of aggregates, each aggregate's events in order)."""
        when = business_time(event)
        kind = _kind(event)
        if kind == "Account.Opened" and str(event.originator_id) == self.account_id:
            self.currency = event.currency
        if when > self.at:
            return
        counted = False
        for posting in getattr(event, "postings", None) or []:
            account = posting["ledger_account"]
            if account.startswith(SUBSCRIBER_PREFIXES) and account.split(":", 1)[1] == self.account_id:
                self.owed += Decimal(posting["amount"])
                self.currency = self.currency or posting["currency"]
                counted = True
        if kind == "Session.RecordApplied" and str(getattr(event, "account_id", None)) == self.account_id:
            self.upload_bytes += event.upload_bytes
            self.download_bytes += event.download_bytes
            key = f"{event.originator_id}:{event.incarnation}"
            session = self.sessions.setdefault(key, {"started_at": int(event.incarnation), "closed_at": None,
                                                      "username": event.username})
            if event.closes and session["closed_at"] is None:
                session["closed_at"] = event.event_time
            counted = True
        elif kind == "Session.ClosedByNas":
            key = f"{event.originator_id}:{event.incarnation}"
            if key in self.sessions and self.sessions[key]["closed_at"] is None:
                self.sessions[key]["closed_at"] = event.event_time
                counted = True
        self.events_counted += counted

    @property
    def balance(self) -> Decimal:
        """What the portal shows: credit positive, owed negative."""
        return -self.owed

    def open_sessions(self) -> list[dict[str, Any]]:
        return [{"session": key, **value} for key, value in sorted(self.sessions.items())
                if value["closed_at"] is None and value["started_at"] <= self.at]
