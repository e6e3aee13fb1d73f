"""Finance exports (pandas): the invoice register, invoice lines, the GL journal and usage per
account, as CSV, XLSX or Parquet. Rows are read and written in chunks, so an export of millions
of journal lines never sits in memory whole. Amounts stay exact (Decimal; decimal128 in Parquet)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy import Engine, Select, func, select

from domain.calendar import period_for_label
from projections import tables as t
from projections.finance import chunks

if TYPE_CHECKING:  # pandas and pyarrow are imported by the export itself: they are most of the
    # import time of every `wispgate` command and of `serve`'s start (-X importtime), and only
    # an export needs them.
    import pandas as pd
    import pyarrow as pa

KINDS = ("invoices", "invoice-lines", "journal", "usage")
FORMATS = ("csv", "xlsx", "parquet")
MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet",
               "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
Progress = Callable[[int], None]


def _iso(epoch: int | None) -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _query(kind: str, period: str | None) -> tuple[Select[Any], Callable[[dict[str, Any]], dict[str, Any]]]:
    inv, lines = t.invoices, t.invoice_lines
    if kind == "invoices":
        query = select(inv).where(inv.c.number != "").order_by(inv.c.issued_at, inv.c.number)
        if period:
            query = query.where(inv.c.period == period)
        return query, lambda r: {
            "number": r["number"], "issue_date": _iso(r["issued_at"])[:10], "due_date": _iso(r["due_at"])[:10],
            "period": r["period"], "account_id": r["account_id"], "customer": r["customer_name"],
            "status": r["status"], "currency": r["currency"], "net": Decimal(r["net"]), "tax": Decimal(r["tax"]),
            "total": Decimal(r["total"]), "paid": Decimal(r["paid"]), "credited": Decimal(r["credited"]),
            "amount_due": Decimal(r["amount_due"])}
    if kind == "invoice-lines":
        query = (select(inv.c.number, inv.c.period, inv.c.account_id, inv.c.currency, lines)
                 .join(lines, lines.c.invoice_id == inv.c.id).where(inv.c.number != "")
                 .order_by(inv.c.issued_at, inv.c.number, lines.c.line))
        if period:
            query = query.where(inv.c.period == period)
        return query, lambda r: {
            "number": r["number"], "line": r["line"], "period": r["period"], "account_id": r["account_id"],
            "kind": r["kind"], "description": r["description"], "quantity": Decimal(r["quantity"]),
            "unit": r["unit"], "unit_price": Decimal(r["unit_price"]), "net": Decimal(r["net"]),
            "tax_rate": Decimal(r["tax_rate"]), "tax": Decimal(r["tax"]), "gross": Decimal(r["gross"]),
            "currency": r["currency"]}
    if kind == "journal":
        j = t.journal
        query = select(j).order_by(j.c.position, j.c.line)
        if period:
            start, end = period_for_label(period)
            query = query.where(j.c.event_time >= start, j.c.event_time < end)

        def gl(r: dict[str, Any]) -> dict[str, Any]:
            amount = Decimal(r["amount"])
            return {"date": _iso(r["event_time"]), "account": r["ledger_account"],
                    "debit": amount if amount > 0 else Decimal(0), "credit": -amount if amount < 0 else Decimal(0),
                    "currency": r["currency"], "reference": r["transaction_ref"], "position": r["position"]}
        return query, gl
    if kind == "usage":
        u, acc = t.usage, t.accounts
        query = (select(u.c.account_id, acc.c.name, u.c.band, func.sum(u.c.upload_bytes).label("upload_bytes"),
                        func.sum(u.c.download_bytes).label("download_bytes"))
                 .join(acc, acc.c.id == u.c.account_id, isouter=True).where(u.c.granularity == "day")
                 .group_by(u.c.account_id, acc.c.name, u.c.band).order_by(u.c.account_id, u.c.band))
        if period:
            start, end = period_for_label(period)
            query = query.where(u.c.bucket_start >= start, u.c.bucket_start < end)
        return query, lambda r: {
            "account_id": r["account_id"], "customer": r["name"] or "", "band": r["band"],
            "upload_bytes": int(r["upload_bytes"]), "download_bytes": int(r["download_bytes"]),
            "total_gb": (Decimal(int(r["upload_bytes"]) + int(r["download_bytes"])) / Decimal(10**9))
            .quantize(Decimal("0.000001"))}
    raise ValueError(f"unknown export {kind!r}; one of {', '.join(KINDS)}")


def frames(engine: Engine, kind: str, period: str | None = None, chunk_size: int = 20_000) -> Iterator[pd.DataFrame]:
    """The export as DataFrames of at most ``chunk_size`` rows."""
    import pandas as pd

    query, shape = _query(kind, period)
    for rows in chunks(engine, query, chunk_size):
        yield pd.DataFrame([shape(r) for r in rows])


def _arrow(frame: pd.DataFrame) -> pa.Table:
    import pyarrow as pa

    fields = []
    for name in frame.columns:
        sample = frame[name].iloc[0] if len(frame) else None
        fields.append(pa.field(name, pa.decimal128(38, 12) if isinstance(sample, Decimal) else
                               pa.Schema.from_pandas(frame[[name]], preserve_index=False).field(name).type))
    return pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)


def write_export(engine: Engine, kind: str, fmt: str, out: Path | BinaryIO, *, period: str | None = None,
                 chunk_size: int = 20_000, progress: Progress | None = None) -> int:
    """Write the export to ``out`` (a path or a binary file); returns the rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    written = 0
    if fmt == "csv":
        for frame in frames(engine, kind, period, chunk_size):
            text = frame.to_csv(index=False, header=written == 0).encode()
            if isinstance(out, Path):
                with out.open("ab" if written else "wb") as handle:
                    handle.write(text)
            else:
                out.write(text)
            written += len(frame)
            if progress:
                progress(written)
        if written == 0:
            header = ",".join(_empty_columns(kind)) + "\n"
            out.write_bytes(header.encode()) if isinstance(out, Path) else out.write(header.encode())
    elif fmt == "parquet":
        writer: pq.ParquetWriter | None = None
        try:
            for frame in frames(engine, kind, period, chunk_size):
                table = _arrow(frame)
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema)
                writer.write_table(table.cast(writer.schema))
                written += len(frame)
                if progress:
                    progress(written)
            if writer is None:
                pq.write_table(pa.Table.from_pandas(pd.DataFrame(columns=_empty_columns(kind))), out)
        finally:
            if writer is not None:
                writer.close()
    else:
        with pd.ExcelWriter(out, engine="openpyxl") as excel:
            for frame in frames(engine, kind, period, chunk_size):
                frame.to_excel(excel, sheet_name=kind, index=False, header=written == 0,
                               startrow=0 if written == 0 else written + 1)
                written += len(frame)
                if progress:
                    progress(written)
            if written == 0:
                pd.DataFrame(columns=_empty_columns(kind)).to_excel(excel, sheet_name=kind, index=False)
    return written


def _empty_columns(kind: str) -> list[str]:
    sample = {"invoices": ["number", "issue_date", "due_date", "period", "account_id", "customer", "status",
                           "currency", "net", "tax", "total", "paid", "credited", "amount_due"],
              "invoice-lines": ["number", "line", "period", "account_id", "kind", "description", "quantity", "unit",
                                "unit_price", "net", "tax_rate", "tax", "gross", "currency"],
              "journal": ["date", "account", "debit", "credit", "currency", "reference", "position"],
              "usage": ["account_id", "customer", "band", "upload_bytes", "download_bytes", "total_gb"]}
    return sample[kind]
