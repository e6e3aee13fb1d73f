"""Plans and tariffs as values. A plan is versioned: each version has the moment it takes
effect, and usage is always rated with the version in force when it happened.

A plan version (``PlanTerms``) has:
- a monthly recurring fee (prorated by day on invoices for partial periods);
- an included data allowance per billing period, then overage priced per GB, flat
  (``price_per_gb``) or graduated (``tiers``: each tier up to a cumulative overage volume);
- time-of-day bands (weekdays and hours in the plan's time zone) with their own price per GB,
  counted toward the allowance or not (e.g. free or cheap nights);
- a fair-use cap per period with the action on crossing it (throttle to a rate, or block);
- the payment model: postpaid (with the account's credit limit) or prepaid (enforced at zero);
- whether prices include tax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .money import minor_unit, parse_amount

BYTES_PER_GB = 10**9  # SI gigabyte, as WISPs sell it
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def gb_to_bytes(gb: Decimal) -> int:
    value = gb * BYTES_PER_GB
    if value != value.to_integral_value():
        raise ValueError(f"{gb} GB is not a whole number of bytes")
    return int(value)


@dataclass(frozen=True, slots=True)
class Tier:
    """Overage beyond the allowance, up to ``up_to_gb`` of cumulative overage (None: no limit)."""

    up_to_gb: Decimal | None
    price_per_gb: Decimal

    def to_dict(self) -> dict[str, str | None]:
        return {"up_to_gb": None if self.up_to_gb is None else str(self.up_to_gb),
                "price_per_gb": str(self.price_per_gb)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tier:
        up_to = data.get("up_to_gb")
        return cls(None if up_to in (None, "") else parse_amount(up_to), parse_amount(data["price_per_gb"]))


@dataclass(frozen=True, slots=True)
class Band:
    """A time-of-day band: ``days`` (mon..sun) from ``start_hour`` to ``end_hour`` local time
    (end exclusive; end < start wraps past midnight, e.g. 23 -> 7)."""

    name: str
    days: tuple[str, ...]
    start_hour: int
    end_hour: int
    price_per_gb: Decimal
    counts_toward_allowance: bool = False

    def __post_init__(self) -> None:
        if not self.days or any(day not in WEEKDAYS for day in self.days):
            raise ValueError(f"band {self.name!r}: days are among {', '.join(WEEKDAYS)}")
        if not (0 <= self.start_hour <= 23 and 0 <= self.end_hour <= 24) or self.start_hour == self.end_hour:
            raise ValueError(f"band {self.name!r}: hours are 0..24 and start differs from end")
        if self.price_per_gb < 0:
            raise ValueError(f"band {self.name!r}: price cannot be negative")

    def covers(self, weekday: int, hour: int) -> bool:
        """Does the band cover this local hour? A wrapping band belongs to its start day."""
        if self.start_hour < self.end_hour:
            return WEEKDAYS[weekday] in self.days and self.start_hour <= hour < self.end_hour
        if hour >= self.start_hour:
            return WEEKDAYS[weekday] in self.days
        return WEEKDAYS[(weekday - 1) % 7] in self.days and hour < self.end_hour

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "days": list(self.days), "start_hour": self.start_hour,
                "end_hour": self.end_hour, "price_per_gb": str(self.price_per_gb),
                "counts_toward_allowance": self.counts_toward_allowance}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Band:
        return cls(name=str(data["name"]), days=tuple(str(d).lower() for d in data["days"]),
                   start_hour=int(data["start_hour"]), end_hour=int(data["end_hour"]),
                   price_per_gb=parse_amount(data["price_per_gb"]),
                   counts_toward_allowance=bool(data.get("counts_toward_allowance", False)))


@dataclass(frozen=True, slots=True)
class FairUse:
    cap_gb: Decimal
    action: str = "throttle"  # throttle | block
    throttle_rate: str = "1M/1M"  # vendor rate-limit value while throttled (rx/tx)

    def __post_init__(self) -> None:
        if self.cap_gb <= 0:
            raise ValueError("the fair-use cap must be positive")
        if self.action not in ("throttle", "block"):
            raise ValueError("fair-use action is 'throttle' or 'block'")


@dataclass(frozen=True, slots=True)
class PlanTerms:
    """The commercial terms of one plan version."""

    currency: str
    monthly_fee: Decimal
    price_per_gb: Decimal
    included_gb: Decimal = Decimal(0)
    tiers: tuple[Tier, ...] = ()
    bands: tuple[Band, ...] = ()
    fair_use: FairUse | None = None
    payment_model: str = "postpaid"  # postpaid | prepaid
    prices_include_tax: bool = False
    timezone: str = "UTC"
    rate_limit: str = ""  # the plan's normal vendor rate limit, restored when a throttle lifts
    dunning_days: int = 0  # suspend when an invoice is this many days overdue (0: never)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        minor_unit(self.currency)
        if self.monthly_fee < 0 or self.price_per_gb < 0 or self.included_gb < 0:
            raise ValueError("plan prices and allowances cannot be negative")
        gb_to_bytes(self.included_gb)
        if self.payment_model not in ("postpaid", "prepaid"):
            raise ValueError("payment_model is 'postpaid' or 'prepaid'")
        limits = [t.up_to_gb for t in self.tiers]
        if any(limit is None for limit in limits[:-1]):
            raise ValueError("only the last tier may be unlimited")
        bounded = [limit for limit in limits if limit is not None]
        if bounded != sorted(bounded) or len(set(bounded)) != len(bounded) or any(b <= 0 for b in bounded):
            raise ValueError("tier limits must increase")
        if self.dunning_days < 0:
            raise ValueError("dunning days cannot be negative")
        if any(t.price_per_gb < 0 for t in self.tiers):
            raise ValueError("tier prices cannot be negative")
        names = [b.name for b in self.bands]
        if len(set(names)) != len(names) or "standard" in names:
            raise ValueError("band names are distinct and not 'standard'")

    @property
    def included_bytes(self) -> int:
        return gb_to_bytes(self.included_gb)

    @classmethod
    def parse(cls, currency: str, monthly_fee: Any, price_per_gb: Any, **options: Any) -> PlanTerms:
        return cls.from_dict({"currency": currency, "monthly_fee": monthly_fee,
                              "price_per_gb": price_per_gb, **options})

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "currency": self.currency,
            "monthly_fee": str(self.monthly_fee),
            "price_per_gb": str(self.price_per_gb),
        }
        if self.included_gb:
            data["included_gb"] = str(self.included_gb)
        if self.tiers:
            data["tiers"] = [t.to_dict() for t in self.tiers]
        if self.bands:
            data["bands"] = [b.to_dict() for b in self.bands]
        if self.fair_use is not None:
            data["fair_use"] = {"cap_gb": str(self.fair_use.cap_gb), "action": self.fair_use.action,
                                "throttle_rate": self.fair_use.throttle_rate}
        if self.payment_model != "postpaid":
            data["payment_model"] = self.payment_model
        if self.prices_include_tax:
            data["prices_include_tax"] = True
        if self.timezone != "UTC":
            data["timezone"] = self.timezone
        if self.rate_limit:
            data["rate_limit"] = self.rate_limit
        if self.dunning_days:
            data["dunning_days"] = self.dunning_days
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanTerms:
        fair = data.get("fair_use")
        return cls(
            currency=str(data["currency"]).upper(),
            monthly_fee=parse_amount(data["monthly_fee"]),
            price_per_gb=parse_amount(data["price_per_gb"]),
            included_gb=parse_amount(data.get("included_gb", "0")),
            tiers=tuple(Tier.from_dict(t) for t in data.get("tiers") or ()),
            bands=tuple(Band.from_dict(b) for b in data.get("bands") or ()),
            fair_use=None if not fair else FairUse(
                cap_gb=parse_amount(fair["cap_gb"]), action=str(fair.get("action", "throttle")),
                throttle_rate=str(fair.get("throttle_rate", "1M/1M"))),
            payment_model=str(data.get("payment_model", "postpaid")),
            prices_include_tax=bool(data.get("prices_include_tax", False)),
            timezone=str(data.get("timezone", "UTC")),
            rate_limit=str(data.get("rate_limit", "")),
            dunning_days=int(data.get("dunning_days", 0)),
        )


@dataclass(frozen=True, slots=True)
class PlanVersion:
    effective_from: int  # epoch seconds
    terms: PlanTerms


def version_in_force(versions: list[PlanVersion], at: int) -> PlanVersion:
    """The latest version whose effective_from is not after ``at``; the first version
    also covers usage before it (a subscriber connected before the plan was dated)."""
    if not versions:
        raise ValueError("a plan has at least one version")
    chosen = versions[0]
    for version in versions:
        if version.effective_from <= at:
            chosen = version
    return chosen
