"""Billing runs and credit notes on the ledger.

A run bills a batch of accounts for one period: each account's invoice is drafted from its
aggregates (plan history, plan versions, billing period usage totals, packs, discounts, tax
settings) and issued with a number from the series, and the batch is saved in one transaction
with the series. A concurrent run taking the same numbers conflicts; the batch is then retried
and invoices the other run issued are found and skipped. Re-running a period never duplicates
an invoice: its id derives from the account and the period.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Context, Decimal, Inexact
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Notification, Recording, StoredEvent
from eventsourcing.utils import get_topic

from domain.calendar import period_for_label
from domain.money import ROUNDING, minor_unit
from domain.plans import PlanTerms, PlanVersion, version_in_force
from rating.invoicing import InvoiceLine, PlanSpan, draft_invoice, issue_postings, plan_spans, recurring_lines

from .account import Account
from .billing_period import BillingPeriod
from .bulk import existing_ids, load_aggregates
from .catalog import Plan
from .errors import Conflict, NotFound
from .invoice import (
    CreditNote,
    Invoice,
    InvoiceSeries,
    document_number,
    drafted_state,
    drafted_state_tail,
    invoice_id,
    issued_state,
    issued_state_tail,
    new_invoice_events,
    stored_invoice_event,
)
from .journal import TAX_PAYABLE, Posting, UnbalancedTransaction, balanced, subscriber_account
from .late_usage import LateUsage, late_usage, recorded_versions
from .period_usage import PeriodUsage, period_usage

A = TypeVar("A", bound=Aggregate)
# Called with a committed batch's (notification id, event) pairs, in notification order.
Recorded = Callable[[list[tuple[int, Any]]], object]
DAY = 86_400
# The topics of a new invoice's events, stored with the states encoded ahead.
_INVOICE_TOPICS = {kind: get_topic(kind) for kind in (Invoice.Drafted, Invoice.Issued)}  # type: ignore[attr-defined]
CREDIT_NOTES = "credit_notes"  # contra-revenue: what credit notes gave back
_ZERO = Decimal(0)


@dataclass
class RunResult:
    """What one billing run (or one batch of it) did."""

    period: str
    issued: list[str] = field(default_factory=list)  # invoice numbers
    existing: int = 0  # already invoiced for this period
    skipped: int = 0  # nothing to bill (not active in the period)
    not_ended: int = 0  # the account's period has not ended at the run's date (anchor day, time zone)
    retries: int = 0

    def add(self, other: RunResult) -> None:
        self.issued += other.issued
        self.existing += other.existing
        self.skipped += other.skipped
        self.not_ended += other.not_ended
        self.retries += other.retries


class _Draft(NamedTuple):
    """One account's invoice, drafted: the Invoice's arguments and the journal postings of
    issuing it (balanced already: computed where it is drafted, which may be another process).
    A named tuple, not a frozen dataclass with slots: those are pickled and unpickled through
    Python code that calls ``dataclasses.fields`` each time (a tenth of the recording process's
    main thread when another process drafts), a tuple by pickle's own C code."""

    drafted: dict[str, Any]
    postings: list[dict[str, str]]
    subscriber: str
    usage_versions: dict[str, int]
    # The Drafted event's stored state but its timestamp (``invoice.drafted_state_tail``), and
    # the Issued event's from its subscriber on (``invoice.issued_state_tail``): encoded where
    # it is drafted, so that the process recording the run does not.
    drafted_tail: bytes | None = None
    issued_tail: bytes | None = None
    invoice: UUID | None = None  # the invoice's id (``invoice_id`` of the account and period)


@dataclass
class DraftedBatch:
    """One batch of accounts drafted for a period, nothing recorded yet: the counts so far
    and the drafts to number and issue (plain, picklable data: another process may draft)."""

    period: str
    account_ids: list[UUID]
    result: RunResult
    drafts: list[_Draft]


@dataclass(frozen=True)
class _BillingSpan:
    """Where one account's billing period lies, and the plan that fixes its time zone."""

    start: int
    end: int
    timezone: str
    first_plan: Plan


