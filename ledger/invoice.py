"""Invoices, credit notes and their numbering series.

An invoice is drafted, then issued: issuing fixes its number, due date and postings and makes
it immutable (guarantee 5); a correction is a credit note, with its own number, which may void
the invoice. Numbers come from an ``InvoiceSeries`` saved in the same transaction as the
documents it numbers, so a concurrent run conflicts and retries: no gap, no reuse.
Payment status (paid, partially paid, overdue) is derived from payments in the read model.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

import orjson
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from domain.ids import NAMESPACE

from .errors import Conflict
from .named_ids import named_id
from .transcoder import FastJSONTranscoder


@lru_cache(maxsize=4096)  # a billing run derives each id twice (lookup, then the new invoice's id)
def invoice_id(account_id: UUID | str, period: str) -> UUID:
    """One invoice per account and period: re-running a period finds the same invoice."""
    return named_id(f"invoice:{account_id}:{period}")


def document_number(series: str, number: int) -> str:
    return f"{series}-{number:06d}"


class InvoiceSeries(Aggregate):
    """A gapless sequence of document numbers (e.g. INV-site-a-2026)."""

    @staticmethod
    def create_id(name: str, **_: Any) -> UUID:
        return uuid5(NAMESPACE, f"document-series:{name}")

    @event("Opened")
    def __init__(self, name: str) -> None:
        self.name = name
        self.next_number = 1

    def reserve(self, count: int) -> int:
        """Take ``count`` consecutive numbers; returns the first."""
        first = self.next_number
        self._taken(first=first, count=count)
        return first

    @event("NumbersTaken")
    def _taken(self, first: int, count: int) -> None:
        if first != self.next_number or count < 1:
            raise ValueError("numbers are taken in order")
        self.next_number = first + count


class Invoice(Aggregate):
    @staticmethod
    def create_id(account_id: UUID, period: str, **_: Any) -> UUID:
        return invoice_id(account_id, period)

    @event("Drafted")
    def __init__(
        self, account_id: UUID, period: str, period_start: int, period_end: int, currency: str,
        customer: dict[str, Any], lines: list[dict[str, Any]], totals: dict[str, str],
        tax_summary: list[dict[str, str]], carried: dict[str, str], drafted_at: int,
        usage_billed: dict[str, dict[str, dict[str, Any]]] | None = None,
    ) -> None:
        self.account_id = account_id
        # The usage totals this invoice bills, by the period they were used in: its own period
        # and earlier ones whose usage arrived after their invoice. (None on invoices drafted
        # before this was recorded.)
        self.usage_billed = usage_billed
        self.period = period
        self.period_start = period_start
        self.period_end = period_end
        self.currency = currency
        self.customer = customer
        self.lines = lines
        self.totals = totals
        self.tax_summary = tax_summary
        self.carried = carried
        self.status = "draft"
        self.number = ""
        self.issued_at: int | None = None
        self.due_at: int | None = None
        self.credited = Decimal(0)
        self.credited_tax = Decimal(0)

    @property
    def gross(self) -> Decimal:
        return Decimal(self.totals["gross"])

    @property
    def tax(self) -> Decimal:
        return Decimal(self.totals["tax"])

    @event("Issued")
    def issue(self, number: str, series: str, issued_at: int, due_at: int, subscriber: str,
              postings: list[dict[str, str]], usage_versions: dict[str, int] | None = None) -> None:
        """Fix the number, dates and postings. ``usage_versions``: per period label, the
        version of the account's BillingPeriod whose usage is billed in full by now (this
        invoice's own period and the earlier ones it looked at for late usage), so the next
        run knows without reading them that nothing arrived since (ledger/late_usage.py)."""
        if self.status != "draft":
            raise Conflict(f"invoice {self.number} is already issued")
        self.status = "issued"
        self.number = number
        self.series = series
        self.issued_at = issued_at
        self.due_at = due_at
        self.subscriber = subscriber
        self.usage_versions = usage_versions

    def creditable(self) -> Decimal:
        return self.gross - self.credited

    @event("Credited")
    def credited_by(self, credit_note_id: UUID, number: str, amount: Decimal, tax: Decimal, at: int) -> None:
        if self.status not in ("issued",):
            raise Conflict("only an issued invoice can be credited")
        self.credited += amount
        self.credited_tax += tax
        if self.credited >= self.gross:
            self.status = "void"


class CreditNote(Aggregate):
    """A correction of an issued invoice: credits the subscriber ``amount`` (gross)."""

    @staticmethod
    def create_id(invoice_id: UUID, key: str, **_: Any) -> UUID:
        return uuid5(NAMESPACE, f"credit-note:{invoice_id}:{key}")

    @event("Issued")
    def __init__(
        self, invoice_id: UUID, key: str, fingerprint: str, account_id: UUID, invoice_number: str, number: str,
        series: str, amount: Decimal, net: Decimal, tax: Decimal, currency: str, reason: str, issued_at: int,
        postings: list[dict[str, str]],
    ) -> None:
        self.invoice_id = invoice_id
        self.key = key
        self.fingerprint = fingerprint
        self.account_id = account_id
        self.invoice_number = invoice_number
        self.number = number
        self.amount = amount
        self.net = net
        self.tax = tax
        self.currency = currency
        self.reason = reason
        self.issued_at = issued_at


_INVOICE_TOPIC = get_topic(Invoice)
_DRAFTED: Any = Invoice.Drafted  # type: ignore[attr-defined]
_ISSUED: Any = Invoice.Issued  # type: ignore[attr-defined]


def new_invoice_events(drafted: dict[str, Any], issued: dict[str, Any], invoice: UUID | None = None,
                       ) -> tuple[Any, Any]:
    """The Drafted and Issued events of a new invoice, exactly as ``Invoice(**drafted)``
    then ``issue(**issued)`` record them (tests/test_billing_bulk.py compares the stored
    bytes), built directly: a billing run issues every invoice it drafts, and the aggregate
    round trip (construction, the command decorator, collecting) was a fifth of its time.
    ``invoice``: the invoice's id (``invoice_id`` of the account and period) when known
    already, as where it was drafted (the id's SHA-1 was ~4 % of the recording process's work)."""
    if invoice is None:
        invoice = invoice_id(drafted["account_id"], drafted["period"])
    return (_DRAFTED(originator_id=invoice, originator_version=1, timestamp=_DRAFTED.create_timestamp(),
                     originator_topic=_INVOICE_TOPIC, **drafted),
            _ISSUED(originator_id=invoice, originator_version=2, timestamp=_ISSUED.create_timestamp(), **issued))


# Fields of a new invoice's events that a billing run builds of strings and booleans (in lists
# and dicts) only: InvoiceLine.to_dict, InvoiceDraft.totals and tax_summary, the carried
# figures, journal.balanced. The transcoder walks every value for UUIDs to transcode; these
# hold none, and walking the lines was most of encoding an invoice.
_BUILT_PLAIN = frozenset({"lines", "totals", "tax_summary", "carried", "postings"})


# And, in a Drafted event a run drafts (``BillingRun._draft``), the usage billed: usage totals
# as read back from stored JSON (text and integers; ledger/period_usage.py, rating.invoicing.
# unbilled_usage). Walking them was about a twentieth of drafting an invoice.
_DRAFT_BUILT_PLAIN = _BUILT_PLAIN | {"usage_billed"}


def stored_invoice_event(mapper: Mapper[UUID], new_event: Any) -> StoredEvent:
    """``mapper.to_stored_event(new_event)`` for an event of ``new_invoice_events`` (the same
    bytes; tests/test_billing_bulk.py compares them on random invoices), encoded without
    walking the fields a run builds of plain strings. Any other configuration (another
    transcoder, compression, encryption, a class version) goes the mapper's way."""
    transcoder = mapper.transcoder
    if type(transcoder) is not FastJSONTranscoder or mapper.compressor is not None or mapper.cipher is not None \
            or getattr(type(new_event), "class_version", 1) != 1:
        return mapper.to_stored_event(new_event)
    state = dict(vars(new_event))
    originator_id = state.pop("originator_id")
    originator_version = state.pop("originator_version")
    try:
        # What FastJSONTranscoder.encode does, minus the walk of the plain fields.
        prepared = {key: value if key in _BUILT_PLAIN else transcoder._prepare(value)  # noqa: SLF001
                    for key, value in state.items()}
        encoded = orjson.dumps(prepared, default=transcoder._transcode,  # noqa: SLF001
                               option=orjson.OPT_PASSTHROUGH_DATETIME)
    except Exception:  # noqa: BLE001 - anything unusual: the mapper's own way decides
        return mapper.to_stored_event(new_event)
    return StoredEvent(originator_id=originator_id, originator_version=originator_version,
                       topic=get_topic(type(new_event)), state=encoded)


