"""An invoice's lines for one account and one billing period, and the postings that issue it.
Pure: the caller passes the plan versions in force, the period's usage totals, the add-ons and
discounts; nothing here reads a clock or a store.

Rounding happens once per line (``rating.billing``). Usage was posted exactly when it was
rated, so its line posts only the rounding difference; add-on packs were charged at purchase,
so their lines post nothing but their tax. Recurring fees and discounts are posted here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

from domain.calendar import days_in, zone
from domain.money import ROUNDING, minor_unit
from domain.plans import BYTES_PER_GB, PlanTerms

from .billing import prorate, tax_on

RECURRING_REVENUE = "revenue:recurring"
USAGE_REVENUE = "revenue:usage"
ADDON_REVENUE = "revenue:addons"
DISCOUNTS = "discounts"
ROUNDING_ACCOUNT = "rounding"
TAX_PAYABLE = "tax:payable"
KIND_TITLES = {"included": "included", "pack": "from add-on packs", "overage": "overage", "band": "band price"}
_ZERO = Decimal(0)
_PER_GB = Decimal(BYTES_PER_GB)
_MILLI = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class PlanSpan:
    """A stretch [start, end) of the period under one plan version."""

    start: int
    end: int
    plan_id: str
    plan_name: str
    terms: PlanTerms


class InvoiceLine(NamedTuple):
    """One line of an invoice. A tuple (immutable, and made for every line of every invoice
    of a run: a frozen dataclass's field-by-field ``__init__`` was a tenth of drafting one)."""

    kind: str  # recurring | usage | addon | discount
    description: str
    quantity: Decimal
    unit: str  # days | GB | pack | ""
    unit_price: Decimal
    amount: Decimal  # as priced, rounded once: net (tax exclusive) or gross (tax inclusive)
    net: Decimal
    tax: Decimal
    gross: Decimal
    tax_rate: Decimal
    inclusive: bool
    revenue_account: str
    posted: Decimal = _ZERO  # already in the journal before the invoice (exact)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "description": self.description, "quantity": str(self.quantity),
                "unit": self.unit, "unit_price": str(self.unit_price), "amount": str(self.amount),
                "net": str(self.net), "tax": str(self.tax), "gross": str(self.gross),
                "tax_rate": str(self.tax_rate), "inclusive": self.inclusive,
                "revenue_account": self.revenue_account, "posted": str(self.posted)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InvoiceLine:
        return cls(kind=str(data["kind"]), description=str(data["description"]),
                   quantity=Decimal(str(data["quantity"])), unit=str(data["unit"]),
                   unit_price=Decimal(str(data["unit_price"])), amount=Decimal(str(data["amount"])),
                   net=Decimal(str(data["net"])), tax=Decimal(str(data["tax"])), gross=Decimal(str(data["gross"])),
                   tax_rate=Decimal(str(data["tax_rate"])), inclusive=bool(data["inclusive"]),
                   revenue_account=str(data["revenue_account"]), posted=Decimal(str(data["posted"])))


@dataclass(frozen=True, slots=True)
class InvoiceDraft:
    currency: str
    lines: tuple[InvoiceLine, ...]
    usage_exact: Decimal  # the exact usage amount these lines invoice
    usage_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def net(self) -> Decimal:
        return self.sums()[0]

    @property
    def tax(self) -> Decimal:
        return self.sums()[1]

    @property
    def gross(self) -> Decimal:
        return self.sums()[2]

    def sums(self) -> tuple[Decimal, Decimal, Decimal]:
        """Net, tax and gross of all lines, in one pass (added in line order, from 0)."""
        net = tax = gross = _ZERO
        for line in self.lines:
            net += line.net
            tax += line.tax
            gross += line.gross
        return net, tax, gross

    def totals(self) -> dict[str, str]:
        net, tax, gross = self.sums()
        return {"net": str(net), "tax": str(tax), "gross": str(gross),
                "usage_exact": str(self.usage_exact), "usage_bytes": str(self.usage_bytes)}

    def tax_summary(self) -> list[dict[str, str]]:
        """Net and tax per rate, as the tax summary of the document shows them."""
        rates: dict[Decimal, list[Decimal]] = {}
        for line in self.lines:
            totals = rates.setdefault(line.tax_rate, [Decimal(0), Decimal(0)])
            totals[0] += line.net
            totals[1] += line.tax
        return [{"rate": str(rate), "net": str(net), "tax": str(tax)} for rate, (net, tax) in sorted(rates.items())]


def _gb(bytes_: int) -> Decimal:
    return (Decimal(bytes_) / _PER_GB).quantize(_MILLI, rounding=ROUNDING)


def _day(epoch: int, timezone: str) -> str:
    return datetime.fromtimestamp(epoch, zone(timezone)).strftime("%Y-%m-%d")


def _line(kind: str, description: str, quantity: Decimal, unit: str, unit_price: Decimal, amount: Decimal,
          tax_rate: Decimal, currency: str, inclusive: bool, account: str, posted: Decimal = _ZERO,
          ) -> InvoiceLine:
    net, tax, gross = tax_on(amount, tax_rate, currency, inclusive=inclusive)
    return InvoiceLine(kind, description, quantity, unit, unit_price, gross if inclusive else net,
                       net, tax, gross, tax_rate, inclusive, account, posted)


@lru_cache(maxsize=1024)
def _usage_key(key: str) -> tuple[str, str, Decimal]:
    """A usage total's key "band|kind|price_per_gb" as (band, kind title, price per GB): a
    run prices the same few keys for every account."""
    band, kind, price_per_gb = key.split("|")
    return band, KIND_TITLES.get(kind, kind), Decimal(price_per_gb)


def recurring_lines(spans: Sequence[PlanSpan], period_start: int, period_end: int, timezone: str,
                    tax_rate: Decimal, currency: str) -> list[InvoiceLine]:
    """One line per plan version in force, its monthly fee prorated by local day."""
    total_days = days_in(period_start, period_end, timezone)
    lines = []
    for span in spans:
        days = days_in(span.start, span.end, timezone)
        if days <= 0:
            continue
        fee = prorate(span.terms.monthly_fee, days, total_days, currency)
        when = f"{_day(span.start, timezone)} to {_day(span.end - 1, timezone)}"
        text = f"{span.plan_name}: monthly fee, {when}"
        if days != total_days:
            text += f" ({days} of {total_days} days)"
        lines.append(_line("recurring", text, Decimal(days), "days",
                           span.terms.monthly_fee, fee, tax_rate, currency, span.terms.prices_include_tax,
                           RECURRING_REVENUE))
    return lines


def usage_lines(usage_totals: Mapping[str, Mapping[str, Any]], tax_rate: Decimal, currency: str,
                inclusive: bool) -> list[InvoiceLine]:
    """One line per band, kind and price: the exact rated amount rounded once."""
    lines = []
    for key in sorted(usage_totals):
        band, title, price_per_gb = _usage_key(key)
        total = usage_totals[key]
        exact_amount = Decimal(str(total["amount"]))
        lines.append(_line("usage", f"Data, {band} hours, {title}", _gb(int(total["bytes"])), "GB", price_per_gb,
                           exact_amount, tax_rate, currency, inclusive, USAGE_REVENUE, exact_amount))
    return lines


def late_usage_lines(late: Mapping[str, Mapping[str, Mapping[str, Any]]], tax_rate: Decimal, currency: str,
                     inclusive: bool) -> list[InvoiceLine]:
    """Usage of earlier periods rated after their invoice was issued (records that reached the
    ledger late: a BNG that buffered accounting during an outage). ``late`` maps a period label
    to usage totals by "band|kind|price_per_gb", like ``usage_lines``. Its charge was posted
    exactly when it was rated; the line invoices it (and its tax) on this document."""
    lines = []
    for label in sorted(late):
        for key in sorted(late[label]):
            band, kind, price_per_gb = key.split("|")
            total = late[label][key]
            exact_amount = Decimal(str(total["amount"]))
            text = f"Data used in {label}, received after its invoice: {band} hours, {KIND_TITLES.get(kind, kind)}"
            lines.append(_line("usage", text, _gb(int(total["bytes"])), "GB", Decimal(price_per_gb), exact_amount,
                               tax_rate, currency, inclusive, USAGE_REVENUE, posted=exact_amount))
    return lines


def unbilled_usage(current: Mapping[str, Mapping[str, Any]],
                   billed: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """What of a period's usage totals ``current`` no invoice has billed yet (``billed``: the
    totals each earlier document invoiced for that period), per key; keys with nothing left
    are left out."""
    left: dict[str, dict[str, Any]] = {}
    for key, total in current.items():
        amount = Decimal(str(total["amount"]))
        size = int(total["bytes"])
        for document in billed:
            done = document.get(key)
            if done:
                amount -= Decimal(str(done["amount"]))
                size -= int(done["bytes"])
        if amount > 0 or size > 0:
            left[key] = {"bytes": size, "amount": str(amount)}
    return left


def addon_lines(packs: Sequence[Mapping[str, Any]], period_start: int, period_end: int, tax_rate: Decimal,
                currency: str, inclusive: bool, timezone: str) -> list[InvoiceLine]:
    """Packs bought in the period (charged at purchase: only their tax is posted here)."""
    lines = []
    for pack in packs:
        if not period_start <= int(pack["valid_from"]) < period_end:
            continue
        price = Decimal(str(pack["price"]))
        bought = _day(int(pack["valid_from"]), timezone)
        text = f"Add-on: {pack['name']} ({_gb(int(pack['total_bytes']))} GB, bought {bought})"
        lines.append(_line("addon", text, Decimal(1), "pack", price, price, tax_rate, currency, inclusive,
                           ADDON_REVENUE, posted=price))
    return lines


def discount_lines(discounts: Sequence[Mapping[str, Any]], base: Decimal, period_start: int, period_end: int,
                   tax_rate: Decimal, currency: str, inclusive: bool) -> list[InvoiceLine]:
    """Discounts whose validity overlaps the period: a percentage of recurring fees and usage,
    or a fixed amount, never more than what is left of that base."""
    unit = minor_unit(currency)
    lines = []
    left = base
    for discount in discounts:
        if not (int(discount["valid_from"]) < period_end and int(discount["valid_until"]) > period_start):
            continue
        percent = Decimal(str(discount["percent"]))
        if percent:
            amount = (base * percent / 100).quantize(unit, rounding=ROUNDING)
            text, quantity, price = f"Discount: {discount['description']} ({percent.normalize():f} %)", percent, -amount
        else:
            amount = Decimal(str(discount["fixed_amount"]))
            text, quantity, price = f"Discount: {discount['description']}", Decimal(1), -amount
        amount = min(amount, left)
        if amount <= 0:
            continue
        left -= amount
        lines.append(_line("discount", text, quantity, "%" if percent else "", price, -amount, tax_rate,
                           currency, inclusive, DISCOUNTS))
    return lines


def draft_invoice(
    *, currency: str, period_start: int, period_end: int, timezone: str, spans: Sequence[PlanSpan],
    usage_totals: Mapping[str, Mapping[str, Any]], packs: Sequence[Mapping[str, Any]],
    discounts: Sequence[Mapping[str, Any]], tax_rate: Decimal,
    late_usage: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    recurring: Sequence[InvoiceLine] | None = None,
) -> InvoiceDraft:
    """All lines of one account's invoice for [period_start, period_end), and ``late_usage``
    of earlier periods (see ``late_usage_lines``; not part of the discount base).
    ``recurring``: what ``recurring_lines`` gives for these spans, when the caller has it
    (a billing run computes it once for the many accounts with the same plan and period)."""
    inclusive = spans[-1].terms.prices_include_tax if spans else False
    lines = list(recurring) if recurring is not None else \
        recurring_lines(spans, period_start, period_end, timezone, tax_rate, currency)
    lines += usage_lines(usage_totals, tax_rate, currency, inclusive)
    base = sum((line.amount for line in lines), Decimal(0))
    lines += addon_lines(packs, period_start, period_end, tax_rate, currency, inclusive, timezone)
    lines += discount_lines(discounts, base, period_start, period_end, tax_rate, currency, inclusive)
    lines += late_usage_lines(late_usage or {}, tax_rate, currency, inclusive)
    every = [*usage_totals.values(), *(t for totals in (late_usage or {}).values() for t in totals.values())]
    usage_exact = sum((Decimal(str(t["amount"])) for t in every), Decimal(0))
    usage_bytes = sum(int(t["bytes"]) for t in every)
    return InvoiceDraft(currency, tuple(lines), usage_exact, usage_bytes)


def issue_postings(lines: Sequence[InvoiceLine], subscriber: str, currency: str) -> list[tuple[str, Decimal, str]]:
    """(ledger account, amount, currency) of issuing: what was not posted before (fees,
    discounts, usage rounding differences) and the tax. Debit positive; sums to zero."""
    postings: list[tuple[str, Decimal, str]] = []
    for line in lines:
        unposted = line.amount - line.posted
        if unposted:
            against = ROUNDING_ACCOUNT if line.kind == "usage" else line.revenue_account
            postings += [(subscriber, unposted, currency), (against, -unposted, currency)]
        if line.tax:
            if line.inclusive:  # the tax was inside the revenue: reclassify it
                postings += [(line.revenue_account, line.tax, currency), (TAX_PAYABLE, -line.tax, currency)]
            else:
                postings += [(subscriber, line.tax, currency), (TAX_PAYABLE, -line.tax, currency)]
    return postings


def plan_spans(
    plan_history: Sequence[tuple[int, str, str, Sequence[tuple[int, PlanTerms]]]], start: int, end: int,
) -> list[PlanSpan]:
    """The plan versions in force over [start, end). ``plan_history`` lists (effective_from,
    plan id, plan name, [(version effective_from, terms)]) of the account's plans in order;
    the account's activation and termination are applied by narrowing [start, end)."""
    if start >= end or not plan_history:
        return []
    cuts = {start, end}
    for effective_from, _, _, versions in plan_history:
        cuts.add(effective_from)
        cuts.update(v for v, _ in versions)
    points = sorted(c for c in cuts if start <= c <= end)
    spans: list[PlanSpan] = []
    for lo, hi in zip(points, points[1:], strict=False):
        chosen = plan_history[0]
        for entry in plan_history:
            if entry[0] <= lo:
                chosen = entry
        _, plan_id, name, versions = chosen
        terms = versions[0][1]
        for effective_from, version_terms in versions:
            if effective_from <= lo:
                terms = version_terms
        if spans and spans[-1].plan_id == plan_id and spans[-1].terms == terms:
            spans[-1] = PlanSpan(spans[-1].start, hi, plan_id, name, terms)
        else:
            spans.append(PlanSpan(lo, hi, plan_id, name, terms))
    return spans
