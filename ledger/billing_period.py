"""The BillingPeriod aggregate: one account's usage and usage charges in one billing period.

It holds the meter (allowance, add-on packs, overage tier position, fair-use volume) that the
price of further usage depends on, so it is the place where usage becomes money. Each rated
fragment is one UsageRated event whose lines and postings trace back to the session, the
accounting record and the interval that caused it.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.plans import PlanTerms
from rating import DataPack, Fragment, MeterState, rate_fragment

from .emit import emit
from .journal import usage_postings
from .named_ids import named_id


@lru_cache(maxsize=65_536)  # the rater names a period several times per record: uuid5 is not free
def _period_id(account_id: UUID, start: int) -> UUID:
    return named_id(f"billing-period:{account_id}:{start}")


class BillingPeriod(Aggregate):
    @staticmethod
    def create_id(account_id: UUID, start: int, **_: Any) -> UUID:
        return _period_id(account_id, start)

    @event("Opened")
    def __init__(self, account_id: UUID, start: int, end: int, currency: str) -> None:
        self.account_id = account_id
        self.start = start
        self.end = end
        self.currency = currency
        self.meter: dict[str, Any] = MeterState().to_dict()
        self.usage_amount = Decimal(0)
        # Exact totals per "band|kind|price_per_gb": what the invoice's usage lines show.
        self.usage_totals: dict[str, dict[str, Any]] = {}

    def rate(
        self, *, terms: PlanTerms, plan_id: UUID, fragment: Fragment, packs: Sequence[DataPack],
        session_id: UUID, incarnation: str, record_key: str, subscriber: str,
    ) -> Decimal:
        """Price a fragment of this period's usage; returns its amount."""
        if terms.currency != self.currency:
            raise ValueError(f"plan currency {terms.currency} differs from the period's {self.currency}")
        rated = rate_fragment(terms, MeterState.from_dict(self.meter), fragment, packs)
        amount = rated.amount
        emit(
            self, BillingPeriod.UsageRated,  # type: ignore[attr-defined]
            account_id=self.account_id, session_id=session_id, incarnation=incarnation, record_key=record_key,
            plan_id=plan_id,
            start=fragment.start, end=fragment.end, band=fragment.band,
            upload_bytes=fragment.upload_bytes, download_bytes=fragment.download_bytes,
            lines=[line.to_dict() for line in rated.lines], amount=amount, currency=terms.currency,
            postings=usage_postings(subscriber, amount, terms.currency) if amount else [],
            meter=rated.state.to_dict(),
        )
        if rated.fair_use_crossed and terms.fair_use is not None:
            emit(self, BillingPeriod.FairUseCapReached,  # type: ignore[attr-defined]
                 account_id=self.account_id, at=fragment.end, action=terms.fair_use.action,
                 throttle_rate=terms.fair_use.throttle_rate)
        return amount

    @event("UsageRated")
    def _usage_rated(
        self, account_id: UUID, session_id: UUID, incarnation: str, record_key: str, plan_id: UUID,
        start: int, end: int,
        band: str, upload_bytes: int, download_bytes: int, lines: list[dict[str, Any]], amount: Decimal,
        currency: str, postings: list[dict[str, str]], meter: dict[str, Any],
    ) -> None:
        self.meter = meter
        self.usage_amount += amount
        self._add_to_totals(lines)

    def _add_to_totals(self, lines: list[dict[str, Any]]) -> None:
        totals = self.__dict__.setdefault("usage_totals", {})
        for line in lines:
            key = f"{line['band']}|{line['kind']}|{line['price_per_gb']}"
            entry = totals.setdefault(key, {"bytes": 0, "amount": "0"})
            entry["bytes"] += int(line["bytes"])
            entry["amount"] = str(Decimal(entry["amount"]) + Decimal(str(line["amount"])))

    @event("FairUseCapReached")
    def _fair_use_reached(self, account_id: UUID, at: int, action: str, throttle_rate: str) -> None:
        self.meter = self.meter | {"fair_use_reached": True}
