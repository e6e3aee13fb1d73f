"""Invoice PDF (reportlab): seller and customer, lines, tax summary, totals, the period's daily
usage as a bar chart, and how to pay. Rendered from the issued Invoice aggregate, so the PDF of
a number is the same every time it is asked for."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from domain.calendar import zone
from domain.money import minor_unit

INK = colors.HexColor("#1f2937")
ACCENT = colors.HexColor("#0f4c81")
RULE = colors.HexColor("#d1d5db")
SHADE = colors.HexColor("#f3f4f6")


@dataclass(frozen=True)
class Seller:
    name: str
    address: str = ""
    tax_id: str = ""
    payment_instructions: str = ""


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["Normal"], fontName="Helvetica", fontSize=9, leading=12, textColor=INK)
    return {
        "body": body,
        "small": ParagraphStyle("small", parent=body, fontSize=7.5, leading=10, textColor=colors.HexColor("#4b5563")),
        "right": ParagraphStyle("right", parent=body, alignment=TA_RIGHT),
        "title": ParagraphStyle("title", parent=body, fontName="Helvetica-Bold", fontSize=20, leading=24,
                                textColor=ACCENT, alignment=TA_RIGHT),
        "seller": ParagraphStyle("seller", parent=body, fontName="Helvetica-Bold", fontSize=13, leading=16),
        "heading": ParagraphStyle("heading", parent=body, fontName="Helvetica-Bold", fontSize=10, leading=14,
                                  textColor=ACCENT, spaceBefore=6, spaceAfter=3),
    }


def money(amount: Any, currency: str) -> str:
    """An amount with thousands separators, at least the currency's precision."""
    value = Decimal(str(amount))
    if currency and value == value.quantize(minor_unit(currency)):
        value = value.quantize(minor_unit(currency))
    return f"{value:,f} {currency}".strip()


def amount(value: Any, currency: str) -> str:
    """``money`` without the currency's code: a table cell under a header that names it (a
    unit price of 0 reads 0.00, like the others, not 0)."""
    return money(value, currency).removesuffix(currency).strip()


def _date(epoch: int | None, timezone: str = "UTC") -> str:
    return "" if epoch is None else datetime.fromtimestamp(epoch, zone(timezone)).strftime("%d %b %Y")


def _percent(rate: Any) -> str:
    return f"{(Decimal(str(rate)) * 100).normalize():f} %"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def usage_chart(daily: Sequence[tuple[int, int]], width: float, timezone: str) -> Drawing:
    """Daily usage (GB) over the period as bars."""
    drawing = Drawing(width, 48 * mm)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 12 * mm, 9 * mm, width - 16 * mm, 34 * mm
    values = [round(b / 1e9, 3) for _, b in daily] or [0]
    chart.data = [values]
    chart.bars[0].fillColor = ACCENT
    chart.bars[0].strokeColor = None
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labels.fontSize = 6.5
    chart.valueAxis.labels.fontName = "Helvetica"
    chart.valueAxis.strokeColor = RULE
    chart.valueAxis.gridStrokeColor = RULE
    chart.valueAxis.visibleGrid = True
    labels = [datetime.fromtimestamp(d, zone(timezone)).strftime("%d") for d, _ in daily] or [""]
    chart.categoryAxis.categoryNames = [label if i % 2 == 0 else "" for i, label in enumerate(labels)]
    chart.categoryAxis.labels.fontSize = 6.5
    chart.categoryAxis.labels.fontName = "Helvetica"
    chart.categoryAxis.strokeColor = RULE
    chart.barSpacing = 0.5
    drawing.add(chart)
    drawing.add(String(0, 45 * mm, "GB per day", fontName="Helvetica", fontSize=7, fillColor=INK))
    return drawing


