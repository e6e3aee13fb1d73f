"""Finance: invoices (list, detail, PDF), credit notes, billing runs, dunning, exports.

Roles: finance and admin run billing and issue credit notes; the auditor reads; a portal token
reads its own account's invoices (here by id, or under /v1/accounts/{id}/invoices)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from adapters.billing_runs import catch_up, run_billing, run_dunning
from adapters.exports import MEDIA_TYPES, write_export
from domain.money import parse_amount
from projections import finance, queries

from ..bootstrap import Runtime
from ..deps import Principal, PrincipalDep, ReadableAccount, RuntimeDep, require
from ..finance_schemas import (
    PERIOD,
    BillingRunIn,
    BillingRunOut,
    CreditNoteIn,
    CreditNoteOut,
    DunningIn,
    InvoiceDetail,
    InvoiceOut,
    InvoicePage,
    SuspensionOut,
)

router = APIRouter(prefix="/v1", tags=["finance"])
READERS = ("admin", "finance", "auditor")
StatusFilter = Annotated[str | None, Query(pattern="^(draft|issued|partially_paid|paid|void|overdue)$")]
PeriodFilter = Annotated[str | None, Query(pattern=PERIOD, description="YYYY-MM")]


def _time(epoch: int | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _epoch(moment: datetime | None) -> int:
    if moment is None:
        return int(time.time())
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


def _invoice_out(row: dict[str, Any], now: int) -> dict[str, Any]:
    open_amount = parse_amount(row["total"]) - parse_amount(row["paid"]) - parse_amount(row["credited"])
    return {
        "id": row["id"], "number": row["number"], "account_id": row["account_id"],
        "customer_name": row["customer_name"], "period": row["period"], "status": row["status"],
        "overdue": row["status"] in ("issued", "partially_paid") and (row["due_at"] or now) < now,
        "currency": row["currency"], "net": row["net"], "tax": row["tax"], "total": row["total"],
        "paid": row["paid"], "credited": row["credited"], "open_amount": format(open_amount, "f"),
        "previous_balance": row["previous_balance"], "payments_carried": row["payments_carried"],
        "amount_due": row["amount_due"], "issued_at": _time(row["issued_at"]), "due_at": _time(row["due_at"])}


def _etag(runtime: Runtime, *parts: object) -> str:
    version = finance.invoices_version(runtime.engine)
    digest = hashlib.sha256(repr((version, parts)).encode()).hexdigest()[:24]
    return f'W/"{digest}"'


def _page(runtime: Runtime, request: Request, response: Response, *, period: str | None, status: str | None,
          account_id: str | None, cursor: str | None, limit: int, as_of: datetime | None = None,
          ) -> InvoicePage | Response:
    now = _epoch(as_of)
    # Overdue flips with the clock: the day is part of the entity tag.
    tag = _etag(runtime, period, status, account_id, cursor, limit, now // 86_400)
    if tag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": tag})
    rows = finance.invoices(runtime.engine, period=period, status=status, account_id=account_id, after=cursor,
                            limit=limit, now=now)
    response.headers["ETag"] = tag
    return InvoicePage(items=[InvoiceOut(**_invoice_out(r, now)) for r in rows],
                       next_cursor=rows[-1]["id"] if len(rows) == limit else None)


Cursor = Annotated[str | None, Query(pattern=r"^[0-9a-f-]{36}$", description="the last id of the previous page")]
Limit = Annotated[int, Query(ge=1, le=1000)]
NOT_MODIFIED = {304: {"description": "Not modified (If-None-Match matched the ETag)"}}


@router.get("/invoices", response_model=InvoicePage, dependencies=[require(*READERS)], responses=NOT_MODIFIED)
def list_invoices(
    runtime: RuntimeDep, request: Request, response: Response, period: PeriodFilter = None,
    status: StatusFilter = None, account_id: UUID | None = None, cursor: Cursor = None, limit: Limit = 100,
    as_of: Annotated[datetime | None, Query(description="the moment overdue is judged at (default now)")] = None,
) -> Any:
    """Invoices by id, filtered by period, status (``overdue``: open and past due) and account."""
    return _page(runtime, request, response, period=period, status=status,
                 account_id=str(account_id) if account_id else None, cursor=cursor, limit=limit, as_of=as_of)


@router.get("/accounts/{account_id}/invoices", response_model=InvoicePage, tags=["portal"], responses=NOT_MODIFIED)
def account_invoices(
    account_id: ReadableAccount, runtime: RuntimeDep, request: Request, response: Response,
    period: PeriodFilter = None, status: StatusFilter = None, cursor: Cursor = None, limit: Limit = 100,
) -> Any:
    """One account's invoices (a portal token: its own only)."""
    if queries.account(runtime.engine, account_id) is None:
        raise HTTPException(404, f"no account {account_id}")
    return _page(runtime, request, response, period=period, status=status, account_id=account_id, cursor=cursor,
                 limit=limit)


