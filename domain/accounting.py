"""The normalised accounting record: one RADIUS Accounting-Request, vendor-neutral.

Everything downstream (the accounting log, the rater, replication) works on this value,
never on raw packets. Timestamps are integer seconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import hashlib
import json
import operator
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

COUNTER_MAX = (1 << 64) - 1


class StatusType(StrEnum):
    """Acct-Status-Type (RFC 2866 section 5.1) values the ledger understands."""

    START = "start"
    STOP = "stop"
    INTERIM = "interim"
    ACCOUNTING_ON = "accounting-on"
    ACCOUNTING_OFF = "accounting-off"

    @classmethod
    def from_code(cls, code: int) -> StatusType:
        try:
            return _STATUS_BY_CODE[code]
        except KeyError:
            raise ValueError(f"unsupported Acct-Status-Type {code}") from None

    @property
    def closes_nas(self) -> bool:
        """Accounting-On/Off: the NAS (re)started, all of its sessions are over."""
        return self in _CLOSING_NAS


# A module tuple: each StatusType.X lookup goes through EnumType's __getattr__ hook, which
# made this property ~3k instructions, paid for every record the domain checks.
_CLOSING_NAS = (StatusType.ACCOUNTING_ON, StatusType.ACCOUNTING_OFF)

_STATUS_BY_CODE = {
    1: StatusType.START,
    2: StatusType.STOP,
    3: StatusType.INTERIM,
    7: StatusType.ACCOUNTING_ON,
    8: StatusType.ACCOUNTING_OFF,
}


def counter64(octets: int, gigawords: int) -> int:
    """Combine a 32-bit octet counter with its Gigawords wrap count (RFC 2869)."""
    if not 0 <= octets < (1 << 32) or not 0 <= gigawords < (1 << 32):
        raise ValueError("octets and gigawords are unsigned 32-bit values")
    return (gigawords << 32) | octets


@dataclass(frozen=True, slots=True)
class AccountingRecord:
    """One accounting record, as received from a NAS and verified.

    ``event_time`` is when the NAS says the event happened: Event-Timestamp when sent,
    otherwise receive time minus Acct-Delay-Time. ``session_start`` derives from it and
    Acct-Session-Time and, with the NAS and Acct-Session-Id, identifies the session across
    Acct-Session-Id reuse after a NAS reboot.
    """

    nas_id: str
    status: StatusType
    event_time: int
    received_at: int
    acct_session_id: str = ""
    username: str = ""
    session_time: int = 0
    input_octets: int = 0
    output_octets: int = 0
    input_packets: int = 0
    output_packets: int = 0
    delay_time: int = 0
    event_timestamp_sent: bool = False
    nas_ip: str = ""
    framed_ip: str = ""
    calling_station_id: str = ""
    terminate_cause: str = ""
    multi_session_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.status, self.acct_session_id, self.input_octets, self.output_octets,
               self.session_time, self.delay_time)

    @staticmethod
    def of(nas_id: str, status: StatusType, event_time: int, received_at: int, acct_session_id: str,
           username: str, session_time: int, input_octets: int, output_octets: int, input_packets: int,
           output_packets: int, delay_time: int, event_timestamp_sent: bool, nas_ip: str, framed_ip: str,
           calling_station_id: str, terminate_cause: str, multi_session_id: str,
           extra: dict[str, str]) -> AccountingRecord:
        """``AccountingRecord(...)`` with every field given: the same checks, errors and record
        (equal, hashed, frozen, replaced and written alike) in a fraction of the instructions.
        The generated ``__init__`` of a frozen dataclass sets each of the 19 fields through
        ``object.__setattr__``, which was most of the cost of a record in the RADIUS child and
        again in the rater (``from_dict``). Here the fields are assigned to a plain object with
        the same slots, which then becomes an AccountingRecord (``__class__`` assignment
        between layouts CPython checks are identical)."""
        _check(status, acct_session_id, input_octets, output_octets, session_time, delay_time)
        record: Any = _Assignable()
        record.nas_id = nas_id
        record.status = status
        record.event_time = event_time
        record.received_at = received_at
        record.acct_session_id = acct_session_id
        record.username = username
        record.session_time = session_time
        record.input_octets = input_octets
        record.output_octets = output_octets
        record.input_packets = input_packets
        record.output_packets = output_packets
        record.delay_time = delay_time
        record.event_timestamp_sent = event_timestamp_sent
        record.nas_ip = nas_ip
        record.framed_ip = framed_ip
        record.calling_station_id = calling_station_id
        record.terminate_cause = terminate_cause
        record.multi_session_id = multi_session_id
        record.extra = extra
        record.__class__ = AccountingRecord
        built: AccountingRecord = record
        return built

    @property
    def session_start(self) -> int:
        return self.event_time - self.session_time

    @property
    def session_time_unknown(self) -> bool:
        return session_time_unknown(self.status, self.session_time)

    def idempotency_key(self) -> str:
        """Content key: the same record re-sent (new Identifier, other instance, other site)
        has the same key. Deliberately excludes the UDP tuple, Identifier, Acct-Delay-Time and
        receive time, which change between retransmissions. The event time is included only
        when the NAS sent Event-Timestamp (otherwise it depends on the receive time), and for
        Accounting-On/Off, which carry no counters: a second reboot is a second event. A
        duplicate Accounting-On that slips through is harmless (closing is idempotent)."""
        parts = [
            self.nas_id,
            self.acct_session_id,
            self.status._value_,  # what .value returns, without Enum's property call (~1.7k instructions)
            str(self.event_time) if self.event_timestamp_sent or self.status.closes_nas else "",
            str(self.session_time),
            str(self.input_octets),
            str(self.output_octets),
            str(self.input_packets),
            str(self.output_packets),
        ]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _FIELDS}
        data["status"] = self.status._value_
        data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccountingRecord:
        """The record ``to_dict`` wrote (an unknown or missing key is a TypeError, as for the
        constructor; an optional one missing takes its default)."""
        if cls is AccountingRecord and type(data) is dict and len(data) == len(_FIELDS):
            # Every field, as to_dict writes them (the accounting log, the Kafka topic): the
            # record is built by ``of``, without the generic keyword call and the constructor.
            try:
                values = _field_values(data)
            except KeyError:
                pass  # as many keys as fields but one of them unknown: the constructor's TypeError
            else:
                return _from_values(*values)
        values = dict(data)
        values["status"] = StatusType(values["status"])
        values["extra"] = dict(values.get("extra") or {})
        return cls(**values)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> AccountingRecord:
        return cls.from_dict(json.loads(raw))


_FIELDS = tuple(f.name for f in fields(AccountingRecord))
# A mapping's values in field order (KeyError if one is missing).
_field_values = operator.itemgetter(*_FIELDS)
_STATUS_BY_VALUE = {status.value: status for status in StatusType}


def _from_values(nas_id: str, status: Any, event_time: int, received_at: int, acct_session_id: str,
                 username: str, session_time: int, input_octets: int, output_octets: int, input_packets: int,
                 output_packets: int, delay_time: int, event_timestamp_sent: bool, nas_ip: str, framed_ip: str,
                 calling_station_id: str, terminate_cause: str, multi_session_id: str,
                 extra: Any) -> AccountingRecord:
    """``from_dict`` of a dict with every field: the status read as ``StatusType(...)`` reads
    it (a table for the five values, the enum itself for anything else and its error), and
    ``extra`` copied."""
    known = _STATUS_BY_VALUE.get(status) if type(status) is str else None
    return AccountingRecord.of(
        nas_id, StatusType(status) if known is None else known, event_time, received_at, acct_session_id,
        username, session_time, input_octets, output_octets, input_packets, output_packets, delay_time,
        event_timestamp_sent, nas_ip, framed_ip, calling_station_id, terminate_cause, multi_session_id,
        dict(extra or {}))


class _Assignable:
    """The slots of an AccountingRecord without its frozen ``__setattr__``: what
    ``AccountingRecord.of`` fills before the object becomes a record."""

    __slots__ = _FIELDS


def _check(status: StatusType, acct_session_id: str, input_octets: int, output_octets: int,
           session_time: int, delay_time: int) -> None:
    """The record's invariants, in the order the constructor has always checked them."""
    if not 0 <= input_octets <= COUNTER_MAX:
        raise ValueError(f"input_octets out of the 64-bit counter range: {input_octets}")
    if not 0 <= output_octets <= COUNTER_MAX:
        raise ValueError(f"output_octets out of the 64-bit counter range: {output_octets}")
    if session_time < 0 or delay_time < 0:
        raise ValueError("session and delay times cannot be negative")
    if not status.closes_nas and not acct_session_id:
        raise ValueError("Acct-Session-Id is required for Start, Interim-Update and Stop")


_SESSION_TIME_OPTIONAL = frozenset({StatusType.INTERIM, StatusType.STOP})


def session_time_unknown(status: str, session_time: int) -> bool:
    """Whether a record of ``status`` (a StatusType or its value) with ``session_time`` is an
    Interim-Update or Stop without Acct-Session-Time (an absent attribute reads as 0; RFC 2866
    defines it for Stop only, and some NAS leave it out of Interim-Updates): its session's
    start cannot be derived from it."""
    return session_time == 0 and status in _SESSION_TIME_OPTIONAL
