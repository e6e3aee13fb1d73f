"""Usage deltas from cumulative counters, and their price.

Charges are exact: price_per_gb * bytes / 10^9 is computed in a wide Decimal context with no
rounding at all, so usage split at any boundary sums to exactly the unsplit charge. Rounding
to the currency's minor unit happens once, on the invoice.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal

from domain.plans import BYTES_PER_GB, PlanTerms

_EXACT = Context(prec=60)


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """Bytes used between two accounting records of a session, over [start, end]."""

    start: int
    end: int
    upload_bytes: int
    download_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.upload_bytes + self.download_bytes


@dataclass(frozen=True, slots=True)
class Charge:
    amount: Decimal
    currency: str
    billable_bytes: int


def counter_delta(last: int, new: int, *, newer: bool) -> int:
    """Usage carried by a cumulative counter moving from ``last`` to ``new``.

    A record that happened after the last one seen with a smaller counter means the NAS
    restarted its counters: everything it reports now is new usage. A late record (older
    than the last one seen) with a smaller counter was already counted: zero.
    """
    if new >= last:
        return new - last
    return new if newer else 0


def rate_usage(terms: PlanTerms, usage: UsageDelta) -> Charge:
    """Price a usage delta at the plan's per-GB price, exactly."""
    amount = _EXACT.divide(_EXACT.multiply(terms.price_per_gb, Decimal(usage.total_bytes)), BYTES_PER_GB)
    return Charge(amount=_normalise(amount), currency=terms.currency, billable_bytes=usage.total_bytes)


def _normalise(amount: Decimal) -> Decimal:
    # Drop trailing zeros from the exact quotient but keep at least the unit scale so
    # stored figures stay readable ("0.25", not "2.5E-1").
    if amount == 0:
        return Decimal(0)
    normal = amount.normalize(_EXACT)
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        return normal.quantize(Decimal(1))
    return normal


def split_by_hour(usage: UsageDelta) -> list[UsageDelta]:
    """Split usage pro rata by time at hour boundaries (integer bytes, remainders carried so
    the parts sum exactly to the whole). Zero-length intervals stay in their hour."""
    if usage.end <= usage.start:
        return [usage]
    parts: list[UsageDelta] = []
    duration = usage.end - usage.start
    cursor = usage.start
    up_done = down_done = 0
    while cursor < usage.end:
        boundary = min(usage.end, (cursor // 3600 + 1) * 3600)
        elapsed = boundary - usage.start
        up_total = usage.upload_bytes * elapsed // duration
        down_total = usage.download_bytes * elapsed // duration
        parts.append(UsageDelta(cursor, boundary, up_total - up_done, down_total - down_done))
        up_done, down_done = up_total, down_total
        cursor = boundary
    return parts
