"""Bodies of the finance API: invoices, credit notes, billing runs. Amounts are decimal strings."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from .schemas import Strict

PERIOD = r"^\d{4}-(0[1-9]|1[0-2])$"


class InvoiceLineOut(BaseModel):
    line: int
    kind: str
    description: str
    quantity: str
    unit: str
    unit_price: str
    net: str
    tax_rate: str
    tax: str
    gross: str


class AllocationOut(BaseModel):
    source: str = Field(description="payment:<id> or credit-note:<id>")
    amount: str
    at: datetime


class CreditNoteOut(BaseModel):
    id: str
    number: str
    invoice_id: str
    invoice_number: str
    account_id: str
    amount: str
    net: str
    tax: str
    currency: str
    reason: str
    issued_at: datetime


class InvoiceOut(BaseModel):
    id: str
    number: str
    account_id: str
    customer_name: str
    period: str
    status: Literal["draft", "issued", "partially_paid", "paid", "void"]
    overdue: bool
    currency: str
    net: str
    tax: str
    total: str
    paid: str
    credited: str
    open_amount: str = Field(description="total - paid - credited")
    previous_balance: str
    payments_carried: str
    amount_due: str = Field(description="as printed: previous balance - payments + this invoice")
    issued_at: datetime | None
    due_at: datetime | None


class InvoiceDetail(InvoiceOut):
    lines: list[InvoiceLineOut]
    allocations: list[AllocationOut]
    credit_notes: list[CreditNoteOut]


class InvoicePage(BaseModel):
    items: list[InvoiceOut]
    next_cursor: str | None


class CreditNoteIn(Strict):
    amount: str | None = Field(default=None, pattern=r"^\d{1,15}(\.\d{1,4})?$",
                               description="gross amount to credit; omitted: all that is left (voids the invoice)")
    reason: str = Field(min_length=1, max_length=500)


class BillingRunIn(Strict):
    period: str = Field(pattern=PERIOD, examples=["2026-11"])
    at: datetime | None = Field(default=None, description="the run's date (default now); periods must have ended")


class BillingRunOut(BaseModel):
    period: str
    issued: int
    first_number: str | None
    last_number: str | None
    existing: int
    skipped: int
    not_ended: int


class DunningIn(Strict):
    at: datetime | None = None


class SuspensionOut(BaseModel):
    account_id: str
    invoice: str
    days_overdue: int


class IpHolderOut(BaseModel):
    session_id: str
    account_id: str | None
    username: str
    nas_id: str
    nas_ip: str
    framed_ip: str
    calling_station_id: str
    started_at: datetime
    stopped_at: datetime | None