def _readable_invoice(runtime: Runtime, principal: Principal, invoice_id: UUID) -> dict[str, Any]:
    row = finance.invoice(runtime.engine, str(invoice_id))
    if row is None or not principal.may_read_account(row["account_id"]) or principal.role not in (*READERS, "portal"):
        raise HTTPException(404, f"no invoice {invoice_id}")
    return row


@router.get("/invoices/{invoice_id}", response_model=InvoiceDetail)
def get_invoice(invoice_id: UUID, runtime: RuntimeDep, principal: PrincipalDep) -> InvoiceDetail:
    row = _readable_invoice(runtime, principal, invoice_id)
    now = int(time.time())
    return InvoiceDetail(
        **_invoice_out(row, now),
        lines=[{k: r[k] for k in ("line", "kind", "description", "quantity", "unit", "unit_price", "net",
                                  "tax_rate", "tax", "gross")} for r in row["lines"]],
        allocations=[{"source": a["source"], "amount": a["amount"], "at": _time(a["at"])} for a in row["allocations"]],
        credit_notes=[_credit_note_out(n) for n in row["credit_notes"]])


def _credit_note_out(row: dict[str, Any]) -> CreditNoteOut:
    return CreditNoteOut(**{k: row[k] for k in CreditNoteOut.model_fields if k != "issued_at"},
                         issued_at=_time(row["issued_at"]))


PDF_RESPONSE = {200: {"content": {"application/pdf": {}}, "description": "The invoice as PDF"}}


def _pdf(runtime: Runtime, invoice_id: UUID, request: Request) -> Response:
    invoice = runtime.ledger.get_invoice(invoice_id)
    if invoice.status == "draft":
        raise HTTPException(409, "the invoice is a draft; it has no PDF until issued")
    tag = f'"{invoice.number}"'  # an issued invoice never changes
    if tag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers={"ETag": tag})
    from adapters.invoice_pdf import Seller, daily_usage, invoice_document, render_invoice  # reportlab: on first use

    settings = runtime.settings
    seller = Seller(settings.seller_name, settings.seller_address, settings.seller_tax_id,
                    settings.payment_instructions)
    rows = queries.usage(runtime.engine, str(invoice.account_id), "day", invoice.period_start, invoice.period_end, 400)
    pdf = render_invoice(invoice_document(invoice), seller, daily_usage(rows, invoice.period_start, invoice.period_end))
    return Response(pdf, media_type="application/pdf", headers={
        "ETag": tag, "Content-Disposition": f'inline; filename="{invoice.number}.pdf"'})


@router.get("/invoices/{invoice_id}/pdf", response_class=Response, responses=PDF_RESPONSE)
def invoice_pdf(invoice_id: UUID, runtime: RuntimeDep, principal: PrincipalDep, request: Request) -> Response:
    _readable_invoice(runtime, principal, invoice_id)
    return _pdf(runtime, invoice_id, request)


@router.get("/accounts/{account_id}/invoices/{invoice_id}/pdf", response_class=Response, responses=PDF_RESPONSE,
            tags=["portal"])
