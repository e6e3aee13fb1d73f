"""RADIUS packet codec: Accounting-Request in, AccountingRecord out; Accounting-Response,
Status-Server and CoA / Disconnect (RFC 5176) packets both ways. Pure: bytes in, bytes
or values out, no sockets.

Authenticators are checked on the raw datagram, not on a re-encoded packet: pyrad's
Packet groups repeated attributes, so re-encoding can reorder them and break the
digests, and pyrad never checks a Message-Authenticator on Accounting-Request. The
attribute walk is our own too: verify + decode + record here runs faster than pyrad's
Packet decoding alone, which also truncates an attribute that overruns the packet
instead of rejecting it. pyrad provides the dictionary (names, data types, named
values) and value encoding.

Every problem with a received packet raises PacketDropped with a DropReason; the
server drops the datagram without an answer (RFC 2865 section 3, RFC 2866 section 3),
so a NAS retransmits and a forger learns nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeAlias

from pyrad import tools
from pyrad.dictionary import Dictionary

from domain.accounting import AccountingRecord, StatusType, counter64

__all__ = [
    "ACCESS_ACCEPT",
    "ACCOUNTING_REQUEST",
    "ACCOUNTING_RESPONSE",
    "COA_ACK",
    "COA_NAK",
    "COA_REQUEST",
    "DISCONNECT_ACK",
    "DISCONNECT_NAK",
    "DISCONNECT_REQUEST",
    "STATUS_SERVER",
    "DropReason",
    "PacketDropped",
    "decode_accounting",
    "decode_coa_reply",
    "encode_accounting_request",
    "encode_accounting_response",
    "encode_coa_request",
    "encode_status_server_response",
    "load_dictionary",
    "peek_header",
    "verify_accounting_request",
    "verify_status_server",
]

ACCESS_ACCEPT = 2
ACCOUNTING_REQUEST = 4
ACCOUNTING_RESPONSE = 5
STATUS_SERVER = 12
DISCONNECT_REQUEST = 40
DISCONNECT_ACK = 41
DISCONNECT_NAK = 42
COA_REQUEST = 43
COA_ACK = 44
COA_NAK = 45

HEADER_LENGTH = 20
MAX_PACKET_LENGTH = 4096  # RFC 2865 section 3
DICTIONARY_DIR = Path(__file__).parent / "dictionaries"

_ZERO16 = bytes(16)
_HEADER = struct.Struct("!BBH")
_VENDOR_SPECIFIC = 26
_PROXY_STATE = 33
_MESSAGE_AUTHENTICATOR = 80
# Message-Authenticator goes first in packets we build: the BlastRADIUS (CVE-2024-3596)
# countermeasure, its value is computed over the packet with these zeros in place.
_MA_PLACEHOLDER = bytes((_MESSAGE_AUTHENTICATOR, 18)) + _ZERO16

# Attributes to encode: a dictionary name (with ":tag" for a tagged one) and its value,
# or a code / (vendor id, code) and raw bytes; a list value repeats the attribute.
AttributeKey: TypeAlias = str | int | tuple[int, int]
AttributeValue: TypeAlias = str | int | bytes
Attributes: TypeAlias = (
    Mapping[AttributeKey, AttributeValue | list[AttributeValue]]
    | Iterable[tuple[AttributeKey, AttributeValue | list[AttributeValue]]]
)


class DropReason(StrEnum):
    """Why a received datagram was dropped (a metrics label, so keep values stable)."""

    MALFORMED = "malformed"
    BAD_AUTHENTICATOR = "bad-authenticator"
    MISSING_MESSAGE_AUTHENTICATOR = "missing-message-authenticator"
    BAD_MESSAGE_AUTHENTICATOR = "bad-message-authenticator"
    UNSUPPORTED_CODE = "unsupported-code"
    UNSUPPORTED_STATUS = "unsupported-status"
    INVALID_RECORD = "invalid-record"
    UNKNOWN_NAS = "unknown-nas"  # raised by the caller: the codec never sees the source


class PacketDropped(Exception):
    """A received packet that must be dropped without an answer."""

    def __init__(self, reason: DropReason, message: str = "") -> None:
        super().__init__(f"{reason.value}: {message}" if message else reason.value)
        self.reason = reason
        self.message = message


@lru_cache(maxsize=1)
def load_dictionary() -> Dictionary:
    """The pyrad Dictionary of this package's dictionary files (read once, cached)."""
    return Dictionary(str(DICTIONARY_DIR / "dictionary"))


# ---------------------------------------------------------------------------- framing


def peek_header(data: bytes) -> tuple[int, int, bytes]:
    """Return (code, identifier, authenticator) of a datagram after the RFC 2865 section 3
    length checks: fewer than 20 octets, a Length below 20, above 4096 or above the
    datagram size is MALFORMED. Octets beyond Length are padding and ignored."""
    _frame(data)
    return data[0], data[1], bytes(data[4:20])


