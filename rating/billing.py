"""Document-level pricing: proration of recurring fees and tax. Here rounding happens, once
per line, with the currency's minor unit and the ledger's rounding policy."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from domain.money import ROUNDING, minor_unit


def prorate(monthly_fee: Decimal, days_used: int, days_in_period: int, currency: str) -> Decimal:
    """The fee for ``days_used`` of a ``days_in_period``-day period, rounded once. A full
    period is exactly the monthly fee."""
    if not 0 <= days_used <= days_in_period or days_in_period <= 0:
        raise ValueError("days used must be within the period")
    if days_used == days_in_period:
        return monthly_fee.quantize(minor_unit(currency), rounding=ROUNDING)
    return (monthly_fee * days_used / days_in_period).quantize(minor_unit(currency), rounding=ROUNDING)


@dataclass(frozen=True, slots=True)
class Taxed:
    net: Decimal
    tax: Decimal
    gross: Decimal


def tax_on(amount: Decimal, rate: Decimal, currency: str, *, inclusive: bool) -> Taxed:
    """Tax of one line, rounded once to the minor unit. Exclusive: ``amount`` is net.
    Inclusive: ``amount`` is gross and the tax is carved out of it; net + tax = gross always."""
    if rate < 0:
        raise ValueError("tax rate cannot be negative")
    unit = minor_unit(currency)
    if inclusive:
        gross = amount.quantize(unit, rounding=ROUNDING)
        tax = (gross * rate / (1 + rate)).quantize(unit, rounding=ROUNDING)
        return Taxed(net=gross - tax, tax=tax, gross=gross)
    net = amount.quantize(unit, rounding=ROUNDING)
    tax = (net * rate).quantize(unit, rounding=ROUNDING)
    return Taxed(net=net, tax=tax, gross=net + tax)
