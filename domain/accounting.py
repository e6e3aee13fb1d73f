"""The normalised accounting record: one RADIUS Accounting-Request, vendor-neutral.

Everything downstream (the accounting log, the rater, replication) works on this value,
never on raw packets. Timestamps are integer seconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import hashlib
import json
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
        return self in (StatusType.ACCOUNTING_ON, StatusType.ACCOUNTING_OFF)


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
        for name in ("input_octets", "output_octets"):
            value = getattr(self, name)
            if not 0 <= value <= COUNTER_MAX:
                raise ValueError(f"{name} out of the 64-bit counter range: {value}")
        if self.session_time < 0 or self.delay_time < 0:
            raise ValueError("session and delay times cannot be negative")
        if not self.status.closes_nas and not self.acct_session_id:
            raise ValueError("Acct-Session-Id is required for Start, Interim-Update and Stop")

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
            self.status.value,
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
        data["status"] = self.status.value
        data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccountingRecord:
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


_SESSION_TIME_OPTIONAL = frozenset({StatusType.INTERIM, StatusType.STOP})


def session_time_unknown(status: str, session_time: int) -> bool:
    """Whether a record of ``status`` (a StatusType or its value) with ``session_time`` is an
    Interim-Update or Stop without Acct-Session-Time (an absent attribute reads as 0; RFC 2866
    defines it for Stop only, and some NAS leave it out of Interim-Updates): its session's
    start cannot be derived from it."""
    return session_time == 0 and status in _SESSION_TIME_OPTIONAL
