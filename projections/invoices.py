"""Read model of invoices: documents, lines, credit notes and payment allocation.

Payments are allocated to an account's open invoices oldest first (issue date, then number),
and a payment that finds no open invoice waits as account credit for the next one. The
allocation is a pure function of the ledger's events, so a rebuild reproduces it exactly.
Overdue is not stored: it depends on the reader's clock (``due_at`` passed, still open).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any

from sqlalchemy import Column, Table, bindparam, delete, select, update

from domain.money import minor_unit

from . import tables as t
from .base import ModelBatch, ReadModel, chunks, dec, fmt


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
    """A unit of work: the invoices, credit and allocations of the accounts a batch touches
    are loaded in a few queries (``prepare``), changed in memory by the handlers, and written
    at ``flush`` with one executemany per table and kind of change. Rows carry ``_new`` (not
    stored yet) and ``_dirty`` (stored, changed)."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self._reset()

    def _reset(self) -> None:
        self.invoices: dict[str, dict[str, Any]] = {}
        self.account_invoices: dict[str, set[str]] = {}  # loaded and new invoices, by account
        self.credits: dict[str, dict[str, dict[str, Any]]] = {}  # by account, then payment_id
        self.allocations: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted_credits: list[dict[str, str]] = []
        self.lines: list[tuple[Any, ...]] = []  # new rows, in the table's column order
        self.notes: list[dict[str, Any]] = []

    def prepare(self, events: list[Any]) -> None:
        """Load the open invoices, waiting credit and their allocations of every account the
        batch pays, credits or issues to, and the invoices it issues or credits.

        An account the batch only issues new invoices to needs its open invoices only when
        credit is waiting on it (issuing spends waiting credit; with none, ``_allocate`` reads
        nothing): a billing run's batch is nearly all such accounts, and loading every one's
        previous open invoice was most of this model's share of projecting a run."""
        accounts: set[str] = set()  # open invoices and credit loaded
        issued_to: set[str] = set()  # credit loaded; open invoices only if some is waiting
        invoice_ids: set[str] = set()
        drafted: set[str] = set()
        for e in events:
            name = type(e).__qualname__
            if name == "Invoice.Drafted":
                drafted.add(str(e.originator_id))
                issued_to.add(str(e.account_id))
            elif name == "Invoice.Issued":
                invoice_ids.add(str(e.originator_id))
            elif name == "Payment.Received":
                accounts.add(str(e.account_id))
            elif name == "CreditNote.Issued":
                accounts.add(str(e.account_id))
                invoice_ids.add(str(e.invoice_id))
        inv, credit, allocations = t.invoices, t.account_credit, t.invoice_allocations
        for ids in chunks(sorted(invoice_ids - drafted)):
            for row in self.conn.execute(select(inv).where(inv.c.id.in_(ids))).mappings():
                self._loaded(dict(row))
                accounts.add(row["account_id"])
        for ids in chunks(sorted(accounts | issued_to)):
            for row in self.conn.execute(select(credit).where(credit.c.account_id.in_(ids))).mappings():
                self.credits.setdefault(row["account_id"], {})[row["payment_id"]] = dict(row) | {
                    "_new": False, "_dirty": False}
        accounts |= {a for a in issued_to if self.credits.get(a)}
        for ids in chunks(sorted(accounts)):
            for row in self.conn.execute(select(inv).where(inv.c.account_id.in_(ids), inv.c.status.in_(OPEN)))\
                    .mappings():
                if row["id"] not in self.invoices:
                    self._loaded(dict(row))
        for ids in chunks(sorted(self.invoices)):
            for row in self.conn.execute(select(allocations).where(allocations.c.invoice_id.in_(ids))).mappings():
                self.allocations[(row["invoice_id"], row["source"])] = dict(row) | {"_new": False, "_dirty": False}

    def _loaded(self, row: dict[str, Any]) -> None:
        row |= {"_new": False, "_dirty": False}
        self.invoices[row["id"]] = row
        self.account_invoices.setdefault(row["account_id"], set()).add(row["id"])

    def on_Invoice_Drafted(self, position: int, e: Any) -> None:
        invoice, account = str(e.originator_id), str(e.account_id)
        self.invoices[invoice] = {
            "id": invoice, "number": "", "series": "", "account_id": account,
            "customer_name": str(e.customer.get("name", "")), "period": e.period, "period_start": e.period_start,
            "period_end": e.period_end, "status": "draft", "currency": e.currency, "net": e.totals["net"],
            "tax": e.totals["tax"], "total": e.totals["gross"], "paid": "0", "credited": "0",
            "previous_balance": e.carried.get("previous_balance", "0"),
            "payments_carried": e.carried.get("payments", "0"), "amount_due": e.carried.get("amount_due", "0"),
            "issued_at": None, "due_at": None, "position": position, "_new": True, "_dirty": False}
        self.account_invoices.setdefault(account, set()).add(invoice)
        # Tuples in the table's column order, handed to the bulk insert as they are (dicts were
        # turned into tuples there: a tenth of projecting a billing run's invoices).
        self.lines += [(invoice, n, *_LINE_VALUES(line)) for n, line in enumerate(e.lines)]

    def on_Invoice_Issued(self, position: int, e: Any) -> None:
        row = self.invoices.get(str(e.originator_id))
        if row is None:
            return
        self._change(row, number=e.number, series=e.series, status="issued", issued_at=e.issued_at,
                     due_at=e.due_at, position=position)
        # Credit waiting on the account (a payment received before the invoice) is spent on it.
        self._allocate(row["account_id"])

    def on_CreditNote_Issued(self, position: int, e: Any) -> None:
        self.notes.append(dict(
            id=str(e.originator_id), number=e.number, invoice_id=str(e.invoice_id), invoice_number=e.invoice_number,
            account_id=str(e.account_id), amount=fmt(e.amount), net=fmt(e.net), tax=fmt(e.tax), currency=e.currency,
            reason=e.reason, issued_at=e.issued_at))
        row = self.invoices.get(str(e.invoice_id))
        if row is None:
            return
        credited = dec(row["credited"]) + e.amount
        total, paid = dec(row["total"]), dec(row["paid"])
        self._allocation(row["id"], f"credit-note:{e.originator_id}", e.amount, e.issued_at, e.currency)
        excess = paid + credited - total
        if excess > 0:  # paid, then credited: the overpayment goes back to the account's credit
            paid -= excess
            self._credit(row["account_id"], f"released:{e.originator_id}", fmt(excess), e.issued_at)
        self._change(row, credited=_amount(credited, e.currency), paid=_amount(paid, e.currency),
                     status=payment_status(total, paid, credited), position=position)
        if excess > 0:
            self._allocate(row["account_id"])

    def on_Payment_Received(self, position: int, e: Any) -> None:
        account = str(e.account_id)
        self._credit(account, f"payment:{e.originator_id}", fmt(e.amount), e.received_at)
        self._allocate(account)

    @staticmethod
    def _change(row: dict[str, Any], **values: Any) -> None:
        row.update(values)
        if not row["_new"]:
            row["_dirty"] = True

    def _credit(self, account_id: str, payment_id: str, amount: str, at: int) -> None:
        credits = self.credits.setdefault(account_id, {})
        if payment_id in credits:
            raise ValueError(f"account credit {payment_id} of {account_id} recorded twice")
        credits[payment_id] = {"account_id": account_id, "payment_id": payment_id, "amount": amount, "at": at,
                               "_new": True, "_dirty": False}

    def _allocate(self, account_id: str) -> None:
        """Spend the account's credit on its open invoices, oldest first."""
        waiting = self.credits.get(account_id)
        if not waiting:
            return
        credits = sorted(waiting.values(), key=lambda c: (c["at"], c["payment_id"]))
        open_invoices = sorted((self.invoices[i] for i in self.account_invoices.get(account_id, ())
                                if self.invoices[i]["status"] in OPEN),
                               key=lambda r: (r["issued_at"], r["number"]))
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
                self._change(source, amount=fmt(available - take))
                self._allocation(row["id"], source["payment_id"], take, source["at"], row["currency"])
            self._change(row, paid=_amount(paid, row["currency"]), status=payment_status(total, paid, credited))
        for source in credits:
            if dec(source["amount"]) <= 0:
                del waiting[source["payment_id"]]
                if not source["_new"]:
                    self.deleted_credits.append({"k_account": account_id, "k_payment": source["payment_id"]})

    def _allocation(self, invoice_id: str, source: str, amount: Decimal, at: int, currency: str) -> None:
        found = self.allocations.get((invoice_id, source))
        if found is None:
            self.allocations[(invoice_id, source)] = {"invoice_id": invoice_id, "source": source,
                                                      "amount": _amount(amount, currency), "at": at,
                                                      "_new": True, "_dirty": False}
        else:
            self._change(found, amount=_amount(dec(found["amount"]) + amount, currency))

    def insert_rows(self, table: Table, rows: Sequence[dict[str, Any] | tuple[Any, ...]]) -> None:
        """Insert new rows in bulk (the DBAPI's executemany on SQLite, COPY on PostgreSQL), as
        the rebuild does: SQLAlchemy's executemany compiled parameters row by row, a fifth of
        projecting a billing run's invoices and their lines."""
        from .rebuild import bulk_insert  # rebuild.py imports this module

        bulk_insert(self.conn, table, rows)

    def flush(self) -> None:
        inv, credit, allocations = t.invoices, t.account_credit, t.invoice_allocations
        self._write(inv, self.invoices.values(), (inv.c.id,))
        if self.lines:
            self.insert_rows(t.invoice_lines, self.lines)
        if self.notes:
            self.insert_rows(t.credit_notes, self.notes)
        self._write(allocations, self.allocations.values(), (allocations.c.invoice_id, allocations.c.source))
        if self.deleted_credits:
            self.conn.execute(delete(credit).where(credit.c.account_id == bindparam("k_account"),
                                                   credit.c.payment_id == bindparam("k_payment")),
                              self.deleted_credits)
        self._write(credit, (c for by_account in self.credits.values() for c in by_account.values()),
                    (credit.c.account_id, credit.c.payment_id))
        self._reset()

    def _write(self, table: Table, rows: Iterable[dict[str, Any]], keys: tuple[Column[Any], ...]) -> None:
        """Insert the new rows and update the changed ones of ``table`` (one executemany each)."""
        new, dirty = [], []
        key_names = {key.name for key in keys}
        values = _column_values(table)
        for row in rows:
            if row["_new"]:
                new.append(values(row))
            elif row["_dirty"]:
                dirty.append({("k_" + k if k in key_names else k): v for k, v in row.items()
                              if not k.startswith("_")})
        if new:
            self.insert_rows(table, new)
        _update(self.conn, table, dirty, keys)


