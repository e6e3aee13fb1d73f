"""Read-side queries of finance: invoices (list, detail), what a billing run carries forward,
and chunked readers for exports. Plain functions over an Engine."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Select, and_, func, select

from . import tables as t

OVERDUE = "overdue"


def invoice_filter(query: Select[Any], *, period: str | None = None, status: str | None = None,
                   account_id: str | None = None, now: int | None = None) -> Select[Any]:
    inv = t.invoices
    if period:
        query = query.where(inv.c.period == period)
    if account_id:
        query = query.where(inv.c.account_id == account_id)
    if status == OVERDUE:
        query = query.where(inv.c.status.in_(("issued", "partially_paid")), inv.c.due_at < (now or 0))
    elif status:
        query = query.where(inv.c.status == status)
    return query


def invoices(engine: Engine, *, period: str | None = None, status: str | None = None,
             account_id: str | None = None, after: str | None = None, limit: int = 100,
             now: int | None = None) -> list[dict[str, Any]]:
    """Invoices by id (stable cursor order); ``after`` is the last id seen."""
    inv = t.invoices
    query = invoice_filter(select(inv), period=period, status=status, account_id=account_id, now=now)
    if after:
        query = query.where(inv.c.id > after)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(inv.c.id).limit(limit)).mappings()]


def invoices_version(engine: Engine) -> tuple[int, int]:
    """(max position, count) of the invoice tables: changes whenever any invoice does."""
    with engine.connect() as conn:
        row = conn.execute(select(func.coalesce(func.max(t.invoices.c.position), 0),
                                  func.count()).select_from(t.invoices)).one()
        notes = conn.execute(select(func.count()).select_from(t.credit_notes)).scalar() or 0
        allocations = conn.execute(select(func.count()).select_from(t.invoice_allocations)).scalar() or 0
    return int(row[0]), int(row[1]) * 1_000_003 + int(notes) * 1009 + int(allocations)


def invoice(engine: Engine, invoice_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(t.invoices).where(t.invoices.c.id == invoice_id)).mappings().first()
        if row is None:
            return None
        lines = conn.execute(select(t.invoice_lines).where(t.invoice_lines.c.invoice_id == invoice_id)
                             .order_by(t.invoice_lines.c.line)).mappings().all()
        allocations = conn.execute(select(t.invoice_allocations).where(
            t.invoice_allocations.c.invoice_id == invoice_id).order_by(t.invoice_allocations.c.at)).mappings().all()
        notes = conn.execute(select(t.credit_notes).where(t.credit_notes.c.invoice_id == invoice_id)
                             .order_by(t.credit_notes.c.issued_at)).mappings().all()
    return dict(row) | {"lines": [dict(r) for r in lines], "allocations": [dict(r) for r in allocations],
                        "credit_notes": [dict(r) for r in notes]}


def account_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [str(r[0]) for r in conn.execute(select(t.accounts.c.id).order_by(t.accounts.c.id))]


def invoiced_accounts(engine: Engine, period: str) -> set[str]:
    with engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(
            select(t.invoices.c.account_id).where(t.invoices.c.period == period, t.invoices.c.number != ""))}


def carried_forward(engine: Engine, period: str, at: int) -> dict[str, dict[str, str]]:
    """Per account: the amount due on its latest earlier invoice and the payments received
    since it was issued (display figures for the next invoice)."""
    inv, pay = t.invoices, t.payments
    latest = (select(inv.c.account_id, func.max(inv.c.issued_at).label("issued_at"))
              .where(inv.c.period < period, inv.c.number != "").group_by(inv.c.account_id).subquery())
    carried: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(select(inv.c.account_id, inv.c.amount_due, inv.c.issued_at).join(
                latest, and_(inv.c.account_id == latest.c.account_id, inv.c.issued_at == latest.c.issued_at))):
            carried[row.account_id] = {"previous_balance": Decimal(row.amount_due), "since": row.issued_at,
                                       "payments": Decimal(0)}
        for row in conn.execute(select(pay.c.account_id, pay.c.amount, pay.c.received_at)
                                .where(pay.c.received_at < at)):
            entry = carried.setdefault(row.account_id, {"previous_balance": Decimal(0), "since": 0,
                                                        "payments": Decimal(0)})
            if row.received_at >= entry["since"]:
                entry["payments"] += Decimal(row.amount)
    return {account: {"previous_balance": str(e["previous_balance"]), "payments": str(e["payments"])}
            for account, e in carried.items()}


def overdue_accounts(engine: Engine, now: int) -> list[dict[str, Any]]:
    """Open invoices past their due date: account, invoice, days overdue."""
    inv = t.invoices
    query = (select(inv.c.account_id, inv.c.id, inv.c.number, inv.c.due_at)
             .where(inv.c.status.in_(("issued", "partially_paid")), inv.c.due_at < now)
             .order_by(inv.c.account_id, inv.c.due_at))
    with engine.connect() as conn:
        return [dict(r) | {"days_overdue": (now - r.due_at) // 86_400} for r in conn.execute(query).mappings()]


def chunks(engine: Engine, query: Select[Any], size: int = 10_000) -> Iterator[list[dict[str, Any]]]:
    """Rows of ``query`` in chunks (server-side cursor where the driver has one)."""
    with engine.connect().execution_options(stream_results=True, yield_per=size) as conn:
        result = conn.execute(query).mappings()
        while batch := result.fetchmany(size):
            yield [dict(r) for r in batch]