class _Plans:
    """The plans a batch refers to, each read and parsed once per batch."""

    def __init__(self, read: Callable[[UUID], Plan]) -> None:
        self.read = read
        self.plans: dict[UUID, Plan] = {}
        self.by_stored: dict[Any, Plan] = {}  # by the plan id as an account stores it
        self.parsed: dict[UUID, list[PlanVersion]] = {}
        self.fees: dict[tuple[Any, ...], list[InvoiceLine]] = {}
        self.spans_of: dict[tuple[Any, ...], list[PlanSpan]] = {}

    def spans(self, entries: Sequence[Mapping[str, Any]], start: int, end: int) -> list[PlanSpan]:
        """``plan_spans`` of an account's plan history (``Account.plans``) over [start, end),
        computed once per batch for each history and stretch: accounts of a batch share
        their plans, and most are active for the whole period. The spans are shared (frozen)."""
        key = (tuple((entry["plan_id"], entry["effective_from"]) for entry in entries), start, end)
        found = self.spans_of.get(key)
        if found is None:
            history = []
            for plan_id, effective_from in key[0]:
                chosen = self.get(plan_id)
                history.append((int(effective_from), str(chosen.id), chosen.name,
                                [(v.effective_from, v.terms) for v in self.versions(chosen)]))
            found = self.spans_of[key] = plan_spans(history, start, end)
        return found

    def recurring(self, spans: Sequence[PlanSpan], start: int, end: int, timezone: str, tax_rate: Decimal,
                  currency: str) -> list[InvoiceLine]:
        """``recurring_lines`` of these arguments, computed once per batch: most accounts of a
        batch share their plan version and period. Terms are told apart by identity, which is
        sound because this batch's ``versions`` keeps every one alive."""
        key = (tuple((s.start, s.end, s.plan_id, s.plan_name, id(s.terms)) for s in spans), start, end, timezone,
               tax_rate, currency)
        found = self.fees.get(key)
        if found is None:
            found = self.fees[key] = recurring_lines(spans, start, end, timezone, tax_rate, currency)
        return found

    def get(self, plan_id: Any) -> Plan:
        found = self.by_stored.get(plan_id)
        if found is None:
            key = UUID(str(plan_id))
            if key not in self.plans:
                self.plans[key] = self.read(key)
            found = self.by_stored[plan_id] = self.plans[key]
        return found

    def versions(self, plan: Plan) -> list[PlanVersion]:
        if plan.id not in self.parsed:
            self.parsed[plan.id] = plan.plan_versions()
        return self.parsed[plan.id]


# Pure, and asked once per account with the few (label, anchor day, zone) a run has.
_period_bounds = lru_cache(maxsize=1024)(period_for_label)


def _period_start(label: str, anchor_day: int, timezone: str) -> int:
    return _period_bounds(label, anchor_day, timezone)[0]


# What journal.balanced sums with: exact, so that an amount never rounds on the way.
_EXACT = Context(prec=200, traps=[Inexact])


def balanced_postings(postings: Sequence[tuple[str, Decimal, str]]) -> list[dict[str, str]]:
    """``journal.balanced`` of (ledger account, amount, currency) postings: the same check
    (each currency sums to zero exactly, else ``UnbalancedTransaction``) and the same dicts,
    without a ``Posting`` object per posting (a run makes about eight per invoice)."""
    totals: dict[str, Decimal] = {}
    for _, amount, currency in postings:
        totals[currency] = _EXACT.add(totals.get(currency, _ZERO), amount)
    if any(totals.values()):  # a Decimal is true when it is not zero (faster than ``!= 0``)
        raise UnbalancedTransaction(f"postings do not balance: {totals}")
    return [{"ledger_account": account, "amount": str(amount), "currency": currency}
            for account, amount, currency in postings if amount]


