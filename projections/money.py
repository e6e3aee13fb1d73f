"""Read model of money: the journal (every posting), balances, payments.

Balances are kept in memory between batches (``KeptBalances``, bounded) as the projector last
committed them, so a batch reads back only the balances it has not seen before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, update

from ledger.journal import subscriber_of

from . import tables as t
from .base import ModelBatch, ReadModel, dec, execute_many, execute_rows, fetch_in, fmt

MAX_KEPT = 500_000  # balances kept between batches


class KeptBalances(dict[str, tuple[Decimal, int]]):
    """Account id -> (receivable, updated_at) as last committed."""


class _MoneyBatch(ModelBatch):
    def __init__(self, conn: Any, kept: KeptBalances | None = None) -> None:
        super().__init__(conn)
        self.kept = KeptBalances() if kept is None else kept
        self.balance_delta: dict[str, tuple[str, Decimal, int, int]] = {}
        self.journal_rows: list[tuple[Any, ...]] = []  # in _JOURNAL_PARAMETERS' order
        self.payment_rows: list[dict[str, Any]] = []

    def on_Account_Opened(self, position: int, e: Any) -> None:
        self._balance(str(e.originator_id), e.currency, Decimal(0), e.opened_at, position)

    def on_Payment_Received(self, position: int, e: Any) -> None:
        self.payment_rows.append(dict(
            id=str(e.originator_id), account_id=str(e.account_id), amount=fmt(e.amount), currency=e.currency,
            method=e.method, reference=e.reference, received_at=e.received_at))
        self.postings(position, f"payment:{e.originator_id}", e.received_at, e.postings)

    def on_BillingPeriod_UsageRated(self, position: int, e: Any) -> None:
        if e.postings:
            ref = f"usage:{e.originator_id}:{e.originator_version}"
            self.postings(position, ref, e.end, e.postings)

    def on_Account_AddonPurchased(self, position: int, e: Any) -> None:
        if e.postings:
            self.postings(position, f"addon:{e.originator_id}:{e.pack_id}", e.valid_from, e.postings)

    def on_Invoice_Issued(self, position: int, e: Any) -> None:
        if e.postings:
            self.postings(position, f"invoice:{e.number}", e.issued_at, e.postings)

    def on_CreditNote_Issued(self, position: int, e: Any) -> None:
        self.postings(position, f"credit-note:{e.number}", e.issued_at, e.postings)

    def postings(self, position: int, ref: str, event_time: int, postings: Iterable[dict[str, str]]) -> None:
        """Journal lines of one transaction; receivable lines move the account's balance."""
        for line, posting in enumerate(postings):
            text = posting["amount"]
            amount = Decimal(text)
            ledger_account, currency = posting["ledger_account"], posting["currency"]
            self.journal_rows.append((position, line, ref, event_time, ledger_account,
                                      canonical_amount(text, amount), currency))
            subscriber = _subscriber(ledger_account)
            if subscriber is not None:
                self._balance(subscriber, currency, amount, event_time, position)

    def _balance(self, account_id: str, currency: str, amount: Decimal, at: int, position: int) -> None:
        _, total, last_at, _ = self.balance_delta.get(account_id, (currency, Decimal(0), at, position))
        self.balance_delta[account_id] = (currency, total + amount, max(last_at, at), position)

    def flush(self) -> None:
        execute_many(self.conn, _INSERT_PAYMENT, self.payment_rows)
        execute_rows(self.conn, _INSERT_JOURNAL, _JOURNAL_PARAMETERS, self.journal_rows)
        self.payment_rows, self.journal_rows = [], []
        if not self.balance_delta:
            return
        kept = self.kept
        missing = [account_id for account_id in self.balance_delta if account_id not in kept]
        for offset in range(0, len(missing), 500):
            for account_id, receivable, updated_at in fetch_in(
                    self.conn, t.balances, _BALANCE_COLUMNS, "account_id", missing[offset:offset + 500]):
                kept[account_id] = (dec(receivable), updated_at)
        # One executemany each for new and changed balances, not one statement per account.
        new, changed = [], []
        for account_id, (currency, amount, at, position) in self.balance_delta.items():
            old = kept.get(account_id)
            if old is None:
                new.append({"account_id": account_id, "currency": currency, "receivable": fmt(amount),
                            "updated_at": at, "position": position})
                kept[account_id] = (amount, at)
            else:
                total, updated_at = old[0] + amount, max(old[1], at)
                changed.append((fmt(total), updated_at, position, account_id))
                kept[account_id] = (total, updated_at)
        execute_many(self.conn, _INSERT_BALANCE, new)
        execute_rows(self.conn, _UPDATE_BALANCE, _BALANCE_UPDATE_PARAMETERS, changed)
        self.balance_delta = {}
        if len(kept) > MAX_KEPT:
            kept.clear()


_BALANCE_COLUMNS = ("account_id", "receivable", "updated_at")
_INSERT_PAYMENT = insert(t.payments)
_INSERT_JOURNAL = insert(t.journal)
_JOURNAL_PARAMETERS = ("position", "line", "transaction_ref", "event_time", "ledger_account", "amount", "currency")
_INSERT_BALANCE = insert(t.balances)
_UPDATE_BALANCE = update(t.balances).where(t.balances.c.account_id == bindparam("key")).values(
    receivable=bindparam("new_receivable"), updated_at=bindparam("new_updated_at"), position=bindparam("new_position"))
_BALANCE_UPDATE_PARAMETERS = ("new_receivable", "new_updated_at", "new_position", "key")
_subscribers: dict[str, str | None] = {}
# Plain decimal text without exponent, leading or trailing zeros, short enough that Decimal's
# context (80 digits while projecting) keeps every digit: ``fmt`` would give it back unchanged.
_CANONICAL = re.compile(r"-?(?:0|[1-9][0-9]{0,29})(?:\.[0-9]{0,29}[1-9])?")


def canonical_amount(text: str, amount: Decimal) -> str:
    """``fmt(amount)`` for ``amount = Decimal(text)``: ``text`` itself when it is already in
    that form (postings are stored so; normalising and formatting each was ~2 % of projecting)."""
    if text.__class__ is str and _CANONICAL.fullmatch(text) and text != "-0":
        return text
    return fmt(amount)


def _subscriber(ledger_account: str) -> str | None:
    """``subscriber_of``, remembered (a projection asks it for every posting line)."""
    try:
        return _subscribers[ledger_account]
    except KeyError:
        if len(_subscribers) > 200_000:
            _subscribers.clear()
        found = _subscribers[ledger_account] = subscriber_of(ledger_account)
        return found


class MoneyModel(ReadModel):
    name = "money"
    tables = (t.balances, t.journal, t.payments)
    batch_class = _MoneyBatch

    def __init__(self) -> None:
        self.kept = KeptBalances()

    def batch(self, conn: Any) -> _MoneyBatch:
        return _MoneyBatch(conn, self.kept)

    def forget(self) -> None:
        self.kept.clear()
