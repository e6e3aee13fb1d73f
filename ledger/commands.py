"""Admin commands on the ledger: NAS, plans, accounts, payments, add-ons, discounts, tokens."""

from __future__ import annotations

import hashlib
import json
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from domain.calendar import MAX_ANCHOR_DAY
from domain.money import minor_unit
from domain.plans import PlanTerms, gb_to_bytes, version_in_force

from .access import ApiToken, token_hash
from .account import Account, Payment, UsernameClaim, addon_postings, payment_postings
from .catalog import Nas, Plan
from .errors import Conflict, NotFound
from .journal import subscriber_account

A = TypeVar("A", bound=Aggregate)


class AdminCommands:
    if TYPE_CHECKING:
        def save(self, *objs: Any, **kwargs: Any) -> Any: ...
        def _get(self, cls: type[A], aggregate_id: UUID, what: str) -> A: ...
        def _maybe_get(self, cls: type[A], aggregate_id: UUID) -> A | None: ...
        def _save_new(self, *aggregates: Aggregate, conflict: str) -> None: ...

    def register_nas(
        self, *, address: str, name: str, secret: str, vendor: str = "generic",
        require_message_authenticator: bool = False, site: str = "", coa_port: int = 3799,
    ) -> Nas:
        nas = Nas(
            address=address, name=name, secret=secret, vendor=vendor,
            require_message_authenticator=require_message_authenticator, site=site, coa_port=coa_port,
        )
        self._save_new(nas, conflict=f"a NAS with address {address} is already registered")
        return nas

    def create_plan(self, *, name: str, terms: PlanTerms, effective_from: int) -> Plan:
        plan = Plan(name=name, terms=terms.to_dict(), effective_from=effective_from)
        self.save(plan)
        return plan

    def revise_plan(self, plan_id: UUID, *, terms: PlanTerms, effective_from: int) -> Plan:
        """A new version from ``effective_from``; usage before it keeps the old prices."""
        plan = self.get_plan(plan_id)
        if terms.currency != plan.currency:
            raise ValueError("a plan revision keeps the plan's currency")
        plan.revise(terms=terms.to_dict(), effective_from=effective_from)
        self.save(plan)
        return plan

    def open_account(
        self, *, name: str, plan_id: UUID, usernames: list[str], opened_at: int, anchor_day: int = 1,
        tax_zone: str = "", tax_rate: Decimal = Decimal(0), credit_limit: Decimal = Decimal(0),
    ) -> Account:
        plan = self.get_plan(plan_id)
        cleaned = [u.strip() for u in usernames]
        if any(not u for u in cleaned) or len({u.casefold() for u in cleaned}) != len(cleaned):
            raise ValueError("usernames must be non-empty and distinct")
        if not 1 <= anchor_day <= MAX_ANCHOR_DAY:
            raise ValueError(f"the billing anchor day is 1..{MAX_ANCHOR_DAY}")
        if tax_rate < 0 or tax_rate >= 1 or credit_limit < 0:
            raise ValueError("tax rate is in [0, 1) and the credit limit is not negative")
        account = Account(
            name=name, plan_id=plan_id, currency=plan.currency, usernames=cleaned, opened_at=opened_at,
            anchor_day=anchor_day, tax_zone=tax_zone, tax_rate=tax_rate, credit_limit=credit_limit,
        )
        claims = [UsernameClaim(username=u, account_id=account.id) for u in cleaned]
        self._save_new(account, *claims, conflict="a username is already claimed by another account")
        return account

    def change_plan(self, account_id: UUID, *, plan_id: UUID, effective_from: int) -> Account:
        account = self.get_account(account_id)
        plan = self.get_plan(plan_id)
        if plan.currency != account.currency:
            raise ValueError(f"the account is billed in {account.currency}, the plan in {plan.currency}")
        account.change_plan(plan_id=plan_id, effective_from=effective_from)
        self.save(account)
        return account

    def set_account_status(self, account_id: UUID, *, status: str, at: int, reason: str = "") -> Account:
        account = self.get_account(account_id)
        if account.status == "terminated":
            raise Conflict("the account is terminated")
        if status == "suspended" and account.status != "suspended":
            account.suspend(at=at, reason=reason)
        elif status == "active" and account.status != "active":
            account.resume(at=at)
        elif status == "terminated":
            account.terminate(at=at, reason=reason)
        self.save(account)
        return account

    def subscriber_ledger_account(self, account: Account, at: int) -> str:
        plan = self.get_plan(account.plan_at(at))
        model = version_in_force(plan.plan_versions(), at).terms.payment_model
        return subscriber_account(account.id, model)

    def record_payment(
        self, *, idempotency_key: str, account_id: UUID, amount: Decimal, currency: str,
        method: str, reference: str, received_at: int,
    ) -> tuple[Payment, bool]:
        """Returns (payment, created). Same key and same body: the recorded payment."""
        account = self.get_account(account_id)
        if currency != account.currency:
            raise ValueError(f"account is billed in {account.currency}, not {currency}")
        if amount <= 0:
            raise ValueError("a payment amount must be positive")
        if amount != amount.quantize(minor_unit(currency)):
            raise ValueError(f"{currency} amounts have at most {minor_unit(currency)} precision")
        body = {"account_id": str(account_id), "amount": str(amount), "currency": currency,
                "method": method, "reference": reference}
        fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        existing = self._maybe_get(Payment, Payment.create_id(idempotency_key))
        if existing is not None:
            if existing.fingerprint != fingerprint:
                raise Conflict("idempotency key already used for a different payment")
            return existing, False
        subscriber = self.subscriber_ledger_account(account, received_at)
        payment = Payment(
            idempotency_key=idempotency_key, fingerprint=fingerprint, account_id=account_id,
            amount=amount, currency=currency, method=method, reference=reference,
            received_at=received_at, postings=payment_postings(subscriber, amount, currency),
        )
        try:
            self.save(payment)
        except IntegrityError:  # a concurrent retry won the race: answer as it did
            return self.record_payment(
                idempotency_key=idempotency_key, account_id=account_id, amount=amount,
                currency=currency, method=method, reference=reference, received_at=received_at,
            )
        return payment, True

    def purchase_addon(
        self, account_id: UUID, *, name: str, gb: Decimal, price: Decimal, valid_from: int, valid_until: int,
        pack_id: str | None = None,
    ) -> Account:
        """An add-on data pack: extra allowance until ``valid_until``, charged at purchase."""
        account = self.get_account(account_id)
        if gb <= 0 or price < 0 or valid_until <= valid_from:
            raise ValueError("a pack has a positive volume, a price and a validity window")
        if price != price.quantize(minor_unit(account.currency)):
            raise ValueError(f"{account.currency} amounts have at most {minor_unit(account.currency)} precision")
        subscriber = self.subscriber_ledger_account(account, valid_from)
        account.purchase_addon(
            pack_id=pack_id or str(uuid.uuid4()), name=name, total_bytes=gb_to_bytes(gb), price=price,
            valid_from=valid_from, valid_until=valid_until,
            postings=addon_postings(subscriber, price, account.currency) if price else [],
        )
        self.save(account)
        return account

    def grant_discount(
        self, account_id: UUID, *, description: str, percent: Decimal = Decimal(0),
        fixed_amount: Decimal = Decimal(0), valid_from: int, valid_until: int,
    ) -> Account:
        """A discount applied on the account's invoices in [valid_from, valid_until)."""
        account = self.get_account(account_id)
        if not (0 <= percent <= 100) or fixed_amount < 0 or (percent == 0) == (fixed_amount == 0):
            raise ValueError("a discount is either a percentage (0-100] or a positive fixed amount")
        if valid_until <= valid_from:
            raise ValueError("a discount needs a validity window")
        account.grant_discount(discount_id=str(uuid.uuid4()), description=description, percent=percent,
                               fixed_amount=fixed_amount, valid_from=valid_from, valid_until=valid_until)
        self.save(account)
        return account

    def issue_token(self, *, token: str, role: str, account_id: UUID | None, label: str, issued_at: int) -> ApiToken:
        if account_id is not None:
            self.get_account(account_id)
        api_token = ApiToken(hashed=token_hash(token), role=role, account_id=account_id,
                             label=label, issued_at=issued_at)
        self.save(api_token)
        return api_token

    def get_plan(self, plan_id: UUID) -> Plan:
        return self._get(Plan, plan_id, "plan")

    def get_account(self, account_id: UUID) -> Account:
        return self._get(Account, account_id, "account")


__all__ = ["AdminCommands", "Conflict", "NotFound"]
