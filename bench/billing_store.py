"""The billing benchmark's store: accounts with two months of rated usage, written fast.

Each account is an Account, its UsernameClaim and one BillingPeriod per month of ``PERIODS``
with two rated fragments (a standard and a night band): eight events. The content of an
account's usage depends only on ``n % 28`` (the day) and ``n % 30`` (the volume), so there are
420 kinds of account. ``StoredAccounts`` makes the stored events of the first account of each
kind with the product's own aggregates (Account, UsernameClaim, BillingPeriod.rate: the same
topics, versions and bytes the product records) and stamps every further account of that kind
out of them, replacing what differs (ids, name, username, record keys, session ids). A
hundred thousand accounts are then a few seconds of byte replacement instead of minutes of
rating, and they are written a few thousand accounts per transaction.
``tests/test_billing_store.py`` checks that a stamped account's events are the product's
events byte for byte (timestamps aside), and that billing a stamped store gives the invoices
that billing a store filled through ``ledger.save`` gives.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from domain.plans import PlanTerms
from ledger.account import Account, UsernameClaim
from ledger.billing_period import BillingPeriod
from ledger.journal import receivable
from rating import Fragment

PERIODS = ("2026-09", "2026-10")  # billed in this order; the second is the timed steady state
KINDS = 420  # lcm(28, 30): accounts n and n + KINDS have the same usage


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def plan_terms() -> PlanTerms:
    """The one plan every account is on: a fee, 50 GB included, a cheap night band."""
    return PlanTerms.parse("USD", "30.00", "1.00", included_gb="50", bands=[
        {"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_hour": 0,
         "end_hour": 6, "price_per_gb": "0.10"}])


@cache
def months() -> tuple[tuple[int, int], ...]:
    """(start, end) of each of ``PERIODS``."""
    ends = (*PERIODS[1:], "2026-11")
    return tuple((ts(f"{label}-01T00:00:00"), ts(f"{later}-01T00:00:00"))
                 for label, later in zip(PERIODS, ends, strict=True))


def rate(period: BillingPeriod, terms: PlanTerms, plan_id: UUID, account_id: UUID, n: int, when: int, band: str,
         volume: int, session_id: UUID | None = None) -> None:
    """One hour of ``volume`` bytes at ``when`` rated into ``period`` (as the rater rates it)."""
    fragment = Fragment(when, when + 3600, volume // 10, volume - volume // 10, band)
    period.rate(terms=terms, plan_id=plan_id, fragment=fragment, packs=(), session_id=session_id or uuid.uuid4(),
                incarnation=str(when), record_key=_record_key(n, band, when), subscriber=receivable(account_id))


def _record_key(n: int, band: str, when: int) -> str:
    return f"k{n}{band}{when}"


def _fragments(n: int, start: int) -> list[tuple[str, int, int]]:
    """(band, moment, volume) of the account's usage in the month starting at ``start``."""
    day = start + (n % 28) * 86_400
    return [("standard", day + 12 * 3600, (40 + n % 30) * 10**9), ("night", day + 2 * 3600, (n % 7) * 10**9)]


def account_aggregates(terms: PlanTerms, plan_id: UUID, n: int, *, account_id: UUID | None = None,
                       session_ids: list[UUID] | None = None) -> list[Any]:
    """Account ``n``'s aggregates with their events pending, made by the product's aggregates.
    ``account_id`` and ``session_ids`` (one per rated fragment) are random unless given."""
    user = f"user{n:07d}"
    account = Account(name=f"Subscriber {n}", plan_id=plan_id, currency="USD", usernames=[user],
                      opened_at=ts("2026-08-01T00:00:00"), tax_rate=Decimal("0.16"))
    if account_id is not None:
        # The Opened event carries the id it was created with: replace it before it is stored.
        for event in account._pending_events:  # noqa: SLF001
            object.__setattr__(event, "originator_id", account_id)
        account._id = account_id  # noqa: SLF001
    made: list[Any] = [account, UsernameClaim(username=user, account_id=account.id)]
    sessions = iter(session_ids or [])
    for start, end in months():
        period = BillingPeriod(account_id=account.id, start=start, end=end, currency="USD")
        for band, when, volume in _fragments(n, start):
            rate(period, terms, plan_id, account.id, n, when, band, volume, next(sessions, None))
        made.append(period)
    return made


