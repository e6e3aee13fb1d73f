"""Subscriber accounts, their RADIUS usernames and payments."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.ids import payment_id, username_id

from .journal import Posting, balanced, receivable


class Account(Aggregate):
    @event("Opened")
    def __init__(self, name: str, plan_id: UUID, currency: str, usernames: list[str], opened_at: int) -> None:
        self.name = name
        self.currency = currency
        self.usernames = list(usernames)
        self.plans: list[dict[str, Any]] = [{"plan_id": plan_id, "effective_from": opened_at}]
        self.status = "active"

    def plan_at(self, at: int) -> UUID:
        chosen = self.plans[0]["plan_id"]
        for entry in self.plans:
            if entry["effective_from"] <= at:
                chosen = entry["plan_id"]
        return UUID(str(chosen))

    @event("PlanChanged")
    def change_plan(self, plan_id: UUID, effective_from: int) -> None:
        self.plans.append({"plan_id": plan_id, "effective_from": effective_from})


class UsernameClaim(Aggregate):
    """Makes a RADIUS username belong to exactly one account (its id is the username's)."""

    @staticmethod
    def create_id(username: str, **_: Any) -> UUID:
        return username_id(username)

    @event("Claimed")
    def __init__(self, username: str, account_id: UUID) -> None:
        self.username = username
        self.account_id = account_id


class Payment(Aggregate):
    """A payment or top-up. Its id derives from the client's idempotency key; the request
    fingerprint tells a retry (same body) from a conflicting reuse of the key."""

    @staticmethod
    def create_id(idempotency_key: str, **_: Any) -> UUID:
        return payment_id(idempotency_key)

    @event("Received")
    def __init__(
        self,
        idempotency_key: str,
        fingerprint: str,
        account_id: UUID,
        amount: Decimal,
        currency: str,
        method: str,
        reference: str,
        received_at: int,
        postings: list[dict[str, str]],
    ) -> None:
        self.idempotency_key = idempotency_key
        self.fingerprint = fingerprint
        self.account_id = account_id
        self.amount = amount
        self.currency = currency
        self.method = method
        self.reference = reference
        self.received_at = received_at
        self.postings = postings


def payment_postings(account_id: UUID, amount: Decimal, currency: str) -> list[dict[str, str]]:
    """Cash in, receivable down (a credit to the subscriber)."""
    return balanced(
        [
            Posting("cash", amount, currency),
            Posting(receivable(account_id), -amount, currency),
        ]
    )
