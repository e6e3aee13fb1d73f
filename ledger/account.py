"""Subscriber accounts, their RADIUS usernames and payments."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.ids import payment_id, username_id

from .journal import ADDON_REVENUE, CASH, Posting, balanced


class Account(Aggregate):
    """A subscriber: plan history, RADIUS usernames, billing settings (anchor day, tax zone and
    rate, credit limit), add-on data packs and discounts."""

    @event("Opened")
    def __init__(
        self, name: str, plan_id: UUID, currency: str, usernames: list[str], opened_at: int,
        anchor_day: int = 1, tax_zone: str = "", tax_rate: Decimal = Decimal(0),
        credit_limit: Decimal = Decimal(0),
    ) -> None:
        self.name = name
        self.currency = currency
        self.usernames = list(usernames)
        self.plans: list[dict[str, Any]] = [{"plan_id": plan_id, "effective_from": opened_at}]
        self.status = "active"
        self.opened_at = opened_at
        self.closed_at: int | None = None
        self.anchor_day = anchor_day
        self.tax_zone = tax_zone
        self.tax_rate = tax_rate
        self.credit_limit = credit_limit
        self.packs: list[dict[str, Any]] = []
        self.discounts: list[dict[str, Any]] = []
        self.enforcement: dict[str, Any] | None = None

    def plan_at(self, at: int) -> UUID:
        chosen = self.plans[0]["plan_id"]
        for entry in self.plans:
            if entry["effective_from"] <= at:
                chosen = entry["plan_id"]
        return UUID(str(chosen))

    @event("PlanChanged")
    def change_plan(self, plan_id: UUID, effective_from: int) -> None:
        if effective_from < self.plans[-1]["effective_from"]:
            raise ValueError("a plan change cannot take effect before the previous one")
        self.plans.append({"plan_id": plan_id, "effective_from": effective_from})

    @event("BillingSettingsChanged")
    def change_billing(self, tax_zone: str, tax_rate: Decimal, credit_limit: Decimal) -> None:
        self.tax_zone, self.tax_rate, self.credit_limit = tax_zone, tax_rate, credit_limit

    @event("AddonPurchased")
    def purchase_addon(
        self, pack_id: str, name: str, total_bytes: int, price: Decimal, valid_from: int, valid_until: int,
        postings: list[dict[str, str]],
    ) -> None:
        self.packs.append({"pack_id": pack_id, "name": name, "total_bytes": total_bytes, "price": str(price),
                           "valid_from": valid_from, "valid_until": valid_until})

    @event("DiscountGranted")
    def grant_discount(
        self, discount_id: str, description: str, percent: Decimal, fixed_amount: Decimal,
        valid_from: int, valid_until: int,
    ) -> None:
        self.discounts.append({"discount_id": discount_id, "description": description, "percent": str(percent),
                               "fixed_amount": str(fixed_amount), "valid_from": valid_from,
                               "valid_until": valid_until})

    @event("Suspended")
    def suspend(self, at: int, reason: str) -> None:
        self.status = "suspended"

    @event("Resumed")
    def resume(self, at: int) -> None:
        self.status = "active"

    @event("Terminated")
    def terminate(self, at: int, reason: str) -> None:
        self.status = "terminated"
        self.closed_at = at

    @event("EnforcementApplied")
    def enforcement_applied(
        self, at: int, action: str, reason: str, rate: str, results: list[dict[str, str]],
    ) -> None:
        self.enforcement = {"action": action, "reason": reason, "rate": rate, "at": at}

    @event("EnforcementLifted")
    def enforcement_lifted(self, at: int, reason: str, results: list[dict[str, str]]) -> None:
        self.enforcement = None


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


def payment_postings(subscriber: str, amount: Decimal, currency: str) -> list[dict[str, str]]:
    """Cash in, the subscriber's account credited."""
    return balanced([Posting(CASH, amount, currency), Posting(subscriber, -amount, currency)])


def addon_postings(subscriber: str, amount: Decimal, currency: str) -> list[dict[str, str]]:
    """An add-on pack bought: the subscriber is charged, add-on revenue earned."""
    return balanced([Posting(subscriber, amount, currency), Posting(ADDON_REVENUE, -amount, currency)])