def _frame(data: bytes) -> int:
    """Check the header and return the packet length."""
    if len(data) < HEADER_LENGTH:
        raise PacketDropped(DropReason.MALFORMED, f"datagram of {len(data)} octets")
    length = (data[2] << 8) | data[3]
    if length < HEADER_LENGTH or length > MAX_PACKET_LENGTH or length > len(data):
        raise PacketDropped(DropReason.MALFORMED, f"Length field {length}, datagram of {len(data)} octets")
    return length


def _walk(data: bytes, length: int) -> tuple[list[tuple[int, bytes]], int]:
    """Split the attributes; return them and the offset of the Message-Authenticator
    (-1 if none). Attributes must fill the packet exactly (as FreeRADIUS requires):
    anything else cannot be parsed unambiguously, so it is MALFORMED."""
    attributes: list[tuple[int, bytes]] = []
    ma_offset = -1
    pos = HEADER_LENGTH
    while pos < length:
        if length - pos < 2:
            raise PacketDropped(DropReason.MALFORMED, "truncated attribute header")
        atype = data[pos]
        alen = data[pos + 1]
        if alen < 2 or pos + alen > length:
            raise PacketDropped(DropReason.MALFORMED, f"attribute {atype} has length {alen}")
        if atype == 0:
            raise PacketDropped(DropReason.MALFORMED, "attribute type 0")
        if atype == _MESSAGE_AUTHENTICATOR:
            if alen != 18 or ma_offset >= 0:
                raise PacketDropped(DropReason.MALFORMED, "bad or repeated Message-Authenticator")
            ma_offset = pos
        attributes.append((atype, data[pos + 2 : pos + alen]))
        pos += alen
    return attributes, ma_offset


def _message_authenticator(data: bytes, length: int, ma_offset: int, secret: bytes, vector: bytes) -> bytes:
    """HMAC-MD5 over the packet with ``vector`` in the Authenticator field and the
    Message-Authenticator value zeroed (RFC 3579 section 3.2, RFC 5176 section 3.3)."""
    message = b"".join(
        (
            data[:4],
            vector,
            data[HEADER_LENGTH : ma_offset + 2],
            _ZERO16,
            data[ma_offset + 18 : length],
        )
    )
    return hmac.digest(secret, message, "md5")


def _check_message_authenticator(
    data: bytes, length: int, ma_offset: int, secret: bytes, vector: bytes
) -> None:
    expected = _message_authenticator(data, length, ma_offset, secret, vector)
    if not hmac.compare_digest(expected, data[ma_offset + 2 : ma_offset + 18]):
        raise PacketDropped(DropReason.BAD_MESSAGE_AUTHENTICATOR, "Message-Authenticator mismatch")


# -------------------------------------------------------------------------- accounting


def verify_accounting_request(data: bytes, secret: bytes, *, require_message_authenticator: bool) -> None:
    """Verify an Accounting-Request: framing, the Request Authenticator (RFC 2866 section 3)
    and the Message-Authenticator, checked when present and required when the flag is set.
    Raises PacketDropped."""
    _verify_accounting(data, secret, require_message_authenticator)


def _verify_accounting(
    data: bytes, secret: bytes, require_message_authenticator: bool
) -> tuple[list[tuple[int, bytes]], int]:
    """The attributes of a verified Accounting-Request and its Message-Authenticator's
    offset (-1 when it has none)."""
    length = _frame(data)
    if data[0] != ACCOUNTING_REQUEST:
        raise PacketDropped(DropReason.UNSUPPORTED_CODE, f"code {data[0]}")
    attributes, ma_offset = _walk(data, length)
    _check_accounting_authenticators(data, length, ma_offset, secret, require_message_authenticator)
    return attributes, ma_offset


def _check_accounting_authenticators(
    data: bytes, length: int, ma_offset: int, secret: bytes, require_message_authenticator: bool
) -> None:
    """The Message-Authenticator's presence when required, the Request Authenticator, then
    the Message-Authenticator when present (the order decides which reason a drop counts)."""
    if ma_offset < 0 and require_message_authenticator:
        raise PacketDropped(DropReason.MISSING_MESSAGE_AUTHENTICATOR)
    expected = hashlib.md5(b"".join((data[:4], _ZERO16, data[HEADER_LENGTH:length], secret))).digest()
    if not hmac.compare_digest(expected, data[4:20]):
        raise PacketDropped(DropReason.BAD_AUTHENTICATOR, "Request Authenticator mismatch")
    if ma_offset >= 0:
        # The Message-Authenticator of an Accounting-Request is computed with 16 zero
        # octets as Request Authenticator (which is computed afterwards, over it).
        _check_message_authenticator(data, length, ma_offset, secret, _ZERO16)