class BillingRun:
    if TYPE_CHECKING:
        repository: Any

        def save(self, *objs: Any, **kwargs: Any) -> Any: ...
        mapper: Any
        recorder: Any
        def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None: ...
        def _notify(self, recordings: list[Recording[UUID]]) -> None: ...
        def _get(self, cls: type[A], aggregate_id: UUID, what: str) -> A: ...
        def _maybe_get(self, cls: type[A], aggregate_id: UUID) -> A | None: ...
        def get_account(self, account_id: UUID) -> Account: ...
        def get_plan(self, plan_id: UUID) -> Plan: ...

    def bill_accounts(
        self, period: str, account_ids: Sequence[UUID], *, at: int, site: str, net_days: int = 14,
        carried: Mapping[str, Mapping[str, str]] | None = None, known_invoiced: frozenset[str] = frozenset(),
        attempts: int = 5, recorded: Recorded | None = None,
    ) -> RunResult:
        """Issue the invoices of ``period`` (YYYY-MM) for one batch of accounts, in one save.
        ``carried`` gives each account's previous balance and payments since (display only);
        ``known_invoiced`` names accounts known to be invoiced already (from the read model),
        which are not looked up; the others' invoices are looked up in the store, and the
        invoice's own id (one per account and period) prevents a duplicate either way.
        ``recorded``, when given, is called with the batch's new events and their
        notification ids once they are committed (to project them without reading them back)."""
        result = RunResult(period)
        for attempt in range(attempts):
            drafted = self.draft_batch(period, account_ids, at=at, carried=carried or {},
                                       known_invoiced=known_invoiced if attempt == 0 else frozenset())
            drafted.result.retries = result.retries
            try:
                result, committed = self._issue(drafted, at=at, site=site, net_days=net_days)
            except IntegrityError:
                # Another run saved the series (or one of these invoices) first: retry; the
                # invoices it issued are found in the store and skipped.
                result = RunResult(period, retries=result.retries + 1)
                continue
            if recorded is not None and committed:
                recorded(committed)
            return result
        raise Conflict(f"billing {period}: the batch kept conflicting with concurrent runs")

    def issue_drafted(
        self, drafted: DraftedBatch, *, at: int, site: str, net_days: int = 14,
        carried: Mapping[str, Mapping[str, str]] | None = None, recorded: Recorded | None = None,
    ) -> RunResult:
        """Issue a batch ``draft_batch`` drafted (here or in another process, with the same
        ``at`` and ``carried``), as ``bill_accounts`` would have; when the save conflicts with
        a concurrent run, the batch is billed again by ``bill_accounts``."""
        try:
            result, committed = self._issue(drafted, at=at, site=site, net_days=net_days)
        except IntegrityError:
            result = self.bill_accounts(drafted.period, drafted.account_ids, at=at, site=site, net_days=net_days,
                                        carried=carried, recorded=recorded)
            result.retries += 1
            return result
        if recorded is not None and committed:
            recorded(committed)
        return result

    def draft_batch(
        self, period: str, account_ids: Sequence[UUID], *, at: int,
        carried: Mapping[str, Mapping[str, str]], known_invoiced: frozenset[str] = frozenset(),
    ) -> DraftedBatch:
        """Draft the invoices of ``period`` for one batch of accounts, recording nothing: the
        batch's aggregates are read in a few bulk queries (ledger/bulk.py), not one by one."""
        result = RunResult(period)
        candidates = {a: invoice_id(a, period) for a in account_ids if str(a) not in known_invoiced}
        result.existing += len(account_ids) - len(candidates)
        store = cast("Application[UUID]", self)  # this mixin is part of the Ledger application
        invoiced = existing_ids(store, candidates.values())
        to_bill = [a for a, invoice in candidates.items() if invoice not in invoiced]
        result.existing += len(candidates) - len(to_bill)
        accounts = load_aggregates(store, Account, to_bill)
        missing = [a for a in to_bill if a not in accounts]
        if missing:
            raise NotFound(f"no account {missing[0]}")
        plans = _Plans(self.get_plan)
        spans: dict[UUID, _BillingSpan] = {}
        for account_id in to_bill:
            span = self._billing_span(period, accounts[account_id], plans)
            if span.end > at:
                result.not_ended += 1
            else:
                spans[account_id] = span
        own_periods = {a: BillingPeriod.create_id(a, s.start) for a, s in spans.items()}
        usage = period_usage(store, own_periods.values())

        def period_id(account_id: UUID, label: str) -> UUID:
            account = accounts[account_id]
            return BillingPeriod.create_id(account_id, _period_start(label, account.anchor_day,
                                                                     spans[account_id].timezone))

        late = late_usage(store, period, list(spans), period_id)
        drafts: list[_Draft] = []
        for account_id, span in spans.items():
            drafted = self._draft(period, accounts[account_id], span, plans, at,
                                  usage.get(own_periods[account_id]),
                                  carried.get(str(account_id), {}), late.get(account_id, LateUsage()))
            if drafted is None:
                result.skipped += 1
            else:
                drafts.append(drafted)
        return DraftedBatch(period, list(account_ids), result, drafts)

    def _issue(self, drafted: DraftedBatch, *, at: int, site: str, net_days: int,
               ) -> tuple[RunResult, list[tuple[int, Any]]]:
        """Number and record a drafted batch with its series, in one transaction; returns
        the run's counts and the recorded (notification id, event) pairs."""
        result, drafts = drafted.result, drafted.drafts
        if not drafts:
            return result, []
        series_name = f"INV-{site}-{datetime.fromtimestamp(at, UTC).year}"
        series = self._series(series_name)
        first = series.reserve(len(drafts))
        events: list[Any] = []
        states: list[bytes | None] = []  # each event's stored state when encoded already
        issued: list[str] = []
        mapper: Any = self.mapper
        for offset, draft in enumerate(drafts):
            number = document_number(series_name, first + offset)
            new = new_invoice_events(draft.drafted, {
                "number": number, "series": series_name, "issued_at": at, "due_at": at + net_days * DAY,
                "subscriber": draft.subscriber, "postings": draft.postings, "usage_versions": draft.usage_versions},
                draft.invoice)
            events += new
            states += [None if draft.drafted_tail is None else drafted_state(mapper, new[0].timestamp,
                                                                             draft.drafted_tail),
                       None if draft.issued_tail is None else issued_state(mapper, new[1], draft.issued_tail)]
            issued.append(number)
        # The series and every invoice in one transaction: a concurrent run conflicts on the series.
        committed = [(r.notification.id, r.domain_event) for r in self._record_batch(series, events, states)]
        done = replace(result, issued=result.issued + issued)
        return done, committed

    def _record_batch(self, series: InvoiceSeries, events: list[Any], states: list[bytes | None],
                      ) -> list[Recording[UUID]]:
        """``save(series, *events)``, without ProcessingEvent.collect_events's two runtime-
        protocol isinstance checks per object (a twentieth of a run with 2 events an invoice):
        the same recording, snapshots and notification of listeners. ``states``: per event,
        its stored state when it was encoded already (None: encoded here)."""
        series_events = series.collect_events()
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        processing_event.events += [*series_events, *events]
        processing_event.aggregates[series.id] = series
        # What Application._record does (EventStore.put), the invoices' events encoded the
        # quick way (ledger/invoice.py: the same bytes).
        mapper: Any = self.mapper
        stored = [mapper.to_stored_event(e) for e in series_events] + [
            stored_invoice_event(mapper, e) if state is None else
            StoredEvent(originator_id=e.originator_id, originator_version=e.originator_version,
                        topic=_INVOICE_TOPICS[type(e)], state=state)
            for e, state in zip(events, states, strict=True)]
        ids = self.recorder.insert_events(stored) or []
        recordings = [Recording(e, Notification(id=n, originator_id=s.originator_id,
                                                originator_version=s.originator_version, topic=s.topic, state=s.state))
                      for e, s, n in zip(processing_event.events, stored, ids, strict=True)]
        if self.repository.cache and not self.repository.fastforward:
            self.repository.cache.put(series.id, series)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def _series(self, name: str) -> InvoiceSeries:
        found = self._maybe_get(InvoiceSeries, InvoiceSeries.create_id(name))
        return found if found is not None else InvoiceSeries(name=name)

    def _billing_span(self, period: str, account: Account, plans: _Plans) -> _BillingSpan:
        """The account's billing period ``period``: its bounds follow the anchor day and the
        time zone of the account's first plan."""
        first_plan = plans.get(account.plans[0]["plan_id"])
        timezone = version_in_force(plans.versions(first_plan), account.opened_at).terms.timezone
        start, end = _period_bounds(period, account.anchor_day, timezone)
        return _BillingSpan(start, end, timezone, first_plan)

    def _draft(self, period: str, account: Account, span: _BillingSpan, plans: _Plans, at: int,
               usage_period: PeriodUsage | None, carried: Mapping[str, str], late: LateUsage) -> _Draft | None:
        start, end, timezone, first_plan = span.start, span.end, span.timezone, span.first_plan
        active_from = max(start, account.opened_at)
        active_to = min(end, account.closed_at) if account.closed_at is not None else end
        spans = plans.spans(account.plans, active_from, active_to)
        usage_totals: dict[str, Any] = getattr(usage_period, "usage_totals", {}) if usage_period else {}
        in_period = [p for p in account.packs if start <= int(p["valid_from"]) < end]
        if not spans and not usage_totals and not in_period and not late.usage:
            return None
        currency, tax_rate = account.currency, account.tax_rate
        draft = draft_invoice(
            currency=currency, period_start=start, period_end=end, timezone=timezone, spans=spans,
            usage_totals=usage_totals, packs=account.packs, discounts=account.discounts, tax_rate=tax_rate,
            late_usage=late.usage, recurring=plans.recurring(spans, start, end, timezone, tax_rate, currency),
        )
        terms: PlanTerms = spans[-1].terms if spans else version_in_force(plans.versions(first_plan), start).terms
        subscriber = subscriber_account(account.id, terms.payment_model)
        totals = draft.totals()
        previous = Decimal(carried.get("previous_balance", "0"))
        payments = Decimal(carried.get("payments", "0"))
        carried_out = {"previous_balance": str(previous), "payments": str(payments),
                       "amount_due": str(previous - payments + Decimal(totals["gross"]))}
        customer = {"name": account.name, "usernames": list(account.usernames), "tax_zone": account.tax_zone,
                    "tax_rate": str(tax_rate), "payment_model": terms.payment_model,
                    "plan": spans[-1].plan_name if spans else first_plan.name, "timezone": timezone}
        drafted = {
            "account_id": account.id, "period": period, "period_start": start, "period_end": end,
            "currency": currency, "customer": customer, "lines": [line.to_dict() for line in draft.lines],
            "totals": totals, "tax_summary": draft.tax_summary(), "carried": carried_out, "drafted_at": at,
            "usage_billed": {period: dict(usage_totals)} | dict(late.usage),
        }
        own_version = usage_period.version if usage_period is not None else 0
        postings = balanced_postings(issue_postings(draft.lines, subscriber, currency))
        usage_versions = recorded_versions(period, own_version, late)
        return _Draft(drafted, postings, subscriber, usage_versions, drafted_state_tail(self.mapper, drafted),
                      issued_state_tail(self.mapper, subscriber, postings, usage_versions),
                      invoice_id(account.id, period))

    def get_invoice(self, invoice: UUID) -> Invoice:
        return self._get(Invoice, invoice, "invoice")

    def issue_credit_note(
        self, invoice: UUID, *, amount: Decimal | None, reason: str, at: int, site: str, key: str,
    ) -> tuple[CreditNote, bool]:
        """Credit ``amount`` (gross; None: all that is left, which voids the invoice). The same
        ``key`` and request return the credit note already issued (created False)."""
        document = self.get_invoice(invoice)
        fingerprint = hashlib.sha256(json.dumps([str(amount), reason]).encode()).hexdigest()
        existing = self._maybe_get(CreditNote, CreditNote.create_id(document.id, key))
        if existing is not None:
            if existing.fingerprint != fingerprint:
                raise Conflict("this idempotency key was used for a different credit note")
            return existing, False
        if document.status != "issued":
            raise Conflict(f"invoice is {document.status}; only an issued invoice can be credited")
        left = document.creditable()
        gross = left if amount is None else amount
        unit = minor_unit(document.currency)
        if gross <= 0 or gross > left or gross != gross.quantize(unit):
            raise ValueError(f"a credit note is for a positive amount up to {left} {document.currency}, "
                             f"in {unit} steps")
        if gross == left:
            tax = document.tax - document.credited_tax
        else:
            tax = (gross * document.tax / document.gross).quantize(unit, rounding=ROUNDING) if document.gross else \
                Decimal(0)
        net = gross - tax
        series_name = f"CN-{site}-{datetime.fromtimestamp(at, UTC).year}"
        series = self._series(series_name)
        number = document_number(series_name, series.reserve(1))
        postings = balanced([Posting(document.subscriber, -gross, document.currency),
                             Posting(CREDIT_NOTES, net, document.currency),
                             Posting(TAX_PAYABLE, tax, document.currency)])
        note = CreditNote(
            invoice_id=document.id, key=key, fingerprint=fingerprint, account_id=document.account_id,
            invoice_number=document.number, number=number, series=series_name, amount=gross, net=net, tax=tax,
            currency=document.currency, reason=reason, issued_at=at, postings=postings,
        )
        document.credited_by(credit_note_id=note.id, number=number, amount=gross, tax=tax, at=at)
        try:
            self.save(series, document, note)
        except IntegrityError:  # a concurrent note took the number or credited the invoice: redo
            return self.issue_credit_note(invoice, amount=amount, reason=reason, at=at, site=site, key=key)
        return note, True


__all__ = ["BillingRun", "DraftedBatch", "Recorded", "RunResult"]