def render_invoice(doc: dict[str, Any], seller: Seller, daily_usage: Sequence[tuple[int, int]] = ()) -> bytes:
    """The PDF of an issued invoice. ``doc`` carries the Invoice aggregate's fields."""
    s = _styles()
    currency = doc["currency"]
    customer = doc.get("customer", {})
    timezone = str(customer.get("timezone", "UTC"))
    buffer = io.BytesIO()
    page = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
                             bottomMargin=18 * mm, title=f"Invoice {doc['number']}", author=seller.name)
    width = A4[0] - 36 * mm
    story: list[Any] = []

    seller_lines = [f"<b>{_escape(seller.name)}</b>"] + [_escape(x) for x in seller.address.splitlines() if x]
    if seller.tax_id:
        seller_lines.append(f"Tax ID: {_escape(seller.tax_id)}")
    head = Table([[Paragraph("<br/>".join(seller_lines), s["body"]), Paragraph("INVOICE", s["title"])]],
                 colWidths=[width * 0.6, width * 0.4])
    head.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                              ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    story += [head, Spacer(1, 8 * mm)]

    bill_to = [f"<b>{_escape(str(customer.get('name', '')))}</b>",
               f"Account {doc['account_id']}",
               f"Usernames: {_escape(', '.join(customer.get('usernames', [])))}",
               f"Plan: {_escape(str(customer.get('plan', '')))} ({customer.get('payment_model', 'postpaid')})"]
    if customer.get("tax_zone"):
        bill_to.append(f"Tax zone: {_escape(str(customer['tax_zone']))}")
    facts = [["Invoice number", doc["number"]], ["Issue date", _date(doc["issued_at"], timezone)],
             ["Due date", _date(doc["due_at"], timezone)],
             ["Billing period", f"{_date(doc['period_start'], timezone)} - {_date(doc['period_end'] - 1, timezone)}"]]
    facts_table = Table([[Paragraph(k, s["small"]), Paragraph(f"<b>{v}</b>", s["right"])] for k, v in facts],
                        colWidths=[28 * mm, 52 * mm])
    facts_table.setStyle(TableStyle([("LINEBELOW", (0, 0), (-1, -2), 0.3, RULE),
                                     ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]))
    parties = Table([[Paragraph("BILL TO", s["small"]), ""],
                     [Paragraph("<br/>".join(bill_to), s["body"]), facts_table]],
                    colWidths=[width - 82 * mm, 82 * mm])
    parties.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                 ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    story += [parties, Spacer(1, 7 * mm)]

    header = ["Description", "Qty", "Unit price", "Net", "Tax", "Total"]
    rows: list[list[Any]] = [header]
    for line in doc["lines"]:
        quantity = Decimal(str(line["quantity"]))
        qty = f"{quantity.normalize():f} {line['unit']}".strip() if line["unit"] != "%" else ""
        unit_price = amount(line["unit_price"], currency) if line["kind"] != "discount" or line["unit"] != "%" else ""
        rows.append([Paragraph(_escape(line["description"]), s["body"]), qty, unit_price,
                     amount(line["net"], currency), _percent(line["tax_rate"]), amount(line["gross"], currency)])
    lines_table = Table(rows, colWidths=[width - 112 * mm, 22 * mm, 20 * mm, 24 * mm, 14 * mm, 32 * mm], repeatRows=1)
    lines_table.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8), ("FONT", (0, 1), (-1, -1), "Helvetica", 8.5),
        ("TEXTCOLOR", (0, 0), (-1, 0), colors.white), ("BACKGROUND", (0, 0), (-1, 0), ACCENT),
        ("ALIGN", (1, 0), (-1, -1), "RIGHT"), ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, SHADE]),
        ("LINEBELOW", (0, -1), (-1, -1), 0.5, RULE),
        ("TOPPADDING", (0, 0), (-1, -1), 3), ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
    ]))
    story += [lines_table, Spacer(1, 5 * mm)]

    tax_rows: list[list[Any]] = [["Tax rate", "Net", "Tax"]]
    for entry in doc["tax_summary"]:
        tax_rows.append([_percent(entry["rate"]), money(entry["net"], currency),
                         money(entry["tax"], currency)])
    tax_table = Table(tax_rows, colWidths=[22 * mm, 30 * mm, 26 * mm])
    tax_table.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8), ("FONT", (0, 1), (-1, -1), "Helvetica", 8.5),
        ("ALIGN", (1, 0), (-1, -1), "RIGHT"), ("LINEBELOW", (0, 0), (-1, 0), 0.5, INK)]))
    totals = doc["totals"]
    carried = doc.get("carried", {})
    total_rows = [["Subtotal (net)", money(totals["net"], currency)], ["Tax", money(totals["tax"], currency)],
                  ["Invoice total", money(totals["gross"], currency)],
                  ["Previous balance", money(carried.get("previous_balance", "0"), currency)],
                  ["Payments received", money(-Decimal(carried.get("payments", "0")), currency)],
                  ["Amount due", money(carried.get("amount_due", totals["gross"]), currency)]]
    totals_table = Table(total_rows, colWidths=[38 * mm, 36 * mm])
    totals_table.setStyle(TableStyle([
        ("FONT", (0, 0), (-1, -1), "Helvetica", 9), ("ALIGN", (1, 0), (1, -1), "RIGHT"),
        ("FONT", (0, 2), (-1, 2), "Helvetica-Bold", 9), ("LINEABOVE", (0, 2), (-1, 2), 0.5, INK),
        ("FONT", (0, -1), (-1, -1), "Helvetica-Bold", 11), ("TEXTCOLOR", (0, -1), (-1, -1), colors.white),
        ("BACKGROUND", (0, -1), (-1, -1), ACCENT), ("TOPPADDING", (0, -1), (-1, -1), 5),
        ("BOTTOMPADDING", (0, -1), (-1, -1), 5)]))
    summary = Table([[[Paragraph("Tax summary", s["heading"]), tax_table], totals_table]],
                    colWidths=[width - 76 * mm, 76 * mm])
    summary.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                 ("RIGHTPADDING", (0, 0), (-1, -1), 0)]))
    story += [summary, Spacer(1, 6 * mm)]

    usage_gb = Decimal(totals.get("usage_bytes", "0")) / Decimal(10**9)
    chart_block = [Paragraph(f"Data usage this period: {usage_gb:,.2f} GB", s["heading"]),
                   usage_chart(daily_usage, width, timezone)]
    story.append(KeepTogether(chart_block))
    story += [Paragraph("How to pay", s["heading"]),
              Paragraph(_escape(seller.payment_instructions or "").replace("\n", "<br/>")
                        + f"<br/>Reference: <b>{doc['number']}</b> - due by <b>{_date(doc['due_at'], timezone)}</b>.",
                        s["body"])]

    def footer(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7)
        canvas.setFillColor(colors.HexColor("#6b7280"))
        text = f"{seller.name} - Invoice {doc['number']} - page {document.page}"
        canvas.drawCentredString(A4[0] / 2, 10 * mm, text)
        canvas.restoreState()

    page.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


def invoice_document(invoice: Any) -> dict[str, Any]:
    """The fields of an Invoice aggregate that the PDF shows."""
    return {"number": invoice.number, "account_id": str(invoice.account_id), "currency": invoice.currency,
            "customer": invoice.customer, "issued_at": invoice.issued_at, "due_at": invoice.due_at,
            "period_start": invoice.period_start, "period_end": invoice.period_end, "lines": invoice.lines,
            "totals": invoice.totals, "tax_summary": invoice.tax_summary, "carried": invoice.carried,
            "status": invoice.status}


def daily_usage(rows: Sequence[dict[str, Any]], start: int, end: int) -> list[tuple[int, int]]:
    """Day buckets (from the usage read model) over [start, end), zero-filled."""
    by_day = {int(r["bucket_start"]): int(r["upload_bytes"]) + int(r["download_bytes"]) for r in rows}
    first = start - start % 86_400
    return [(day, by_day.get(day, 0)) for day in range(first, end, 86_400)]


__all__ = ["Seller", "daily_usage", "invoice_document", "render_invoice"]