# The standard attributes AccountingRecord fields are made of; the first occurrence of
# each goes into its field, the rest of the packet into ``extra``.
_USER_NAME = 1
_NAS_IP_ADDRESS = 4
_FRAMED_IP_ADDRESS = 8
_CALLING_STATION_ID = 31
_ACCT_STATUS_TYPE = 40
_ACCT_DELAY_TIME = 41
_ACCT_INPUT_OCTETS = 42
_ACCT_OUTPUT_OCTETS = 43
_ACCT_SESSION_ID = 44
_ACCT_SESSION_TIME = 46
_ACCT_INPUT_PACKETS = 47
_ACCT_OUTPUT_PACKETS = 48
_ACCT_TERMINATE_CAUSE = 49
_ACCT_MULTI_SESSION_ID = 50
_ACCT_INPUT_GIGAWORDS = 52
_ACCT_OUTPUT_GIGAWORDS = 53
_EVENT_TIMESTAMP = 55
_RECORD_ATTRIBUTES = frozenset(
    {
        _USER_NAME,
        _NAS_IP_ADDRESS,
        _FRAMED_IP_ADDRESS,
        _CALLING_STATION_ID,
        _ACCT_STATUS_TYPE,
        _ACCT_DELAY_TIME,
        _ACCT_INPUT_OCTETS,
        _ACCT_OUTPUT_OCTETS,
        _ACCT_SESSION_ID,
        _ACCT_SESSION_TIME,
        _ACCT_INPUT_PACKETS,
        _ACCT_OUTPUT_PACKETS,
        _ACCT_TERMINATE_CAUSE,
        _ACCT_MULTI_SESSION_ID,
        _ACCT_INPUT_GIGAWORDS,
        _ACCT_OUTPUT_GIGAWORDS,
        _EVENT_TIMESTAMP,
    }
)


def decode_accounting(
    data: bytes,
    secret: bytes,
    *,
    nas_id: str,
    received_at: int,
    require_message_authenticator: bool = False,
) -> AccountingRecord:
    """Verify an Accounting-Request (see verify_accounting_request) and normalise it.

    Input octets are the subscriber's upload (RFC 2866: received from the port).
    ``event_time`` is Event-Timestamp when sent, else ``received_at`` minus
    Acct-Delay-Time. Attributes that are not record fields go into ``extra`` as
    ``{name: text}``, undefined ones as ``{"<vendor>:<type>": hex}`` with vendor 0 for
    standard attributes; repeats get keys ``name#2``, ``name#3``, ... Raises
    PacketDropped: UNSUPPORTED_STATUS for an Acct-Status-Type the ledger does not know,
    INVALID_RECORD for a missing or malformed field (e.g. no Acct-Session-Id on
    Start, Interim-Update or Stop).
    """
    attributes, _ = _verify_accounting(data, secret, require_message_authenticator)
    return _record(attributes, nas_id, received_at)


def decode_accounting_with_response(
    data: bytes,
    secret: bytes,
    *,
    nas_id: str,
    received_at: int,
    require_message_authenticator: bool = False,
) -> tuple[AccountingRecord, bytes]:
    """``decode_accounting`` and the Accounting-Response to send once the record is durable
    (``encode_accounting_response`` of the same request), from one walk of the packet that
    also sorts the attributes into record fields, the rest and the Proxy-States: the server
    answers every record it stores, and this is its CPU time per packet. The same checks in
    the same order as ``decode_accounting`` (tests/test_radius_codec.py compares the two on
    random and mangled packets)."""
    length = _frame(data)
    if data[0] != ACCOUNTING_REQUEST:
        raise PacketDropped(DropReason.UNSUPPORTED_CODE, f"code {data[0]}")
    fields: dict[int, bytes] = {}
    others: list[tuple[int, bytes]] = []
    proxy_states: list[bytes] = []
    ma_offset = -1
    record_attributes = _RECORD_ATTRIBUTES
    pos = HEADER_LENGTH
    while pos < length:
        if length - pos < 2:
            raise PacketDropped(DropReason.MALFORMED, "truncated attribute header")
        atype = data[pos]
        alen = data[pos + 1]
        end = pos + alen
        if alen < 2 or end > length:
            raise PacketDropped(DropReason.MALFORMED, f"attribute {atype} has length {alen}")
        if atype in record_attributes and atype not in fields:
            fields[atype] = data[pos + 2 : end]
        elif atype == _MESSAGE_AUTHENTICATOR:
            if alen != 18 or ma_offset >= 0:
                raise PacketDropped(DropReason.MALFORMED, "bad or repeated Message-Authenticator")
            ma_offset = pos
        elif atype == 0:
            raise PacketDropped(DropReason.MALFORMED, "attribute type 0")
        else:
            others.append((atype, data[pos + 2 : end]))
            if atype == _PROXY_STATE:
                proxy_states.append(data[pos:end])
        pos = end
    _check_accounting_authenticators(data, length, ma_offset, secret, require_message_authenticator)
    record = _record_fast(fields, others, nas_id, received_at)
    return record, _response(data, secret, b"".join(proxy_states), ma_offset >= 0, ma_vector=_ZERO16)


