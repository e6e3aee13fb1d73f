"""What the rater needs to price a subscriber's usage at a moment."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from domain.plans import PlanTerms
from rating import DataPack


@dataclass(frozen=True, slots=True)
class Tariff:
    account_id: UUID
    plan_id: UUID
    terms: PlanTerms
    anchor_day: int
    packs: tuple[DataPack, ...]
    subscriber: str  # the subscriber's ledger account (receivable or prepaid)
