"""Double-entry postings. Debits are positive, credits negative; every transaction sums to
zero in each currency, which `balanced` asserts before anything is recorded (a ledger that
finds money not conserved stops rather than continues)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal, Inexact
from uuid import UUID

# The chart of accounts. Subscriber accounts are per account id: receivable (postpaid) or
# prepaid (a liability: the customer's unused credit). Debit-positive, so a subscriber's
# credit shows as a negative figure on their ledger account.
USAGE_REVENUE = "revenue:usage"
ADDON_REVENUE = "revenue:addons"
RECURRING_REVENUE = "revenue:recurring"
DISCOUNTS = "discounts"
TAX_PAYABLE = "tax:payable"
CASH = "cash"
SUBSCRIBER_PREFIXES = ("receivable:", "prepaid:")


# Rated amounts are exact and may carry more digits than the default context's 28: sums and
# negations here must never round (a rounded negation is a transaction that does not balance).
_EXACT = Context(prec=200, traps=[Inexact])


class UnbalancedTransaction(AssertionError):
    """Raised when postings do not sum to zero: a bug, never a user error."""


@dataclass(frozen=True, slots=True)
class Posting:
    ledger_account: str
    amount: Decimal
    currency: str


def receivable(account_id: UUID | str) -> str:
    return f"receivable:{account_id}"


def prepaid(account_id: UUID | str) -> str:
    return f"prepaid:{account_id}"


def subscriber_account(account_id: UUID | str, payment_model: str) -> str:
    """The subscriber's own ledger account for a plan's payment model."""
    return prepaid(account_id) if payment_model == "prepaid" else receivable(account_id)


def subscriber_of(ledger_account: str) -> str | None:
    """The account id a subscriber ledger account belongs to, else None."""
    for prefix in SUBSCRIBER_PREFIXES:
        if ledger_account.startswith(prefix):
            return ledger_account[len(prefix):]
    return None


def balanced(postings: list[Posting]) -> list[dict[str, str]]:
    totals: dict[str, Decimal] = {}
    for posting in postings:
        totals[posting.currency] = _EXACT.add(totals.get(posting.currency, Decimal(0)), posting.amount)
    if any(total != 0 for total in totals.values()):
        raise UnbalancedTransaction(f"postings do not balance: {totals}")
    return [
        {"ledger_account": p.ledger_account, "amount": str(p.amount), "currency": p.currency}
        for p in postings
        if p.amount != 0
    ]


def usage_postings(subscriber: str, amount: Decimal, currency: str) -> list[dict[str, str]]:
    """Usage charged: the subscriber owes more (debit), usage revenue earned (credit)."""
    return balanced([Posting(subscriber, amount, currency),
                     Posting(USAGE_REVENUE, amount.copy_negate(), currency)])