def _record(attributes: list[tuple[int, bytes]], nas_id: str, received_at: int) -> AccountingRecord:
    """Normalise the attributes of a verified Accounting-Request (see decode_accounting)."""
    fields: dict[int, bytes] = {}
    others: list[tuple[int, bytes]] = []
    for atype, value in attributes:
        if atype in _RECORD_ATTRIBUTES and atype not in fields:
            fields[atype] = value
        elif atype != _MESSAGE_AUTHENTICATOR:
            others.append((atype, value))
    return _record_of(fields, others, nas_id, received_at)


def _record_of(fields: dict[int, bytes], others: list[tuple[int, bytes]], nas_id: str,
               received_at: int) -> AccountingRecord:
    """The record of a verified Accounting-Request: ``fields`` the first occurrence of each
    record attribute, ``others`` every other attribute but the Message-Authenticator, in
    packet order (they go into ``extra``)."""
    extra = _extra_of(others)
    status_value = fields.get(_ACCT_STATUS_TYPE)
    if status_value is None:
        raise PacketDropped(DropReason.INVALID_RECORD, "no Acct-Status-Type")
    status_code = _u32(status_value, "Acct-Status-Type")
    try:
        status = StatusType.from_code(status_code)
    except ValueError as exc:
        raise PacketDropped(DropReason.UNSUPPORTED_STATUS, str(exc)) from None

    get = fields.get
    delay = _u32(get(_ACCT_DELAY_TIME), "Acct-Delay-Time")
    timestamp = get(_EVENT_TIMESTAMP)
    event_time = received_at - delay if timestamp is None else _u32(timestamp, "Event-Timestamp")
    cause = get(_ACCT_TERMINATE_CAUSE)
    terminate_cause = ""
    if cause is not None:
        _u32(cause, "Acct-Terminate-Cause")
        terminate_cause = _specs()[_ACCT_TERMINATE_CAUSE].names.get(cause) or str(int.from_bytes(cause, "big"))
    try:
        return AccountingRecord(
            nas_id=nas_id,
            status=status,
            event_time=event_time,
            received_at=received_at,
            acct_session_id=_text(get(_ACCT_SESSION_ID, b"")),
            username=_text(get(_USER_NAME, b"")),
            session_time=_u32(get(_ACCT_SESSION_TIME), "Acct-Session-Time"),
            input_octets=counter64(
                _u32(get(_ACCT_INPUT_OCTETS), "Acct-Input-Octets"),
                _u32(get(_ACCT_INPUT_GIGAWORDS), "Acct-Input-Gigawords"),
            ),
            output_octets=counter64(
                _u32(get(_ACCT_OUTPUT_OCTETS), "Acct-Output-Octets"),
                _u32(get(_ACCT_OUTPUT_GIGAWORDS), "Acct-Output-Gigawords"),
            ),
            input_packets=_u32(get(_ACCT_INPUT_PACKETS), "Acct-Input-Packets"),
            output_packets=_u32(get(_ACCT_OUTPUT_PACKETS), "Acct-Output-Packets"),
            delay_time=delay,
            event_timestamp_sent=timestamp is not None,
            nas_ip=_ipv4(get(_NAS_IP_ADDRESS), "NAS-IP-Address"),
            framed_ip=_ipv4(get(_FRAMED_IP_ADDRESS), "Framed-IP-Address"),
            calling_station_id=_text(get(_CALLING_STATION_ID, b"")),
            terminate_cause=terminate_cause,
            multi_session_id=_text(get(_ACCT_MULTI_SESSION_ID, b"")),
            extra=extra,
        )
    except ValueError as exc:
        raise PacketDropped(DropReason.INVALID_RECORD, str(exc)) from None


def _extra_of(others: list[tuple[int, bytes]]) -> dict[str, str]:
    """``extra`` of a record: every attribute that is not a record field, by name."""
    extra: dict[str, str] = {}
    if others:
        specs = _specs()
        for atype, value in others:
            if atype == _VENDOR_SPECIFIC:
                _add_vendor_specific(extra, value, specs)
            else:
                _add_extra(extra, specs.get(atype), f"0:{atype}", value)
    return extra


@lru_cache(maxsize=1)
def _plain_integers() -> dict[int, tuple[str, dict[bytes, str]]]:
    """Standard attributes of type integer without a tag: their name and VALUE names."""
    return {code: (spec.name, spec.names) for code, spec in _specs().items()
            if isinstance(code, int) and spec.type == "integer" and not spec.has_tag}