def drafted_state_tail(mapper: Mapper[UUID], drafted: dict[str, Any]) -> bytes | None:
    """The stored state of the Drafted event of ``new_invoice_events(drafted, ...)`` from its
    originator topic on: everything but the timestamp, which ``drafted_state`` puts in front
    when the event is made. Where an invoice is drafted (maybe another process), so that the
    process recording a run's invoices does not encode them. None when this configuration
    encodes events the mapper's way (then the recording process does)."""
    if not _encodes_quickly(mapper) or list(drafted) != _DRAFTED_FIELDS or getattr(_DRAFTED, "class_version", 1) != 1:
        return None  # another encoding, or not the fields in the event's order: the mapper's way
    # What stored_invoice_event encodes after the timestamp (the event's fields in its order);
    # the fields a run builds plain are not walked, nor values of the types the JSON encoders
    # write alike (the others' UUIDs become transcoded objects).
    transcoder: Any = mapper.transcoder

    def state() -> dict[str, Any]:
        fields = {"originator_topic": _INVOICE_TOPIC} | drafted
        for key in _DRAFT_WALKED:
            value = fields[key]
            if type(value) not in _WRITTEN_ALIKE:
                fields[key] = transcoder._prepare(value)  # noqa: SLF001
        return fields

    return _state_tail(transcoder, state)


