"""Document-level pricing: proration of recurring fees and tax. Here rounding happens, once
per line, with the currency's minor unit and the ledger's rounding policy."""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from domain.money import ROUNDING, minor_unit

_UNITS: dict[str, Decimal] = {}


def unit_of(currency: str) -> Decimal:
    """``minor_unit(currency)``, looked up once per currency (an invoice rounds each line)."""
    unit = _UNITS.get(currency)
    if unit is None:
        unit = _UNITS[currency] = minor_unit(currency)
    return unit


def prorate(monthly_fee: Decimal, days_used: int, days_in_period: int, currency: str) -> Decimal:
    """The fee for ``days_used`` of a ``days_in_period``-day period, rounded once. A full
    period is exactly the monthly fee."""
    if not 0 <= days_used <= days_in_period or days_in_period <= 0:
        raise ValueError("days used must be within the period")
    if days_used == days_in_period:
        return monthly_fee.quantize(unit_of(currency), rounding=ROUNDING)
    return (monthly_fee * days_used / days_in_period).quantize(unit_of(currency), rounding=ROUNDING)


class Taxed(NamedTuple):
    """One line's net, tax and gross (a tuple: an invoice makes one per line)."""

    net: Decimal
    tax: Decimal
    gross: Decimal


def tax_on(amount: Decimal, rate: Decimal, currency: str, *, inclusive: bool) -> Taxed:
    """Tax of one line, rounded once to the minor unit. Exclusive: ``amount`` is net.
    Inclusive: ``amount`` is gross and the tax is carved out of it; net + tax = gross always."""
    if rate < 0:
        raise ValueError("tax rate cannot be negative")
    unit = unit_of(currency)
    if inclusive:
        gross = amount.quantize(unit, rounding=ROUNDING)
        tax = (gross * rate / (1 + rate)).quantize(unit, rounding=ROUNDING)
        return Taxed(gross - tax, tax, gross)
    net = amount.quantize(unit, rounding=ROUNDING)
    tax = (net * rate).quantize(unit, rounding=ROUNDING)
    return Taxed(net, tax, net + tax)