def _extra_fast(others: list[tuple[int, bytes]]) -> dict[str, str]:
    """``_extra_of``, with the first 4-octet value of a plain integer attribute (NAS-Port,
    NAS-Port-Type, ...) written in place rather than through ``_add_extra``."""
    extra: dict[str, str] = {}
    if others:
        specs = _specs()
        plain = _plain_integers()
        for atype, value in others:
            named = plain.get(atype)
            if named is not None and len(value) == 4 and named[0] not in extra:
                extra[named[0]] = named[1].get(value) or str(int.from_bytes(value, "big"))
            elif atype == _VENDOR_SPECIFIC:
                _add_vendor_specific(extra, value, specs)
            else:
                _add_extra(extra, specs.get(atype), f"0:{atype}", value)
    return extra


class _Unusual(Exception):
    """A record attribute ``_record_fast`` leaves to ``_record_of``."""


_U32_ZERO = bytes(4)
_EIGHT_U32 = struct.Struct("!8I").unpack
_ALL_FOUR = [4] * 8


def _statuses_by_value() -> dict[bytes, StatusType]:
    statuses: dict[bytes, StatusType] = {}
    for code in range(256):
        try:
            statuses[code.to_bytes(4, "big")] = StatusType.from_code(code)
        except ValueError:
            continue
    return statuses


# Acct-Status-Type as sent (4 octets) -> the status; other values and sizes are not in it.
_STATUS_BY_VALUE = _statuses_by_value()


def _record_fast(fields: dict[int, bytes], others: list[tuple[int, bytes]], nas_id: str,
                 received_at: int) -> AccountingRecord:
    """``_record_of`` for what NASes send, with fewer steps: a known status, every integer and
    address attribute of 4 octets, text that is UTF-8 without NULs. Anything else, and a
    record the domain refuses, is left to ``_record_of``, so a drop has the reason and message
    it always had. The server decodes every packet this way: the record fields were over half
    of a packet's decoding (tests/test_radius_record_fast.py compares the two)."""
    extra = _extra_fast(others)
    get = fields.get
    try:
        status = _STATUS_BY_VALUE.get(get(_ACCT_STATUS_TYPE, b""))
        if status is None:
            raise _Unusual
        counters = (get(_ACCT_DELAY_TIME, _U32_ZERO), get(_ACCT_SESSION_TIME, _U32_ZERO),
                    get(_ACCT_INPUT_OCTETS, _U32_ZERO), get(_ACCT_INPUT_GIGAWORDS, _U32_ZERO),
                    get(_ACCT_OUTPUT_OCTETS, _U32_ZERO), get(_ACCT_OUTPUT_GIGAWORDS, _U32_ZERO),
                    get(_ACCT_INPUT_PACKETS, _U32_ZERO), get(_ACCT_OUTPUT_PACKETS, _U32_ZERO))
        if list(map(len, counters)) != _ALL_FOUR:
            raise _Unusual
        (delay_time, session_time, input_low, input_gigawords, output_low, output_gigawords,
         input_packets, output_packets) = _EIGHT_U32(b"".join(counters))
        timestamp = get(_EVENT_TIMESTAMP)
        if timestamp is None:
            event_time = received_at - delay_time
        elif len(timestamp) == 4:
            event_time = int.from_bytes(timestamp, "big")
        else:
            raise _Unusual
        cause = get(_ACCT_TERMINATE_CAUSE)
        terminate_cause = ""
        if cause is not None:
            if len(cause) != 4:
                raise _Unusual
            terminate_cause = (_specs()[_ACCT_TERMINATE_CAUSE].names.get(cause)
                               or str(int.from_bytes(cause, "big")))
        nas_ip = get(_NAS_IP_ADDRESS)
        framed_ip = get(_FRAMED_IP_ADDRESS)
        if (nas_ip is not None and len(nas_ip) != 4) or (framed_ip is not None and len(framed_ip) != 4):
            raise _Unusual
        texts = (get(_ACCT_SESSION_ID, b""), get(_USER_NAME, b""), get(_CALLING_STATION_ID, b""),
                 get(_ACCT_MULTI_SESSION_ID, b""))
        if b"\0" in b"".join(texts):
            raise _Unusual
        # Strict UTF-8 raises (UnicodeDecodeError) where _text would write escapes.
        acct_session_id, username, calling_station_id, multi_session_id = (
            texts[0].decode(), texts[1].decode(), texts[2].decode(), texts[3].decode())
        # Positional, each argument the local of the field's name: a call with 19 keywords
        # is compiled as a dict built and unpacked (CPython 3.11), ~11k instructions.
        return AccountingRecord.of(
            nas_id, status, event_time, received_at, acct_session_id, username, session_time,
            input_gigawords << 32 | input_low, output_gigawords << 32 | output_low, input_packets,
            output_packets, delay_time, timestamp is not None,
            "" if nas_ip is None else socket.inet_ntoa(nas_ip),
            "" if framed_ip is None else socket.inet_ntoa(framed_ip),
            calling_station_id, terminate_cause, multi_session_id, extra)
    except (_Unusual, UnicodeDecodeError, ValueError):
        return _record_of(fields, others, nas_id, received_at)


