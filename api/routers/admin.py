"""Admin: NAS, plans, accounts, payments."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException, Response

from domain.money import parse_amount
from domain.plans import PlanTerms
from projections import queries

from ..deps import RuntimeDep, require
from ..schemas import AccountIn, AccountOut, Created, NasIn, NasOut, PaymentIn, PaymentOut, PlanIn, PlanOut

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
        require_message_authenticator=body.require_message_authenticator, site=body.site,
    )
    _settle(runtime)
    return Created(id=str(nas.id))


@router.get("/nas", response_model=list[NasOut])
def list_nas(runtime: RuntimeDep) -> list[NasOut]:
    return [NasOut(**{k: r[k] for k in NasOut.model_fields}) for r in queries.listing(runtime.engine, "nas")]


@router.post("/plans", status_code=201, response_model=Created)
def create_plan(body: PlanIn, runtime: RuntimeDep) -> Created:
    terms = PlanTerms.parse(body.currency, body.monthly_fee, body.price_per_gb)
    effective = int(body.effective_from.timestamp()) if body.effective_from else 0
    plan = runtime.ledger.create_plan(name=body.name, terms=terms, effective_from=effective)
    _settle(runtime)
    return Created(id=str(plan.id))


@router.get("/plans/{plan_id}", response_model=PlanOut)
def get_plan(plan_id: UUID, runtime: RuntimeDep) -> PlanOut:
    plan = runtime.ledger.get_plan(plan_id)
    terms = plan.versions[-1]["terms"]
    return PlanOut(id=str(plan.id), name=plan.name, currency=terms["currency"],
                   monthly_fee=terms["monthly_fee"], price_per_gb=terms["price_per_gb"])


@router.post("/accounts", status_code=201, response_model=Created)
def open_account(body: AccountIn, runtime: RuntimeDep) -> Created:
    try:
        plan_id = UUID(body.plan_id)
    except ValueError:
        raise HTTPException(422, f"plan_id is not a valid id: {body.plan_id!r}") from None
    account = runtime.ledger.open_account(
        name=body.name, plan_id=plan_id, usernames=body.usernames, opened_at=int(time.time())
    )
    _settle(runtime)
    return Created(id=str(account.id))


@router.get("/accounts/{account_id}", response_model=AccountOut)
def get_account(account_id: UUID, runtime: RuntimeDep) -> AccountOut:
    account = runtime.ledger.get_account(account_id)
    return AccountOut(id=str(account.id), name=account.name, plan_id=str(account.plan_at(int(time.time()))),
                      currency=account.currency, status=account.status, usernames=account.usernames)


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
