"""The Session aggregate: every incarnation of one Acct-Session-Id on one NAS.

A NAS may reuse an Acct-Session-Id after it reboots, so the aggregate (named by NAS and
Acct-Session-Id) holds incarnations told apart by their start time (event time minus
Acct-Session-Time). Counters are cumulative per incarnation; each record becomes one
RecordApplied event carrying the usage delta; the BillingPeriod prices it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.accounting import AccountingRecord, StatusType, session_time_unknown
from domain.ids import session_id
from rating import UsageDelta, counter_delta

from .emit import emit

# Start times derived without Event-Timestamp jitter by the network delay; two starts closer
# than this are the same incarnation. A NAS reboot that reuses an id is far slower than this.
START_TOLERANCE = 120
# Content keys of applied records are remembered this long (event time, behind the newest):
# a retransmission or re-submission inside it is recognised exactly. An older duplicate is
# still charged nothing, by the counters: it is older than what was seen and its cumulative
# counters are not above it (rating.usage.counter_delta). Without a horizon a session lasting
# weeks would carry thousands of keys in every snapshot (snapshots grow quadratically).
SEEN_HORIZON = 86_400
SEEN_PRUNE_AT = 128
_FIND = object()  # apply_record's incarnation, when the caller did not look it up


class Session(Aggregate):
    INITIAL_VERSION = 1

    @staticmethod
    @lru_cache(maxsize=65_536)  # named once or twice per record: uuid5 is not free
    def create_id(nas_id: str, acct_session_id: str) -> UUID:
        return session_id(nas_id, acct_session_id)

    @event("Registered")
    def __init__(self, nas_id: str, acct_session_id: str) -> None:
        self.nas_id = nas_id
        self.acct_session_id = acct_session_id
        self.incarnations: dict[str, dict[str, Any]] = {}
        self.seen: dict[str, int] = {}

    def incarnation_for(self, start: int) -> str | None:
        for key, inc in self.incarnations.items():
            if abs(inc["start"] - start) <= START_TOLERANCE:
                return key
        return None

    def incarnation_of(self, record: AccountingRecord) -> str | None:
        """The incarnation ``record`` belongs to; None: a new one. Its start is event time minus
        Acct-Session-Time, matched within START_TOLERANCE. An Interim-Update or Stop without
        that attribute (``session_time_unknown``) cannot say when its session started, so it
        belongs to an incarnation not closed before its event time: the latest that started
        before it, else the earliest that started after it (first seen through a later
        record); only when every incarnation was closed before it (the id used again after a
        Stop or a NAS reboot) does it start one. A Start older than the first record of an
        incarnation first seen that way is its late Start. Otherwise each such Interim-Update
        would start an incarnation of its own and charge its cumulative counters again from
        zero."""
        found = self.incarnation_for(record.session_start)
        start_record = record.status is StatusType.START
        if found is not None or not (start_record or record.session_time_unknown):
            return found
        at = record.event_time
        before: str | None = None
        after: str | None = None
        for key, inc in self.incarnations.items():
            if inc["closed_at"] is not None and inc["closed_at"] < at:
                continue
            if inc["start"] <= at:
                if before is None or inc["start"] > self.incarnations[before]["start"]:
                    before = key
            elif after is None or inc["start"] < self.incarnations[after]["start"]:
                after = key
        if start_record:
            return after if after is not None and self.incarnations[after].get("start_unknown") else None
        return before if before is not None else after

    def open_incarnations(self) -> list[str]:
        return [key for key, inc in self.incarnations.items() if inc["closed_at"] is None]

    def apply_record(self, record: AccountingRecord, account_id: UUID | None,
                     key: str | None = None, incarnation: str | None | object = _FIND) -> UsageDelta | None:
        """Apply one record; returns the usage it carries (over its interval), or None when
        the record was seen before (no event). Pricing is the billing period's job. ``key``:
        the record's idempotency_key() when the caller has it already (a sha256 each);
        ``incarnation``: what incarnation_of(record) returns, likewise."""
        if key is None:
            key = record.idempotency_key()
        if key in self.seen:
            return None
        inc_key = (self.incarnation_of(record) if incarnation is _FIND
                   else cast("str | None", incarnation))
        opened = inc_key is None
        if inc_key is None:
            inc_key = str(record.session_start)
            last_in = last_out = 0
            last_time = record.session_start
        else:
            inc = self.incarnations[inc_key]
            last_in, last_out, last_time = inc["input"], inc["output"], inc["last_event_time"]
        newer = record.event_time >= last_time
        usage = UsageDelta(
            start=min(last_time, record.event_time),
            end=record.event_time if newer else last_time,
            upload_bytes=counter_delta(last_in, record.input_octets, newer=newer),
            download_bytes=counter_delta(last_out, record.output_octets, newer=newer),
        )
        emit(
            self, Session.RecordApplied,  # type: ignore[attr-defined]
            key=key,
            incarnation=inc_key,
            opened=opened,
            status=record.status.value,
            username=record.username,
            event_time=record.event_time,
            session_time=record.session_time,
            input_total=max(last_in, record.input_octets) if not newer else record.input_octets,
            output_total=max(last_out, record.output_octets) if not newer else record.output_octets,
            interval_start=usage.start,
            interval_end=usage.end,
            upload_bytes=usage.upload_bytes,
            download_bytes=usage.download_bytes,
            account_id=account_id,
            framed_ip=record.framed_ip,
            nas_ip=record.nas_ip,
            calling_station_id=record.calling_station_id,
            terminate_cause=record.terminate_cause,
            closes=record.status is StatusType.STOP,
        )
        return usage

    @event("RecordApplied")
    def _record_applied(
        self,
        key: str,
        incarnation: str,
        opened: bool,
        status: str,
        username: str,
        event_time: int,
        session_time: int,
        input_total: int,
        output_total: int,
        interval_start: int,
        interval_end: int,
        upload_bytes: int,
        download_bytes: int,
        account_id: UUID | None,
        framed_ip: str,
        nas_ip: str,
        calling_station_id: str,
        terminate_cause: str,
        closes: bool,
    ) -> None:
        self.seen[key] = event_time
        if len(self.seen) >= self.__dict__.get("seen_prune_at", SEEN_PRUNE_AT):
            newest = max(self.seen.values())
            self.seen = {k: t for k, t in self.seen.items() if t >= newest - SEEN_HORIZON}
            # Prune again when the kept set has doubled: amortised O(1) per record.
            self.seen_prune_at = max(SEEN_PRUNE_AT, 2 * len(self.seen))
        inc = self.incarnations.setdefault(
            incarnation,
            {"start": int(incarnation), "closed_at": None, "input": 0, "output": 0,
             "last_event_time": int(incarnation), "username": username, "account_id": None},
        )
        if opened and session_time_unknown(status, session_time):
            inc["start_unknown"] = True  # first seen through a record without Acct-Session-Time
        inc["last_event_time"] = max(inc["last_event_time"], event_time)
        inc["input"], inc["output"] = input_total, output_total
        if account_id is not None:
            inc["account_id"] = str(account_id)
        if username:
            inc["username"] = username
        if closes and inc["closed_at"] is None:
            inc["closed_at"] = event_time

    def close_by_nas(self, event_time: int, cause: str) -> list[str]:
        """Accounting-On/Off: every incarnation open at ``event_time`` ends then. One that
        started at or after it began after the reboot (the Accounting-On arrived late)."""
        closed = [key for key in self.open_incarnations() if self.incarnations[key]["start"] < event_time]
        for inc_key in closed:
            emit(self, Session.ClosedByNas, incarnation=inc_key, event_time=event_time, cause=cause)  # type: ignore[attr-defined]
        return closed

    @event("ClosedByNas")
    def _closed_by_nas(self, incarnation: str, event_time: int, cause: str) -> None:
        inc = self.incarnations[incarnation]
        if inc["closed_at"] is None:
            inc["closed_at"] = max(event_time, inc["start"])