def _u32(value: bytes | None, name: str) -> int:
    if value is None:
        return 0
    if len(value) != 4:
        raise PacketDropped(DropReason.INVALID_RECORD, f"{name} of {len(value)} octets")
    return int.from_bytes(value, "big")


def _ipv4(value: bytes | None, name: str) -> str:
    if value is None:
        return ""
    if len(value) != 4:
        raise PacketDropped(DropReason.INVALID_RECORD, f"{name} of {len(value)} octets")
    return socket.inet_ntoa(value)


def _text(value: bytes) -> str:
    """A RADIUS string as text that always survives JSON, hashing and SQL: invalid UTF-8
    becomes backslash escapes (deterministic, so a retransmission gets the same
    idempotency key), the trailing NULs some NASes send are dropped and other NULs
    escaped, as PostgreSQL text cannot hold them."""
    text = value.rstrip(b"\0").decode("utf-8", "backslashreplace")
    return text.replace("\0", "\\x00") if "\0" in text else text


# ------------------------------------------------------------------ attribute naming


@dataclass(frozen=True, slots=True)
class _Spec:
    """What decoding needs of a dictionary attribute, by raw value."""

    name: str
    type: str
    names: dict[bytes, str]  # encoded value -> VALUE name
    has_tag: bool


@lru_cache(maxsize=1)
def _specs() -> dict[int | tuple[int, int], _Spec]:
    """Dictionary attributes by packet key: code, or (vendor id, code) for a VSA."""
    dictionary = load_dictionary()
    specs: dict[int | tuple[int, int], _Spec] = {}
    for attribute in dictionary.attributes.values():
        if attribute.is_sub_attribute or attribute.type == "tlv":
            continue  # none are defined; a TLV would be kept raw
        spec = _Spec(attribute.name, attribute.type, dict(attribute.values.backward), attribute.has_tag)
        if attribute.vendor:
            specs[(dictionary.vendors.GetForward(attribute.vendor), attribute.code)] = spec
        else:
            specs[attribute.code] = spec
    return specs


def _add_vendor_specific(
    extra: dict[str, str], value: bytes, specs: dict[int | tuple[int, int], _Spec]
) -> None:
    """Split a Vendor-Specific attribute (RFC 2865 section 5.26) into its vendor
    attributes. One whose sub-attributes do not add up (a vendor format other than
    1-octet type and length) is kept whole, in hex."""
    if len(value) < 4:
        _put(extra, "Vendor-Specific", value.hex())
        return
    vendor = int.from_bytes(value[:4], "big")
    subs: list[tuple[int, bytes]] = []
    pos, end = 4, len(value)
    while pos < end:
        if end - pos < 2 or value[pos + 1] < 2 or pos + value[pos + 1] > end:
            _put(extra, f"Vendor-Specific:{vendor}", value[4:].hex())
            return
        subs.append((value[pos], value[pos + 2 : pos + value[pos + 1]]))
        pos += value[pos + 1]
    if not subs:
        _put(extra, f"Vendor-Specific:{vendor}", "")
    for vtype, sub in subs:
        _add_extra(extra, specs.get((vendor, vtype)), f"{vendor}:{vtype}", sub)


def _add_extra(extra: dict[str, str], spec: _Spec | None, raw_key: str, value: bytes) -> None:
    if spec is None:
        _put(extra, raw_key, value.hex())
        return
    key = spec.name
    if spec.has_tag and value:
        # RFC 2868 section 3: the tag replaces an integer's first octet; a string has
        # one when its first octet is 0x01-0x1F (0x00 also seen as "no tag").
        if spec.type == "integer":
            tag, value = value[0], b"\0" + value[1:]
        elif value[0] <= 0x1F:
            tag, value = value[0], value[1:]
        else:
            tag = 0
        if tag:
            key = f"{key}:{tag}"
    _put(extra, key, _value_text(spec, value))


def _value_text(spec: _Spec, value: bytes) -> str:
    kind = spec.type
    if kind == "string":
        return _text(value)
    if kind == "octets":
        return value.hex()
    if kind in ("integer", "date"):
        if len(value) != 4:
            return value.hex()
        return spec.names.get(value) or str(int.from_bytes(value, "big"))
    if kind == "ipaddr":
        return socket.inet_ntoa(value) if len(value) == 4 else value.hex()
    try:
        decoded = tools.DecodeAttr(kind, value)
    except Exception:  # any undecodable value is kept, in hex
        return value.hex()
    if isinstance(decoded, bytes):
        return decoded.hex()
    return spec.names.get(value) or str(decoded)


def _put(extra: dict[str, str], key: str, text: str) -> None:
    if key in extra:
        n = 2
        while f"{key}#{n}" in extra:
            n += 1
        key = f"{key}#{n}"
    extra[key] = text


# ----------------------------------------------------------------------- responses


