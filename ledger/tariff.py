"""What the rater needs to price a subscriber's usage at a moment."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from domain.plans import PlanTerms


@dataclass(frozen=True, slots=True)
class Tariff:
    account_id: UUID
    plan_id: UUID
    terms: PlanTerms
