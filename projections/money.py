"""Read model of money: the journal (every posting), balances, payments."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from ledger.journal import subscriber_of

from . import tables as t
from .base import ModelBatch, ReadModel, dec, fmt


class _MoneyBatch(ModelBatch):
    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.balance_delta: dict[str, tuple[str, Decimal, int, int]] = {}
        self.journal_rows: list[dict[str, Any]] = []
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
            amount = Decimal(posting["amount"])
            self.journal_rows.append({
                "position": position, "line": line, "transaction_ref": ref, "event_time": event_time,
                "ledger_account": posting["ledger_account"], "amount": fmt(amount),
                "currency": posting["currency"]})
            subscriber = _subscriber(posting["ledger_account"])
            if subscriber is not None:
                self._balance(subscriber, posting["currency"], amount, event_time, position)

    def _balance(self, account_id: str, currency: str, amount: Decimal, at: int, position: int) -> None:
        _, total, last_at, _ = self.balance_delta.get(account_id, (currency, Decimal(0), at, position))
        self.balance_delta[account_id] = (currency, total + amount, max(last_at, at), position)

    def flush(self) -> None:
        if self.payment_rows:
            self.conn.execute(insert(t.payments), self.payment_rows)
            self.payment_rows = []
        if self.journal_rows:
            self.conn.execute(insert(t.journal), self.journal_rows)
            self.journal_rows = []
        if not self.balance_delta:
            return
        accounts = list(self.balance_delta)
        existing: dict[str, Any] = {}
        for offset in range(0, len(accounts), 500):
            existing |= {r.account_id: r for r in self.conn.execute(
                select(t.balances).where(t.balances.c.account_id.in_(accounts[offset:offset + 500])))}
        # One executemany each for new and changed balances, not one statement per account.
        new, changed = [], []
        for account_id, (currency, amount, at, position) in self.balance_delta.items():
            old = existing.get(account_id)
            if old is None:
                new.append({"account_id": account_id, "currency": currency, "receivable": fmt(amount),
                            "updated_at": at, "position": position})
            else:
                changed.append({"key": account_id, "new_receivable": fmt(dec(old.receivable) + amount),
                                "new_updated_at": max(old.updated_at, at), "new_position": position})
        if new:
            self.conn.execute(insert(t.balances), new)
        if changed:
            self.conn.execute(update(t.balances).where(t.balances.c.account_id == bindparam("key")).values(
                receivable=bindparam("new_receivable"), updated_at=bindparam("new_updated_at"),
                position=bindparam("new_position")), changed)
        self.balance_delta = {}


_subscribers: dict[str, str | None] = {}


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