def drafted_state(mapper: Mapper[UUID], timestamp: datetime, tail: bytes) -> bytes | None:
    """The stored state of a Drafted event made at ``timestamp`` whose ``drafted_state_tail``
    is ``tail`` (the mapper's bytes: tests/test_billing_bulk.py); None when this
    configuration encodes the timestamp some other way."""
    head = _timestamp_head(mapper, timestamp)
    return None if head is None else head + tail


def issued_state_tail(mapper: Mapper[UUID], subscriber: str, postings: list[dict[str, str]],
                      usage_versions: dict[str, int] | None) -> bytes | None:
    """The stored state of the Issued event of ``new_invoice_events`` from its subscriber on:
    what is known where the invoice is drafted (maybe another process), so that the process
    recording the run encodes only the number, the dates and the timestamp (``issued_state``).
    None when this configuration encodes events the mapper's way."""
    if not _encodes_quickly(mapper) or _ISSUED_FIELDS != _ISSUED_HEAD + _ISSUED_DRAFTED or \
            getattr(_ISSUED, "class_version", 1) != 1:
        return None
    transcoder: Any = mapper.transcoder
    return _state_tail(transcoder, lambda: {
        "subscriber": subscriber if type(subscriber) in _WRITTEN_ALIKE else transcoder._prepare(subscriber),  # noqa: SLF001
        "postings": postings,  # built plain (journal postings): not walked, as in stored_invoice_event
        "usage_versions": usage_versions if type(usage_versions) in _WRITTEN_ALIKE else
        transcoder._prepare(usage_versions)})  # noqa: SLF001


def _state_tail(transcoder: Any, state: Callable[[], dict[str, Any]]) -> bytes | None:
    """The members of the JSON object ``state()`` makes, encoded as the mapper's transcoder
    would, after a comma (they follow the timestamp put in front later); None for anything
    unusual (then the mapper's way, where the event is recorded)."""
    try:
        encoded: bytes = orjson.dumps(state(), default=transcoder._transcode,  # noqa: SLF001
                                      option=orjson.OPT_PASSTHROUGH_DATETIME)
    except Exception:  # noqa: BLE001 - anything unusual: the mapper's way, where it is recorded
        return None
    return b"," + encoded[1:]