def account_invoice_pdf(account_id: ReadableAccount, invoice_id: UUID, runtime: RuntimeDep,
                        request: Request) -> Response:
    row = finance.invoice(runtime.engine, str(invoice_id))
    if row is None or row["account_id"] != account_id:
        raise HTTPException(404, f"no invoice {invoice_id}")
    return _pdf(runtime, invoice_id, request)


@router.post("/invoices/{invoice_id}/credit-notes", status_code=201, response_model=CreditNoteOut,
             dependencies=[require("admin", "finance")])
def credit_note(
    invoice_id: UUID, body: CreditNoteIn, runtime: RuntimeDep, response: Response,
    idempotency_key: Annotated[str | None, Header(min_length=8, max_length=200)] = None,
) -> CreditNoteOut:
    """Credit an issued invoice (all of it, voiding it, when ``amount`` is omitted). With an
    Idempotency-Key, a retry returns the note already issued (200)."""
    key = idempotency_key or f"once:{time.time_ns()}"
    note, created = runtime.ledger.issue_credit_note(
        invoice_id, amount=parse_amount(body.amount) if body.amount is not None else None, reason=body.reason,
        at=int(time.time()), site=runtime.settings.site, key=key)
    if not created:
        response.status_code = 200
    catch_up(runtime)
    return CreditNoteOut(id=str(note.id), number=note.number, invoice_id=str(note.invoice_id),
                         invoice_number=note.invoice_number, account_id=str(note.account_id), amount=str(note.amount),
                         net=str(note.net), tax=str(note.tax), currency=note.currency, reason=note.reason,
                         issued_at=_time(note.issued_at))


@router.post("/billing-runs", response_model=BillingRunOut, dependencies=[require("admin", "finance")])
async def billing_run(body: BillingRunIn, runtime: RuntimeDep) -> BillingRunOut:
    """Bill every account for ``period``: recurring fees (prorated), usage by band, add-ons,
    discounts, tax. Safe to repeat: invoices already issued are counted, never duplicated."""
    result = await run_in_threadpool(run_billing, runtime, body.period, at=_epoch(body.at))
    return BillingRunOut(period=result.period, issued=len(result.issued),
                         first_number=result.issued[0] if result.issued else None,
                         last_number=result.issued[-1] if result.issued else None, existing=result.existing,
                         skipped=result.skipped, not_ended=result.not_ended)


@router.post("/billing-runs/dunning", response_model=list[SuspensionOut], dependencies=[require("admin")])
async def dunning(body: DunningIn, runtime: RuntimeDep) -> list[SuspensionOut]:
    """Suspend accounts whose plan's dunning days an open invoice has passed."""
    done = await run_in_threadpool(run_dunning, runtime, at=_epoch(body.at))
    return [SuspensionOut(**s) for s in done]  # type: ignore[arg-type]


def _stream(path: str) -> Iterator[bytes]:
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 16):
                yield chunk
    finally:
        os.unlink(path)


EXPORT_RESPONSE = {200: {"content": {m: {} for m in MEDIA_TYPES.values()}, "description": "The export file"}}


@router.get("/exports/{kind}", response_class=StreamingResponse, responses=EXPORT_RESPONSE,
            dependencies=[require(*READERS)])
async def export(
    kind: Literal["invoices", "invoice-lines", "journal", "usage"], runtime: RuntimeDep,
    format: Literal["csv", "xlsx", "parquet"] = "csv", period: PeriodFilter = None,
) -> StreamingResponse:
    """The invoice register (``invoices``), ``invoice-lines``, the GL ``journal`` (date, account,
    debit, credit, reference; each transaction sums to zero) or ``usage`` per account."""
    handle = tempfile.NamedTemporaryFile(suffix=f".{format}", delete=False)  # noqa: SIM115 (streamed, then removed)
    handle.close()
    await run_in_threadpool(write_export, runtime.engine, kind, format, Path(handle.name), period=period)
    name = f"{kind}-{period or 'all'}.{format}"
    return StreamingResponse(_stream(handle.name), media_type=MEDIA_TYPES[format],
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})

