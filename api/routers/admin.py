"""Admin: NAS, plans, accounts, payments."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException, Query, Response

from domain.calendar import zone
from domain.money import Money, parse_amount
from domain.plans import PlanTerms
from projections import queries

from ..deps import RuntimeDep, require
from ..schemas import (
    AccountIn,
    AccountOut,
    AccountPage,
    AccountSummary,
    AddonIn,
    Created,
    DiscountIn,
    NasIn,
    NasOut,
    PaymentIn,
    PaymentOut,
    PlanChangeIn,
    PlanIn,
    PlanOut,
    PlanRevisionIn,
    PlanTermsIn,
    PlanVersionOut,
    StatusIn,
)
from .portal import plain

router = APIRouter(prefix="/v1", tags=["admin"], dependencies=[require("admin")])


def _settle(runtime: RuntimeDep) -> None:
    """Read-your-writes: wait until the read models include what was just recorded."""
    position = runtime.ledger.recorder.max_notification_id() or 0
    runtime.projector.wait_for(position, timeout=5.0)


@router.post("/nas", status_code=201, response_model=Created)
def register_nas(body: NasIn, runtime: RuntimeDep) -> Created:
    import ipaddress

    try:
        ipaddress.ip_network(body.address, strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or subnet: {body.address!r}") from None
    nas = runtime.ledger.register_nas(
        address=body.address, name=body.name, secret=body.secret, vendor=body.vendor,
        require_message_authenticator=body.require_message_authenticator, site=body.site, coa_port=body.coa_port,
    )
    _settle(runtime)
    return Created(id=str(nas.id))


@router.get("/nas", response_model=list[NasOut])
def list_nas(runtime: RuntimeDep) -> list[NasOut]:
    return [NasOut(**{k: r[k] for k in NasOut.model_fields}) for r in queries.listing(runtime.engine, "nas")]


def _epoch(moment: datetime | None, default: int | None = None) -> int:
    if moment is None:
        return int(time.time()) if default is None else default
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _plan_out(plan: Any) -> PlanOut:
    terms = plan.versions[-1]["terms"]
    return PlanOut(id=str(plan.id), name=plan.name, currency=terms["currency"], monthly_fee=terms["monthly_fee"],
                   price_per_gb=terms["price_per_gb"], versions=[
                       PlanVersionOut(effective_from=datetime.fromtimestamp(v["effective_from"], UTC), terms=v["terms"])
                       for v in plan.versions])


def _terms(body: PlanTermsIn) -> PlanTerms:
    terms = PlanTerms.from_dict(body.terms_dict())
    zone(terms.timezone)  # an unknown zone is a 422 now, not a rating failure later
    return terms


@router.post("/plans", status_code=201, response_model=Created)
def create_plan(body: PlanIn, runtime: RuntimeDep) -> Created:
    plan = runtime.ledger.create_plan(name=body.name, terms=_terms(body), effective_from=_epoch(body.effective_from, 0))
    _settle(runtime)
    return Created(id=str(plan.id))


@router.get("/plans/{plan_id}", response_model=PlanOut)
def get_plan(plan_id: UUID, runtime: RuntimeDep) -> PlanOut:
    return _plan_out(runtime.ledger.get_plan(plan_id))


@router.post("/plans/{plan_id}/versions", status_code=201, response_model=PlanOut)
def revise_plan(plan_id: UUID, body: PlanRevisionIn, runtime: RuntimeDep) -> PlanOut:
    """A new version of the plan from ``effective_from``; usage before it keeps the old terms."""
    plan = runtime.ledger.revise_plan(plan_id, terms=_terms(body), effective_from=_epoch(body.effective_from))
    _settle(runtime)
    return _plan_out(plan)


def _uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise HTTPException(422, f"{what} is not a valid id: {value!r}") from None


@router.post("/accounts", status_code=201, response_model=Created)
def open_account(body: AccountIn, runtime: RuntimeDep) -> Created:
    account = runtime.ledger.open_account(
        name=body.name, plan_id=_uuid(body.plan_id, "plan_id"), usernames=body.usernames,
        opened_at=_epoch(body.opened_at), anchor_day=body.anchor_day, tax_zone=body.tax_zone,
        tax_rate=parse_amount(body.tax_rate), credit_limit=parse_amount(body.credit_limit),
    )
    _settle(runtime)
    return Created(id=str(account.id))


def _account_out(account: Any) -> AccountOut:
    return AccountOut(
        id=str(account.id), name=account.name, plan_id=str(account.plan_at(int(time.time()))),
        currency=account.currency, status=account.status, usernames=account.usernames,
        anchor_day=account.anchor_day, tax_zone=account.tax_zone, tax_rate=str(account.tax_rate),
        credit_limit=str(account.credit_limit), packs=account.packs, discounts=account.discounts,
        enforcement=account.enforcement)


@router.get("/accounts", response_model=AccountPage)
def find_accounts(
    runtime: RuntimeDep,
    username: Annotated[str | None, Query(max_length=253, description="the RADIUS User-Name (exact)")] = None,
    status: Annotated[str | None, Query(pattern="^(active|suspended|closed)$")] = None,
    name: Annotated[str | None, Query(max_length=200, description="part of the account's name")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9a-f-]{36}$")] = None,
) -> AccountPage:
    """Find accounts: by RADIUS username (support's first question), status or name; in id
    order, ``next_cursor`` continues the listing."""
    rows = queries.find_accounts(runtime.engine, username=username, status=status, name=name,
                                 after=cursor or "", limit=limit)
    items = [AccountSummary(
        id=r["id"], name=r["name"], plan_id=r["plan_id"], currency=r["currency"], status=r["status"],
        usernames=r["usernames"], opened_at=datetime.fromtimestamp(r["opened_at"], UTC),
        balance=_held(r["receivable"], r["currency"])) for r in rows]
    return AccountPage(items=items, next_cursor=rows[-1]["id"] if len(rows) == limit else None)


def _held(receivable: str | None, currency: str) -> str:
    """The balance as the portal shows it (credit positive), rounded to the currency's unit."""
    owed = Decimal(receivable) if receivable is not None else Decimal(0)
    return plain(Money(owed.copy_negate(), currency).rounded().amount)


@router.get("/accounts/{account_id}", response_model=AccountOut)
def get_account(account_id: UUID, runtime: RuntimeDep) -> AccountOut:
    return _account_out(runtime.ledger.get_account(account_id))


@router.post("/accounts/{account_id}/plan", response_model=AccountOut)
def change_plan(account_id: UUID, body: PlanChangeIn, runtime: RuntimeDep) -> AccountOut:
    """Move the account to another plan from ``effective_from`` (default now); the invoice
    prorates both plans' fees by day."""
    account = runtime.ledger.change_plan(account_id, plan_id=_uuid(body.plan_id, "plan_id"),
                                         effective_from=_epoch(body.effective_from))
    _settle(runtime)
    return _account_out(account)


@router.post("/accounts/{account_id}/status", response_model=AccountOut)
def set_status(account_id: UUID, body: StatusIn, runtime: RuntimeDep) -> AccountOut:
    account = runtime.ledger.set_account_status(account_id, status=body.status, at=_epoch(body.at),
                                                reason=body.reason)
    _settle(runtime)
    return _account_out(account)


@router.post("/accounts/{account_id}/addons", status_code=201, response_model=AccountOut)
def purchase_addon(account_id: UUID, body: AddonIn, runtime: RuntimeDep) -> AccountOut:
    """Sell an add-on data pack: extra allowance for ``valid_days``, charged now."""
    start = _epoch(body.valid_from)
    account = runtime.ledger.purchase_addon(account_id, name=body.name, gb=parse_amount(body.gb),
                                            price=parse_amount(body.price), valid_from=start,
                                            valid_until=start + body.valid_days * 86_400)
    _settle(runtime)
    return _account_out(account)


@router.post("/accounts/{account_id}/discounts", status_code=201, response_model=AccountOut)
def grant_discount(account_id: UUID, body: DiscountIn, runtime: RuntimeDep) -> AccountOut:
    account = runtime.ledger.grant_discount(
        account_id, description=body.description, percent=parse_amount(body.percent),
        fixed_amount=parse_amount(body.fixed_amount), valid_from=_epoch(body.valid_from),
        valid_until=_epoch(body.valid_until))
    _settle(runtime)
    return _account_out(account)


@router.post("/accounts/{account_id}/payments", status_code=201, response_model=PaymentOut)
def record_payment(
    account_id: UUID,
    body: PaymentIn,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: Annotated[str, Header(min_length=8, max_length=200)],
) -> PaymentOut:
    """Record a payment or top-up. Retrying with the same Idempotency-Key and body returns
    the recorded payment (200); the same key with another body is a 409."""
    payment, created = runtime.ledger.record_payment(
        idempotency_key=idempotency_key, account_id=account_id, amount=parse_amount(body.amount),
        currency=body.currency, method=body.method, reference=body.reference,
        received_at=int(datetime.now(UTC).timestamp()),
    )
    if not created:
        response.status_code = 200
    _settle(runtime)
    return PaymentOut(id=str(payment.id), account_id=str(payment.account_id), amount=str(payment.amount),
                      currency=payment.currency, method=payment.method, reference=payment.reference)