def issued_state(mapper: Mapper[UUID], issued: Any, tail: bytes) -> bytes | None:
    """The stored state of ``issued`` (the Issued event of ``new_invoice_events``) whose
    ``issued_state_tail`` is ``tail``: the mapper's bytes (tests/test_billing_bulk.py); None
    when this configuration, or one of its values, is encoded some other way."""
    head = _timestamp_head(mapper, issued.timestamp)
    if head is None:
        return None
    fixed = {name: getattr(issued, name) for name in _ISSUED_HEAD[1:]}
    if any(type(value) not in _WRITTEN_ALIKE for value in fixed.values()):
        return None  # a value the transcoder would walk: the mapper's way
    try:
        encoded = orjson.dumps(fixed)
    except Exception:  # noqa: BLE001
        return None
    return head + b"," + encoded[1:-1] + tail


# The Issued event's own fields, in the order its stored state lists them: those fixed when
# it is issued, then those known where the invoice is drafted.
_ISSUED_FIELDS = [name for name in _ISSUED.__dataclass_fields__ if name not in ("originator_id", "originator_version")]
_ISSUED_HEAD = ["timestamp", "number", "series", "issued_at", "due_at"]
_ISSUED_DRAFTED = ["subscriber", "postings", "usage_versions"]

# The Drafted event's own fields, in the order its stored state lists them.
_DRAFTED_FIELDS = [name for name in _DRAFTED.__dataclass_fields__
                   if name not in ("originator_id", "originator_version", "timestamp", "originator_topic")]
# Those whose values ``drafted_state_tail`` walks for UUIDs, and the types both encoders write alike.
_DRAFT_WALKED = tuple(name for name in _DRAFTED_FIELDS if name not in _DRAFT_BUILT_PLAIN)
_WRITTEN_ALIKE = frozenset({str, int, bool, type(None)})


def _encodes_quickly(mapper: Mapper[UUID]) -> bool:
    """Whether ``mapper`` writes events as ``stored_invoice_event`` does (plain JSON by orjson)."""
    return type(mapper.transcoder) is FastJSONTranscoder and mapper.compressor is None and mapper.cipher is None


def _timestamp_head(mapper: Mapper[UUID], timestamp: datetime) -> bytes | None:
    """``{"timestamp":<encoded>``: how a state encoded by ``stored_invoice_event`` begins.
    Two per invoice, which the transcoder's own way (its datetime transcoding, called back by
    orjson) made ~5 % of the recording process's main thread at 100k accounts: the head of a
    reference moment with the timestamp's ISO text in place of the reference's, when the
    transcoder writes moments so (``_head_template``); else the transcoder's own way."""
    if not _encodes_quickly(mapper):
        return None
    transcoder = mapper.transcoder
    key = (id(transcoder), timestamp.tzinfo)
    found = _HEAD_TEMPLATES.get(key)
    if found is None or found[0] is not transcoder:
        if len(_HEAD_TEMPLATES) > 64:  # transcoders come and go (one per application)
            _HEAD_TEMPLATES.clear()
        found = _HEAD_TEMPLATES[key] = (transcoder, _head_template(transcoder, timestamp.tzinfo))
    template = found[1]
    if template is not None and type(timestamp) is datetime:
        return template[0] + timestamp.isoformat().encode() + template[1]
    encoded = transcoder.encode({"timestamp": timestamp})
    return encoded[:-1] if encoded.endswith(b"}") else None


_HEAD_TEMPLATES: dict[tuple[int, Any], tuple[Any, tuple[bytes, bytes] | None]] = {}


def _head_template(transcoder: Any, tzinfo: Any) -> tuple[bytes, bytes] | None:
    """What comes before and after a moment's ISO text in ``{"timestamp":<encoded>`` as the
    transcoder writes it, for moments in ``tzinfo``: found by encoding two references (with
    and without microseconds, which ISO text writes differently); None when the transcoder
    does not write both as their ISO text between the same bytes."""
    parts = set()
    for microsecond in (789012, 0):
        reference = datetime(2001, 2, 3, 4, 5, 6, microsecond, tzinfo=tzinfo)
        encoded = transcoder.encode({"timestamp": reference})
        text = reference.isoformat().encode()
        if not encoded.endswith(b"}") or encoded.count(text) != 1:
            return None
        before, after = encoded[:-1].split(text)
        parts.add((before, after))
    return parts.pop() if len(parts) == 1 else None
