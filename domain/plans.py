"""Plans and tariffs as values. A plan is versioned: each version has the date it takes
effect, and usage is always rated with the version in force when it happened."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .money import minor_unit, parse_amount

BYTES_PER_GB = 10**9  # SI gigabyte, as WISPs sell it


@dataclass(frozen=True, slots=True)
class PlanTerms:
    """The commercial terms of one plan version."""

    currency: str
    monthly_fee: Decimal
    price_per_gb: Decimal

    def __post_init__(self) -> None:
        minor_unit(self.currency)
        if self.monthly_fee < 0 or self.price_per_gb < 0:
            raise ValueError("plan prices cannot be negative")

    @classmethod
    def parse(cls, currency: str, monthly_fee: Any, price_per_gb: Any) -> PlanTerms:
        return cls(
            currency=str(currency).upper(),
            monthly_fee=parse_amount(monthly_fee),
            price_per_gb=parse_amount(price_per_gb),
        )

    def to_dict(self) -> dict[str, str]:
        return {
            "currency": self.currency,
            "monthly_fee": str(self.monthly_fee),
            "price_per_gb": str(self.price_per_gb),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanTerms:
        return cls.parse(data["currency"], data["monthly_fee"], data["price_per_gb"])


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
