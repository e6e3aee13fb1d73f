"""Usage deltas from cumulative counters, and their price.

Charges are exact: price_per_gb * bytes / 10^9 is computed in a wide Decimal context with no
rounding at all, so usage split at any boundary sums to exactly the unsplit charge. Rounding
to the currency's minor unit happens once, on the invoice.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal

from domain.plans import BYTES_PER_GB, PlanTerms

# Wide enough for any 64-bit byte count times any price the API accepts: nothing rounds.
EXACT = Context(prec=80)


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


def price(bytes_: int, price_per_gb: Decimal) -> Decimal:
    """Exact price of ``bytes_`` at ``price_per_gb`` (GB = 10^9 bytes)."""
    if bytes_ == 0 or price_per_gb == 0:
        return Decimal(0)
    return exact(EXACT.divide(EXACT.multiply(price_per_gb, Decimal(bytes_)), BYTES_PER_GB))


def exact(amount: Decimal) -> Decimal:
    """Canonical form of an exact amount: no trailing zeros, never an exponent above 0
    (stored figures stay readable: "0.25", "100", not "2.5E-1", "1E+2")."""
    if amount == 0:
        return Decimal(0)
    normal = amount.normalize(EXACT)
    exponent = normal.as_tuple().exponent
    return normal.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normal


def rate_usage(terms: PlanTerms, usage: UsageDelta) -> Charge:
    """Price a usage delta at the plan's flat per-GB price, exactly."""
    return Charge(amount=price(usage.total_bytes, terms.price_per_gb), currency=terms.currency,
                  billable_bytes=usage.total_bytes)


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
