"""Read model of invoices: documents, lines, credit notes and payment allocation.

Payments are allocated to an account's open invoices oldest first (issue date, then number),
and a payment that finds no open invoice waits as account credit for the next one. The
allocation is a pure function of the ledger's events, so a rebuild reproduces it exactly.
Overdue is not stored: it depends on the reader's clock (``due_at`` passed, still open).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import delete, insert, select, update

from domain.money import minor_unit

from . import tables as t
from .base import ModelBatch, ReadModel, dec, fmt


def _amount(amount: Decimal, currency: str) -> str:
    """Document amounts keep the currency's minor unit ("10.00", not "10")."""
    return format(amount.quantize(minor_unit(currency)), "f")

OPEN = ("issued", "partially_paid")


def payment_status(total: Decimal, paid: Decimal, credited: Decimal) -> str:
    if total > 0 and credited >= total:
        return "void"
    if paid + credited >= total:
        return "paid"
    return "partially_paid" if paid + credited > 0 else "issued"


class _InvoiceBatch(ModelBatch):
    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.drafts: dict[str, dict[str, Any]] = {}  # invoice rows not written yet
        self.lines: list[dict[str, Any]] = []
        # Accounts that were issued an invoice since the last flush: waiting credit (a payment
        # received before the invoice) is spent on it at the next flush, with one query for all
        # of them rather than one per invoice. Every handler that touches an account's credit or
        # invoices flushes first, and a second invoice of the same account flushes before it
        # is issued, so the outcome is exactly that of allocating at each issue.
        self.issued_accounts: dict[str, None] = {}

    def on_Invoice_Drafted(self, position: int, e: Any) -> None:
        invoice = str(e.originator_id)
        self.drafts[invoice] = {
            "id": invoice, "number": "", "series": "", "account_id": str(e.account_id),
            "customer_name": str(e.customer.get("name", "")), "period": e.period, "period_start": e.period_start,
            "period_end": e.period_end, "status": "draft", "currency": e.currency, "net": e.totals["net"],
            "tax": e.totals["tax"], "total": e.totals["gross"], "paid": "0", "credited": "0",
            "previous_balance": e.carried.get("previous_balance", "0"),
            "payments_carried": e.carried.get("payments", "0"), "amount_due": e.carried.get("amount_due", "0"),
            "issued_at": None, "due_at": None, "position": position}
        self.lines += [{"invoice_id": invoice, "line": n, "kind": line["kind"], "description": line["description"],
                        "quantity": line["quantity"], "unit": line["unit"], "unit_price": line["unit_price"],
                        "net": line["net"], "tax_rate": line["tax_rate"], "tax": line["tax"], "gross": line["gross"]}
                       for n, line in enumerate(e.lines)]

    def on_Invoice_Issued(self, position: int, e: Any) -> None:
        invoice = str(e.originator_id)
        values = {"number": e.number, "series": e.series, "status": "issued", "issued_at": e.issued_at,
                  "due_at": e.due_at, "position": position}
        if invoice in self.drafts:
            account = self.drafts[invoice]["account_id"]
        else:
            account = self.conn.execute(select(t.invoices.c.account_id).where(t.invoices.c.id == invoice)).scalar()
        if account in self.issued_accounts:
            self.flush()
        if invoice in self.drafts:
            self.drafts[invoice].update(values)
        else:
            self.conn.execute(update(t.invoices).where(t.invoices.c.id == invoice).values(**values))
        if account is not None:
            self.issued_accounts[account] = None

    def on_CreditNote_Issued(self, position: int, e: Any) -> None:
        self.flush()
        self.conn.execute(insert(t.credit_notes).values(
            id=str(e.originator_id), number=e.number, invoice_id=str(e.invoice_id), invoice_number=e.invoice_number,
            account_id=str(e.account_id), amount=fmt(e.amount), net=fmt(e.net), tax=fmt(e.tax), currency=e.currency,
            reason=e.reason, issued_at=e.issued_at))
        invoice = str(e.invoice_id)
        row = self.conn.execute(select(t.invoices).where(t.invoices.c.id == invoice)).mappings().first()
        if row is None:
            return
        credited = dec(row["credited"]) + e.amount
        total, paid = dec(row["total"]), dec(row["paid"])
        self.conn.execute(insert(t.invoice_allocations).values(
            invoice_id=invoice, source=f"credit-note:{e.originator_id}", amount=_amount(e.amount, e.currency),
            at=e.issued_at))
        excess = paid + credited - total
        if excess > 0:  # paid, then credited: the overpayment goes back to the account's credit
            paid -= excess
            self.conn.execute(insert(t.account_credit).values(
                account_id=row["account_id"], payment_id=f"released:{e.originator_id}", amount=fmt(excess),
                at=e.issued_at))
        self.conn.execute(update(t.invoices).where(t.invoices.c.id == invoice).values(
            credited=_amount(credited, e.currency), paid=_amount(paid, e.currency),
            status=payment_status(total, paid, credited), position=position))
        if excess > 0:
            self._allocate(row["account_id"])

    def on_Payment_Received(self, position: int, e: Any) -> None:
        self.flush()
        self.conn.execute(insert(t.account_credit).values(
            account_id=str(e.account_id), payment_id=f"payment:{e.originator_id}", amount=fmt(e.amount),
            at=e.received_at))
        self._allocate(str(e.account_id))

    def _allocate(self, account_id: str) -> None:
        """Spend the account's credit on its open invoices, oldest first."""
        self.flush()
        inv, credit = t.invoices, t.account_credit
        credits = [dict(r) for r in self.conn.execute(
            select(credit).where(credit.c.account_id == account_id).order_by(credit.c.at, credit.c.payment_id)
        ).mappings()]
        if not credits:
            return
        open_invoices = self.conn.execute(
            select(inv).where(inv.c.account_id == account_id, inv.c.status.in_(OPEN))
            .order_by(inv.c.issued_at, inv.c.number)).mappings().all()
        for row in open_invoices:
            total, paid, credited = dec(row["total"]), dec(row["paid"]), dec(row["credited"])
            for source in credits:
                need = total - paid - credited
                available = dec(source["amount"])
                if need <= 0:
                    break
                if available <= 0:
                    continue
                take = min(need, available)
                paid += take
                source["amount"] = fmt(available - take)
                self._allocation(row["id"], source["payment_id"], take, source["at"], row["currency"])
            self.conn.execute(update(inv).where(inv.c.id == row["id"]).values(
                paid=_amount(paid, row["currency"]), status=payment_status(total, paid, credited)))
        for source in credits:
            where = (credit.c.account_id == account_id) & (credit.c.payment_id == source["payment_id"])
            if dec(source["amount"]) <= 0:
                self.conn.execute(delete(credit).where(where))
            else:
                self.conn.execute(update(credit).where(where).values(amount=source["amount"]))

    def _allocation(self, invoice_id: str, source: str, amount: Decimal, at: int, currency: str) -> None:
        allocations = t.invoice_allocations
        where = (allocations.c.invoice_id == invoice_id) & (allocations.c.source == source)
        found = self.conn.execute(select(allocations.c.amount).where(where)).scalar()
        if found is None:
            self.conn.execute(insert(allocations).values(invoice_id=invoice_id, source=source,
                                                         amount=_amount(amount, currency), at=at))
        else:
            self.conn.execute(update(allocations).where(where).values(amount=_amount(dec(found) + amount, currency)))

    def flush(self) -> None:
        if self.drafts:
            self.conn.execute(insert(t.invoices), list(self.drafts.values()))
            self.drafts = {}
        if self.lines:
            self.conn.execute(insert(t.invoice_lines), self.lines)
            self.lines = []
        if self.issued_accounts:
            accounts, self.issued_accounts = list(self.issued_accounts), {}
            with_credit: set[str] = set()
            for offset in range(0, len(accounts), 500):
                chunk = accounts[offset:offset + 500]
                with_credit |= {str(r[0]) for r in self.conn.execute(
                    select(t.account_credit.c.account_id).distinct().where(t.account_credit.c.account_id.in_(chunk)))}
            for account in accounts:
                if account in with_credit:
                    self._allocate(account)


class InvoiceModel(ReadModel):
    name = "invoices"
    tables = (t.invoices, t.invoice_lines, t.invoice_allocations, t.account_credit, t.credit_notes)
    batch_class = _InvoiceBatch
