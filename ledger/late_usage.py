"""Late usage: usage of an earlier period rated after that period's invoice was issued (a BNG
that buffered accounting through an outage). A run bills it on the next invoice, once.

The exact answer needs, per account and earlier period, the period's BillingPeriod and every
invoice that may have billed part of it (``usage_billed``). In the steady state nearly no
account has any, so each invoice also records the version of each period's BillingPeriod it
fully accounted for (``usage_versions``, on its Issued event): when the previous invoice's
recorded versions are still the BillingPeriods' current versions, nothing arrived since and
nothing is left, which two cheap queries tell (the previous invoices' small Issued events and
the BillingPeriods' current versions). Only accounts where a version moved, or that have no
such record, take the exact path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.application import Application

from domain.calendar import previous_label
from rating.invoicing import unbilled_usage

from .bulk import load_aggregates
from .invoice import Invoice, invoice_id
from .period_usage import period_usage
from .store_reads import current_versions, latest_states

# How many earlier periods a run looks at for usage rated after their invoice was issued.
LATE_LOOKBACK = 2
ISSUED_VERSION = 2  # an invoice's Issued event's version

PeriodId = Callable[[UUID, str], UUID]  # (account, period label) -> that period's BillingPeriod id


@dataclass
class LateUsage:
    """One account's late usage, and the BillingPeriod versions it accounts for."""

    usage: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # label -> unbilled totals
    versions: dict[str, int] = field(default_factory=dict)  # label -> version billed up to


def lookback_labels(period: str) -> list[str]:
    return [previous_label(period, back) for back in range(1, LATE_LOOKBACK + 1)]


def late_usage(store: Application[UUID], period: str, accounts: list[UUID], period_id: PeriodId,
               ) -> dict[UUID, LateUsage]:
    """Per account of ``accounts``, the usage of each of the ``LATE_LOOKBACK`` periods before
    ``period`` that no invoice has billed yet; the answer ``late_usage_exact`` gives, reached
    for most accounts with two bulk queries and no aggregate loaded."""
    labels = lookback_labels(period)
    invoices = [[invoice_id(a, label).hex for label in labels] for a in accounts]
    # An invoice's Issued event is always its second: it is drafted (created) and issued in
    # one save, and nothing else can happen to it before it is issued.
    issued = latest_states(store, (i for ids in invoices for i in ids), Invoice.Issued,  # type: ignore[attr-defined]
                           version=ISSUED_VERSION)
    # Periods whose invoice was issued, by account: only those can have late usage.
    checks = [[(label, period_id(a, label).hex) for label, i in zip(labels, ids, strict=True) if i in issued]
              for a, ids in zip(accounts, invoices, strict=True)]
    now = current_versions(store, (p for account_checks in checks for _, p in account_checks))
    result: dict[UUID, LateUsage] = {}
    exact: list[UUID] = []
    for a, ids, account_checks in zip(accounts, invoices, checks, strict=True):
        state = issued.get(ids[0])
        versions = orjson.loads(state).get("usage_versions") if state is not None else None
        recorded = versions if isinstance(versions, dict) else {}
        found = LateUsage()
        for label, billing_period in account_checks:
            version = now.get(billing_period, 0)
            if recorded.get(label) != version:
                exact.append(a)
                break
            found.versions[label] = version
        else:
            result[a] = found
    if exact:
        result |= late_usage_exact(store, period, exact, period_id)
    return result


def late_usage_exact(store: Application[UUID], period: str, accounts: list[UUID], period_id: PeriodId,
                     ) -> dict[UUID, LateUsage]:
    """Per account, per earlier period (up to ``LATE_LOOKBACK`` back), the usage rated after
    that period's invoice was issued and not billed since: what the BillingPeriod holds now
    minus what every invoice that may have billed it did (``usage_billed``): the period's own
    and those of the ``LATE_LOOKBACK`` periods after it, including periods after ``period``
    when runs were made out of order (a period run after the next one was). A period with no
    issued invoice is left to its own run; one whose invoice predates ``usage_billed`` is
    left alone (what it billed is not known per band). ``versions`` names the periods whose
    usage is then all billed, at the BillingPeriod version read."""
    labels = lookback_labels(period)
    # label -> the labels of the invoices that may have billed part of its usage
    billers = {label: [previous_label(label, -ahead) for ahead in range(LATE_LOOKBACK + 1)
                       if previous_label(label, -ahead) != period] for label in labels}
    every = sorted({later for later_labels in billers.values() for later in later_labels})
    wanted = {(a, label): invoice_id(a, label) for a in accounts for label in every}
    invoices = load_aggregates(store, Invoice, wanted.values())
    periods: dict[tuple[UUID, str], UUID] = {}
    for account_id in accounts:
        for label in labels:
            found = invoices.get(wanted[(account_id, label)])
            if found is not None and found.status != "draft" and getattr(found, "usage_billed", None) is not None:
                periods[(account_id, label)] = period_id(account_id, label)
    usage = period_usage(store, periods.values())
    late = {a: LateUsage() for a in accounts}
    for (account_id, label), billing_period in periods.items():
        used = usage.get(billing_period)
        version = used.version if used is not None else 0
        if used is None or not used.usage_totals:
            late[account_id].versions[label] = version
            continue
        documents = [invoices[wanted[(account_id, later)]] for later in billers[label]
                     if wanted[(account_id, later)] in invoices]
        if any(document.usage_billed is None for document in documents):
            continue  # what one of them billed for this period is not known per band
        billed = [(document.usage_billed or {}).get(label, {}) for document in documents]
        left = unbilled_usage(used.usage_totals, billed)
        if left:
            late[account_id].usage[label] = left
        late[account_id].versions[label] = version
    return late


def recorded_versions(own: str, own_version: int, late: LateUsage) -> dict[str, int]:
    """What an invoice for period ``own`` records in ``usage_versions``: its own period's
    BillingPeriod version (all of it is billed) and those of the earlier periods it accounted for."""
    return {own: own_version} | {label: late.versions[label] for label in sorted(late.versions)}


__all__ = ["LATE_LOOKBACK", "LateUsage", "late_usage", "late_usage_exact", "lookback_labels", "recorded_versions"]
