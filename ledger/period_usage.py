"""What a billing run needs of many BillingPeriods, read without rebuilding them.

An invoice needs two things of the account's BillingPeriod: its usage totals (per band, kind
and price) and its version. Rebuilding the aggregate (decoding every event into objects with
UUIDs, datetimes and Decimals, then applying each) was the largest part of loading a batch.
``period_usage`` reads the same stored events (latest snapshot, then later events) with
orjson and folds only the totals, with the arithmetic of ``BillingPeriod._add_to_totals``.
Any event it does not know exactly (another topic, an upcast class version, a value that is
not plain JSON) sends that period to the aggregate path (``ledger/bulk.py``), so the answer
is always the aggregate's; ``tests/test_period_usage.py`` compares both on random histories.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from .billing_period import BillingPeriod
from .bulk import CHUNK, Row, load_aggregates, rows_after, snapshot_rows


@dataclass(frozen=True, slots=True)
class PeriodUsage:
    """A BillingPeriod's version and usage totals ("band|kind|price_per_gb" -> bytes, amount)."""

    version: int
    usage_totals: dict[str, dict[str, Any]]


class _NotPlain(Exception):
    """An event this reader does not fold: the aggregate path decides."""


_OPENED = get_topic(BillingPeriod.Opened)  # type: ignore[attr-defined]
_RATED = get_topic(BillingPeriod.UsageRated)  # type: ignore[attr-defined]
_FAIR_USE = get_topic(BillingPeriod.FairUseCapReached)  # type: ignore[attr-defined]
_PERIOD_TOPIC = get_topic(BillingPeriod)


def _snapshot_topic(store: Application[UUID]) -> str | None:
    """The topic BillingPeriod snapshots are stored with (as Application.take_snapshot picks it)."""
    snapshot_class: Any = getattr(BillingPeriod, "Snapshot", type(store).snapshot_class)
    return get_topic(snapshot_class) if snapshot_class is not None else None


def _add(totals: dict[str, dict[str, Any]], lines: Any) -> None:
    """``BillingPeriod._add_to_totals`` on lines as stored (plain JSON only)."""
    for line in lines:
        amount, size = line["amount"], line["bytes"]
        if type(amount) is not str or type(size) is not int:
            raise _NotPlain
        key = f"{line['band']}|{line['kind']}|{line['price_per_gb']}"
        entry = totals.setdefault(key, {"bytes": 0, "amount": "0"})
        entry["bytes"] += size
        entry["amount"] = str(Decimal(entry["amount"]) + Decimal(amount))


def period_usage(store: Application[UUID], ids: Iterable[UUID]) -> dict[UUID, PeriodUsage]:
    """The version and usage totals of each BillingPeriod of ``ids`` that exists."""
    wanted = list(dict.fromkeys(ids))
    plain = store.mapper.cipher is None and store.mapper.compressor is None
    snapshot_topic = _snapshot_topic(store) if store.snapshots is not None else None
    found: dict[UUID, PeriodUsage] = {}
    for offset in range(0, len(wanted), CHUNK):
        chunk = wanted[offset:offset + CHUNK]
        keys = {i.hex: i for i in chunk}  # rows name their aggregate by its hex text
        folded: dict[str, tuple[int, dict[str, dict[str, Any]]]] = {}
        odd: set[str] = set()
        after: dict[str, int] = {}
        rows: list[Row] = []
        if store.snapshots is not None:
            rows = snapshot_rows(store.snapshots.recorder, chunk)
            after = {row[0]: row[1] for row in rows}
        rows += rows_after(store.recorder, chunk, [after.get(k, 0) for k in keys])
        for key, version, topic, stored_state in rows:
            if key in odd:
                continue
            try:
                if not plain:
                    raise _NotPlain
                state = orjson.loads(stored_state)
                if "class_version" in state:
                    raise _NotPlain
                if topic == snapshot_topic and state.get("topic") == _PERIOD_TOPIC:
                    totals = state["state"]["usage_totals"]
                    if type(totals) is not dict:
                        raise _NotPlain
                    folded[key] = (version, totals)
                elif topic == _OPENED:
                    folded[key] = (version, {})
                elif topic in (_RATED, _FAIR_USE) and key in folded:
                    totals = folded[key][1]
                    if topic == _RATED:
                        _add(totals, state["lines"])
                    folded[key] = (version, totals)
                else:
                    raise _NotPlain
            except (_NotPlain, orjson.JSONDecodeError, KeyError, TypeError):
                odd.add(key)
        for key, (version, totals) in folded.items():
            if key not in odd:
                found[keys[key]] = PeriodUsage(version, totals)
        if odd:
            for aggregate_id, period in load_aggregates(store, BillingPeriod, [keys[k] for k in odd]).items():
                found[aggregate_id] = PeriodUsage(period.version, period.usage_totals)
    return found


__all__ = ["PeriodUsage", "period_usage"]