def encode_accounting_response(
    request: bytes, secret: bytes, *, message_authenticator: bool | None = None
) -> bytes:
    """The Accounting-Response to a (verified) Accounting-Request: same Identifier,
    Response Authenticator = MD5(Code+Identifier+Length+Request Authenticator+attributes+
    secret) (RFC 2866 section 3), the request's Proxy-State attributes copied in order
    (RFC 2865 section 5.33). A Message-Authenticator is added when the request had one
    (``message_authenticator=None``) or when asked; it is computed with 16 zero octets
    as authenticator, as FreeRADIUS signs and verifies Accounting-Responses."""
    length = _frame(request)
    if request[0] != ACCOUNTING_REQUEST:
        raise PacketDropped(DropReason.UNSUPPORTED_CODE, f"code {request[0]}")
    attributes, ma_offset = _walk(request, length)
    if message_authenticator is None:
        message_authenticator = ma_offset >= 0
    return _response(request, secret, _proxy_states(attributes), message_authenticator, ma_vector=_ZERO16)


def verify_status_server(data: bytes, secret: bytes) -> None:
    """Verify a Status-Server (RFC 5997): it MUST carry a Message-Authenticator, computed
    with its own (random) Request Authenticator, which is the only check possible."""
    _verify_status_server(data, secret)


def _verify_status_server(data: bytes, secret: bytes) -> list[tuple[int, bytes]]:
    length = _frame(data)
    if data[0] != STATUS_SERVER:
        raise PacketDropped(DropReason.UNSUPPORTED_CODE, f"code {data[0]}")
    attributes, ma_offset = _walk(data, length)
    if ma_offset < 0:
        raise PacketDropped(DropReason.MISSING_MESSAGE_AUTHENTICATOR, "Status-Server")
    _check_message_authenticator(data, length, ma_offset, secret, bytes(data[4:20]))
    return attributes


def encode_status_server_response(request: bytes, secret: bytes) -> bytes:
    """Verify a Status-Server sent to the accounting port and answer it with an
    Accounting-Response (RFC 5997 section 3) carrying a Message-Authenticator computed
    with the Request Authenticator. Raises PacketDropped for a request that fails
    verify_status_server."""
    attributes = _verify_status_server(request, secret)
    return _response(request, secret, _proxy_states(attributes), True, ma_vector=bytes(request[4:20]))


def _proxy_states(attributes: list[tuple[int, bytes]]) -> bytes:
    return b"".join(_attribute(atype, value) for atype, value in attributes if atype == _PROXY_STATE)


def _response(
    request: bytes, secret: bytes, attributes: bytes, message_authenticator: bool, *, ma_vector: bytes
) -> bytes:
    if message_authenticator:
        attributes = _MA_PLACEHOLDER + attributes
    header = _HEADER.pack(ACCOUNTING_RESPONSE, request[1], HEADER_LENGTH + len(attributes))
    if message_authenticator:
        mac = hmac.digest(secret, header + ma_vector + attributes, "md5")
        attributes = attributes[:2] + mac + attributes[18:]
    authenticator = hashlib.md5(b"".join((header, request[4:20], attributes, secret))).digest()
    return header + authenticator + attributes


# ------------------------------------------------------------------------ requests


def encode_accounting_request(
    identifier: int,
    secret: bytes,
    attributes: Attributes,
    *,
    message_authenticator: bool = False,
) -> bytes:
    """Build an Accounting-Request, as a NAS would (for tests and tools).

    ``attributes`` maps (or lists pairs of) keys to values, a list value repeating the
    attribute: a dictionary name (``"Acct-Status-Type": "Start"``, ``"ERX-Service-
    Activate:1"`` for a tag), or for raw bytes a code or a (vendor id, code) pair. The
    Request Authenticator is computed per RFC 2866 section 3, after the optional
    Message-Authenticator (computed with a zero authenticator)."""
    return _request(ACCOUNTING_REQUEST, identifier, secret, attributes, message_authenticator)


def encode_coa_request(
    code: int,
    identifier: int,
    secret: bytes,
    attributes: Attributes,
    *,
    message_authenticator: bool = True,
) -> bytes:
    """Build a CoA-Request or Disconnect-Request (RFC 5176 section 3.3: the Request
    Authenticator is computed like an Accounting-Request's), with a Message-Authenticator
    unless turned off. ``attributes`` as for encode_accounting_request."""
    if code not in (COA_REQUEST, DISCONNECT_REQUEST):
        raise ValueError(f"not a CoA-Request or Disconnect-Request code: {code}")
    return _request(code, identifier, secret, attributes, message_authenticator)


