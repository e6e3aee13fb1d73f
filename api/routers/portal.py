"""Portal reads of one subscriber: balance, usage, sessions. Portal tokens see only their
own account; staff roles see any."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query

from domain.money import Money
from projections import queries

from ..deps import ReadableAccount, RuntimeDep
from ..schemas import BalanceOut, SessionOut, SessionPage, UsageBucket, UsageOut

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["portal"])


_WIDE = Context(prec=80)  # exact: rated amounts may carry more than 28 digits


def _time(epoch: int | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def plain(amount: Decimal) -> str:
    """An amount as a decimal string (never "-0.00"); the balance views share it."""
    return format(amount.copy_abs() if amount.is_zero() else amount, "f")


def balance_fields(receivable: str | Decimal, currency: str) -> tuple[str, str]:
    """The customer's credit (the negated receivable, as stored in the balances model) rounded
    to the currency's minor unit, and exact; `api.portal_reads` answers with the same."""
    credit = Money(Decimal(receivable).copy_negate(), currency)
    return plain(credit.rounded().amount), plain(credit.amount.normalize(_WIDE)) if credit.amount else "0"


@router.get("/balance", response_model=BalanceOut)
def balance(account_id: ReadableAccount, runtime: RuntimeDep) -> BalanceOut:
    """The subscriber's balance. (`api.portal_reads` answers the common case before this route.)"""
    found = queries.balance(runtime.engine, account_id)
    if found is None:
        raise HTTPException(404, f"no account {account_id}")
    rounded, exact = balance_fields(found["receivable"], found["currency"])
    return BalanceOut(account_id=account_id, balance=rounded, balance_exact=exact,
                      currency=found["currency"], as_of=_time(found["updated_at"]))


@router.get("/usage", response_model=UsageOut)
def usage(
    account_id: ReadableAccount,
    runtime: RuntimeDep,
    granularity: Literal["hour", "day"] = "day",
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> UsageOut:
    if queries.account(runtime.engine, account_id) is None:
        raise HTTPException(404, f"no account {account_id}")
    rows = queries.usage(runtime.engine, account_id, granularity,
                         int(start.timestamp()) if start else None, int(end.timestamp()) if end else None, limit)
    return UsageOut(account_id=account_id, granularity=granularity, buckets=[
        UsageBucket(start=datetime.fromtimestamp(r["bucket_start"], UTC), upload_bytes=r["upload_bytes"],
                    download_bytes=r["download_bytes"], bands=r["bands"]) for r in rows])


@router.get("/sessions", response_model=SessionPage)
def sessions(
    account_id: ReadableAccount,
    runtime: RuntimeDep,
    active: bool | None = None,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,12}:[0-9a-f-]{36}:\d{1,12}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SessionPage:
    if queries.account(runtime.engine, account_id) is None:
        raise HTTPException(404, f"no account {account_id}")
    rows = queries.sessions(runtime.engine, account_id, active=active, before=cursor, limit=limit)
    items = [SessionOut(
        id=r["id"], nas_id=r["nas_id"], acct_session_id=r["acct_session_id"], username=r["username"],
        started_at=_time(r["started_at"]), updated_at=_time(r["updated_at"]), stopped_at=_time(r["stopped_at"]),
        upload_bytes=r["upload_bytes"], download_bytes=r["download_bytes"], charge=r["amount"],
        currency=r["currency"], framed_ip=r["framed_ip"], terminate_cause=r["terminate_cause"],
    ) for r in rows]
    return SessionPage(items=items, next_cursor=next_cursor(rows, limit))


def next_cursor(rows: list[dict[str, Any]], limit: int) -> str | None:
    """The cursor of the page after ``rows`` (started_at:id of its last row), if it was full."""
    return f"{rows[-1]['started_at']}:{rows[-1]['id']}" if len(rows) == limit else None
