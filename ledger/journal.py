"""Double-entry postings. Debits are positive, credits negative; every transaction sums to
zero in each currency, which `balanced` asserts before anything is recorded (a ledger that
finds money not conserved stops rather than continues)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

USAGE_REVENUE = "revenue:usage"
RECURRING_REVENUE = "revenue:recurring"
CASH = "cash"


class UnbalancedTransaction(AssertionError):
    """Raised when postings do not sum to zero: a bug, never a user error."""


@dataclass(frozen=True, slots=True)
class Posting:
    ledger_account: str
    amount: Decimal
    currency: str


def receivable(account_id: UUID | str) -> str:
    return f"receivable:{account_id}"


def balanced(postings: list[Posting]) -> list[dict[str, str]]:
    totals: dict[str, Decimal] = {}
    for posting in postings:
        totals[posting.currency] = totals.get(posting.currency, Decimal(0)) + posting.amount
    if any(total != 0 for total in totals.values()):
        raise UnbalancedTransaction(f"postings do not balance: {totals}")
    return [
        {"ledger_account": p.ledger_account, "amount": str(p.amount), "currency": p.currency}
        for p in postings
        if p.amount != 0
    ]


def usage_postings(account_id: UUID, amount: Decimal, currency: str) -> list[dict[str, str]]:
    """Usage charged: the subscriber owes more (debit receivable), usage revenue earned."""
    return balanced(
        [
            Posting(receivable(account_id), amount, currency),
            Posting(USAGE_REVENUE, -amount, currency),
        ]
    )