def decode_coa_reply(data: bytes, request_authenticator: bytes, secret: bytes) -> tuple[int, dict[str, str]]:
    """Verify a CoA or Disconnect ACK/NAK against the Request Authenticator of the request
    it answers, and return its code and attributes (named like ``extra`` of
    decode_accounting, e.g. ``{"Error-Cause": "Session-Context-Not-Found"}``).

    The Message-Authenticator, when present, must be computed with the Request
    Authenticator in the Authenticator field (RFC 5176 section 3.3; radclient checks the
    same). Raises PacketDropped."""
    if len(request_authenticator) != 16:
        raise ValueError("a Request Authenticator has 16 octets")
    length = _frame(data)
    if data[0] not in (DISCONNECT_ACK, DISCONNECT_NAK, COA_ACK, COA_NAK):
        raise PacketDropped(DropReason.UNSUPPORTED_CODE, f"code {data[0]}")
    attributes, ma_offset = _walk(data, length)
    expected = hashlib.md5(
        b"".join((data[:4], request_authenticator, data[HEADER_LENGTH:length], secret))
    ).digest()
    if not hmac.compare_digest(expected, data[4:20]):
        raise PacketDropped(DropReason.BAD_AUTHENTICATOR, "Response Authenticator mismatch")
    if ma_offset >= 0:
        _check_message_authenticator(data, length, ma_offset, secret, bytes(request_authenticator))
    specs = _specs()
    decoded: dict[str, str] = {}
    for atype, value in attributes:
        if atype == _VENDOR_SPECIFIC:
            _add_vendor_specific(decoded, value, specs)
        elif atype != _MESSAGE_AUTHENTICATOR:
            _add_extra(decoded, specs.get(atype), f"0:{atype}", value)
    return data[0], decoded


def _request(
    code: int, identifier: int, secret: bytes, attributes: Attributes, message_authenticator: bool
) -> bytes:
    if not 0 <= identifier <= 255:
        raise ValueError(f"identifier out of range: {identifier}")
    body = _encode_attributes(attributes)
    if message_authenticator:
        body = _MA_PLACEHOLDER + body
    length = HEADER_LENGTH + len(body)
    if length > MAX_PACKET_LENGTH:
        raise ValueError(f"packet of {length} octets exceeds {MAX_PACKET_LENGTH}")
    header = _HEADER.pack(code, identifier, length)
    if message_authenticator:
        body = body[:2] + hmac.digest(secret, header + _ZERO16 + body, "md5") + body[18:]
    authenticator = hashlib.md5(b"".join((header, _ZERO16, body, secret))).digest()
    return header + authenticator + body


def _encode_attributes(attributes: Attributes) -> bytes:
    items: Iterable[tuple[Any, Any]] = attributes.items() if isinstance(attributes, Mapping) else attributes
    encoded: list[bytes] = []
    for key, value in items:
        for one in value if isinstance(value, list) else [value]:
            encoded.append(_encode_attribute(key, one))
    return b"".join(encoded)


def _encode_attribute(key: AttributeKey, value: AttributeValue) -> bytes:
    if isinstance(key, int):
        return _attribute(key, _raw(value))
    if isinstance(key, tuple):
        vendor, vtype = key
        return _vendor_attribute(vendor, vtype, _raw(value))
    dictionary = load_dictionary()
    name, _, tag_text = key.partition(":")
    try:
        attribute = dictionary.attributes[name]
    except KeyError:
        raise ValueError(f"attribute {name!r} is not in the dictionary") from None
    if isinstance(value, str) and value in attribute.values.forward:
        raw = attribute.values.forward[value]
    elif attribute.type in ("string", "octets") and isinstance(value, bytes):
        raw = value  # as is: pyrad would unhexlify octets that start with b"0x"
    elif attribute.type == "octets":
        raise TypeError(f"{name} is octets: pass bytes")
    else:
        raw = tools.EncodeAttr(attribute.type, value)
    if tag_text:
        tag = int(tag_text)
        if not attribute.has_tag or not 0 < tag <= 0x1F:
            raise ValueError(f"bad tag {tag_text!r} for {name}")
        raw = bytes((tag,)) + (raw[1:] if attribute.type == "integer" else raw)
    elif attribute.has_tag and attribute.type != "integer" and raw and raw[0] <= 0x1F:
        raw = b"\0" + raw  # or the first octet would be read as a tag
    if attribute.vendor:
        return _vendor_attribute(dictionary.vendors.GetForward(attribute.vendor), attribute.code, raw)
    return _attribute(attribute.code, raw)


def _raw(value: AttributeValue) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError("attributes given by code take bytes")
    return value


def _attribute(atype: int, value: bytes) -> bytes:
    if not 0 < atype <= 255 or len(value) > 253:
        raise ValueError(f"attribute {atype} with {len(value)} octets does not fit")
    return bytes((atype, len(value) + 2)) + value


def _vendor_attribute(vendor: int, vtype: int, value: bytes) -> bytes:
    if not 0 <= vtype <= 255 or len(value) > 247:
        raise ValueError(f"vendor attribute {vendor}:{vtype} with {len(value)} octets does not fit")
    return _attribute(_VENDOR_SPECIFIC, vendor.to_bytes(4, "big") + bytes((vtype, len(value) + 2)) + value)