def _encoded_ids(value: UUID) -> list[bytes]:
    return [value.hex.encode(), str(value).encode()]


class _Prototype:
    """The stored events of the first account of a kind, each state cut at the bytes that
    differ between accounts of the kind (``tokens``), to be joined again with another
    account's values."""

    def __init__(self, n: int, account_id: UUID, session_ids: list[UUID], stored: list[StoredEvent]) -> None:
        self.n, self.account_id, self.session_ids, self.stored = n, account_id, session_ids, stored
        tokens = _tokens(n, account_id, session_ids)
        index = {token: i for i, token in enumerate(tokens)}
        pattern = re.compile(b"|".join(re.escape(token) for token in sorted(tokens, key=len, reverse=True)))
        self.parts: list[list[bytes | int]] = []
        for event in stored:
            parts: list[bytes | int] = []
            at = 0
            for match in pattern.finditer(event.state):
                parts += [event.state[at:match.start()], index[match.group()]]
                at = match.end()
            self.parts.append([*parts, event.state[at:]])


def _tokens(n: int, account_id: UUID, session_ids: list[UUID]) -> list[bytes]:
    """What differs between accounts of one kind, in a fixed order: name, username, ids (hex
    and text forms), record keys; quoted where a prefix could match a longer value."""
    tokens = [f'"Subscriber {n}"'.encode(), f'"user{n:07d}"'.encode()]
    for value in (account_id, *session_ids):
        tokens += _encoded_ids(value)
    for start, _end in months():
        tokens += [f'"{_record_key(n, band, when)}"'.encode() for band, when, _volume in _fragments(n, start)]
    return tokens


class StoredAccounts:
    """Stored events of accounts, stamped out of one account of each kind made by the product."""

    def __init__(self, ledger: Any, terms: PlanTerms, plan_id: UUID) -> None:
        self.ledger, self.terms, self.plan_id = ledger, terms, plan_id
        self.prototypes: dict[int, _Prototype] = {}
        self.starts = [start for start, _end in months()]

    def _prototype(self, n: int) -> _Prototype:
        kind = n % KINDS
        found = self.prototypes.get(kind)
        if found is None:
            made = account_aggregates(self.terms, self.plan_id, n)
            sessions = [e.session_id for a in made for e in a._pending_events if hasattr(e, "session_id")]  # noqa: SLF001
            encode = self.ledger.mapper.to_stored_event
            stored = [encode(e) for a in made for e in a.collect_events()]
            found = self.prototypes[kind] = _Prototype(n, made[0].id, sessions, stored)
        return found

    def events(self, n: int, account_id: UUID | None = None,
               session_ids: list[UUID] | None = None) -> tuple[UUID, list[StoredEvent]]:
        """Account ``n``'s id and stored events (ids random unless given, as for
        ``account_aggregates``)."""
        prototype = self._prototype(n)
        account_id = account_id or uuid.uuid4()
        sessions = session_ids or [uuid.uuid4() for _ in prototype.session_ids]
        values = _tokens(n, account_id, sessions)
        user = f"user{n:07d}"
        # Stored in the prototype's order: Account, UsernameClaim, then each month's BillingPeriod.
        owners = [account_id, UsernameClaim.create_id(user),
                  *(BillingPeriod.create_id(account_id, start) for start in self.starts)]
        renamed = dict(zip(dict.fromkeys(e.originator_id for e in prototype.stored), owners, strict=True))
        out = []
        for event, parts in zip(prototype.stored, prototype.parts, strict=True):
            state = b"".join(part if type(part) is bytes else values[part] for part in parts)  # type: ignore[index]
            out.append(StoredEvent(renamed[event.originator_id], event.originator_version, event.topic, state))
        return account_id, out


def insert_new_events(ledger: Any, aggregates: list[Any]) -> None:
    """The aggregates' pending events, stored in one transaction straight through the recorder:
    what ``ledger.save`` stores, without its per-save work that a fresh store being filled does
    not need (no snapshot falls due at these versions, nothing follows the log yet)."""
    encode = ledger.mapper.to_stored_event
    ledger.recorder.insert_events([encode(e) for aggregate in aggregates for e in aggregate.collect_events()])