# An invoice line's values after (invoice_id, line), in the lines table's column order.
_LINE_VALUES = itemgetter(*(c.name for c in t.invoice_lines.columns if c.name not in ("invoice_id", "line")))
_COLUMN_VALUES: dict[str, Any] = {}


def _column_values(table: Table) -> Any:
    """A row dict's values as a tuple in ``table``'s column order (what the bulk insert takes)."""
    getter = _COLUMN_VALUES.get(table.name)
    if getter is None:
        names = [c.name for c in table.columns]
        one = itemgetter(*names)
        getter = _COLUMN_VALUES[table.name] = one if len(names) > 1 else lambda row: (one(row),)
    return getter


def _update(conn: Any, table: Table, dirty: list[dict[str, Any]], keys: tuple[Column[Any], ...]) -> None:
    """Update stored rows that changed (one executemany)."""
    if dirty:
        columns = [c.name for c in table.columns if c not in keys]
        statement = (update(table).where(*(key == bindparam("k_" + key.name) for key in keys))
                     .values({name: bindparam(name) for name in columns}))
        conn.execute(statement, dirty)


class InvoiceModel(ReadModel):
    name = "invoices"
    tables = (t.invoices, t.invoice_lines, t.invoice_allocations, t.account_credit, t.credit_notes)
    batch_class = _InvoiceBatch
