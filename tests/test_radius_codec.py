"""The RADIUS codec: round trips, authenticators (recomputed here independently of the
codec, and cross-checked with pyrad and FreeRADIUS's radclient), vendor attributes, and
fuzzing: whatever arrives, only PacketDropped may escape."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
import re
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrad.packet import AcctPacket, CoAPacket

from adapters.radius.codec import (
    ACCOUNTING_REQUEST,
    ACCOUNTING_RESPONSE,
    COA_ACK,
    COA_NAK,
    COA_REQUEST,
    DISCONNECT_REQUEST,
    STATUS_SERVER,
    DropReason,
    PacketDropped,
    decode_accounting,
    decode_coa_reply,
    encode_accounting_request,
    encode_accounting_response,
    encode_coa_request,
    encode_status_server_response,
    load_dictionary,
    peek_header,
    verify_accounting_request,
    verify_status_server,
)
from domain.accounting import AccountingRecord, StatusType

SECRET = b"s3cret-of-the-nas"
NAS = "bng-1"
NOW = 1_700_000_000
GIB = 1 << 30


def counter_attrs(direction: str, value: int) -> list[tuple[str, int]]:
    """Acct-<direction>-Octets and -Gigawords for a 64-bit counter."""
    return [
        (f"Acct-{direction}-Octets", value & 0xFFFFFFFF),
        (f"Acct-{direction}-Gigawords", value >> 32),
    ]


def session(status: str, **extra_attrs: Any) -> list[tuple[Any, Any]]:
    attrs: list[tuple[Any, Any]] = [
        ("Acct-Status-Type", status),
        ("Acct-Session-Id", "81f0001a"),
        ("User-Name", "cust-0042@wisp"),
        ("NAS-IP-Address", "10.0.0.1"),
        ("Framed-IP-Address", "100.64.3.7"),
        ("Calling-Station-Id", "AA:BB:CC:00:11:22"),
    ]
    attrs += list(extra_attrs.items())
    return attrs


def decode(packet: bytes, **kwargs: Any) -> AccountingRecord:
    return decode_accounting(packet, SECRET, nas_id=NAS, received_at=NOW, **kwargs)


def dropped(reason: DropReason, call: Callable[[], object]) -> None:
    with pytest.raises(PacketDropped) as info:
        call()
    assert info.value.reason is reason, info.value


def request_authenticator(packet: bytes, secret: bytes = SECRET) -> bytes:
    """RFC 2866 section 3, written out again here so the test does not trust the codec."""
    length = struct.unpack("!H", packet[2:4])[0]
    return hashlib.md5(packet[:4] + bytes(16) + packet[20:length] + secret).digest()


def resign(packet: bytes | bytearray, secret: bytes = SECRET) -> bytes:
    """Give a (possibly mutated) packet a valid Request Authenticator again."""
    packet = bytes(packet)
    return packet[:4] + request_authenticator(packet, secret) + packet[20:]


def attribute_offsets(packet: bytes) -> list[int]:
    offsets, pos = [], 20
    while pos < len(packet):
        offsets.append(pos)
        pos += packet[pos + 1]
    return offsets


# ----------------------------------------------------------------------------- round trips


def test_start_interim_stop_round_trip_with_gigawords() -> None:
    start = decode(encode_accounting_request(1, SECRET, session("Start", **{"Acct-Delay-Time": 4})))
    assert start.status is StatusType.START
    assert (start.event_time, start.event_timestamp_sent, start.delay_time) == (NOW - 4, False, 4)
    assert (start.username, start.acct_session_id) == ("cust-0042@wisp", "81f0001a")
    assert (start.nas_ip, start.framed_ip, start.calling_station_id) == (
        "10.0.0.1",
        "100.64.3.7",
        "AA:BB:CC:00:11:22",
    )
    assert (start.input_octets, start.output_octets, start.terminate_cause) == (0, 0, "")

    upload, download = 5 * GIB + 123, 7 * GIB + 4567
    interim_attrs = session(
        "Interim-Update",
        **{
            "Acct-Session-Time": 600,
            "Event-Timestamp": NOW - 30,
            "Acct-Input-Packets": 10,
            "Acct-Output-Packets": 20,
        },
    )
    interim_attrs += counter_attrs("Input", upload) + counter_attrs("Output", download)
    interim = decode(encode_accounting_request(2, SECRET, interim_attrs))
    assert interim.status is StatusType.INTERIM
    assert (interim.input_octets, interim.output_octets) == (upload, download)
    assert (interim.input_packets, interim.output_packets) == (10, 20)
    assert (interim.event_time, interim.event_timestamp_sent) == (NOW - 30, True)
    assert (interim.session_time, interim.session_start) == (600, NOW - 30 - 600)

    stop_attrs = session(
        "Stop",
        **{"Acct-Session-Time": 900, "Acct-Terminate-Cause": "User-Request", "Acct-Multi-Session-Id": "m-1"},
    )
    stop_attrs += counter_attrs("Input", 5 * GIB) + counter_attrs("Output", 0xFFFFFFFF)
    stop = decode(encode_accounting_request(3, SECRET, stop_attrs, message_authenticator=True))
    assert stop.status is StatusType.STOP
    assert (stop.input_octets, stop.output_octets) == (5 * GIB, 0xFFFFFFFF)
    assert (stop.terminate_cause, stop.multi_session_id) == ("User-Request", "m-1")
    assert stop.extra == {}
    # the record survives the JSON the accounting log stores
    assert AccountingRecord.from_json(stop.to_json()) == stop


def test_terminate_cause_without_a_name_is_the_number() -> None:
    packet = encode_accounting_request(1, SECRET, session("Stop", **{"Acct-Terminate-Cause": 99}))
    assert decode(packet).terminate_cause == "99"


def test_accounting_on_and_off_need_no_session_id() -> None:
    for status, expected in (
        ("Accounting-On", StatusType.ACCOUNTING_ON),
        ("Accounting-Off", StatusType.ACCOUNTING_OFF),
    ):
        record = decode(
            encode_accounting_request(9, SECRET, {"Acct-Status-Type": status, "NAS-IP-Address": "10.0.0.1"})
        )
        assert record.status is expected and record.acct_session_id == ""


@pytest.mark.parametrize("status", ["Start", "Interim-Update", "Stop"])
def test_session_records_need_a_session_id(status: str) -> None:
    packet = encode_accounting_request(1, SECRET, {"Acct-Status-Type": status, "User-Name": "x"})
    dropped(DropReason.INVALID_RECORD, lambda: decode(packet))


def test_status_type_problems() -> None:
    dropped(
        DropReason.UNSUPPORTED_STATUS, lambda: decode(encode_accounting_request(1, SECRET, session("Failed")))
    )
    no_status = encode_accounting_request(1, SECRET, {"Acct-Session-Id": "s"})
    dropped(DropReason.INVALID_RECORD, lambda: decode(no_status))
    short_status = encode_accounting_request(1, SECRET, [(40, b"\x01"), ("Acct-Session-Id", "s")])
    dropped(DropReason.INVALID_RECORD, lambda: decode(short_status))
    short_counter = encode_accounting_request(1, SECRET, session("Stop") + [(42, b"\x00\x01")])
    dropped(DropReason.INVALID_RECORD, lambda: decode(short_counter))


def test_only_accounting_requests_are_decoded() -> None:
    packet = bytearray(encode_accounting_request(1, SECRET, session("Start")))
    packet[0] = 1  # Access-Request
    dropped(DropReason.UNSUPPORTED_CODE, lambda: decode(resign(packet)))


def test_strings_that_are_not_utf8_or_hold_nuls_decode_deterministically() -> None:
    packet = encode_accounting_request(
        1,
        SECRET,
        [
            ("Acct-Status-Type", "Start"),
            ("Acct-Session-Id", b"ab\xff\x00cd\x00\x00"),
            ("User-Name", b"bob\x00"),
        ],
    )
    record = decode(packet)
    assert record.acct_session_id == "ab\\xff\\x00cd"
    assert record.username == "bob"
    assert len(record.idempotency_key()) == 64  # encodable: hashing and JSON work
    assert AccountingRecord.from_json(record.to_json()) == record


def test_padding_after_the_length_field_is_ignored() -> None:
    packet = encode_accounting_request(7, SECRET, session("Start"), message_authenticator=True)
    padded = packet + b"\xde\xad\xbe\xef" * 10
    assert peek_header(padded) == (ACCOUNTING_REQUEST, 7, packet[4:20])
    assert decode(padded, require_message_authenticator=True) == decode(packet)
    response = encode_accounting_response(padded, SECRET)
    assert response == encode_accounting_response(packet, SECRET)


# --------------------------------------------------------------------------- authenticators


def test_request_authenticator_is_the_rfc_2866_digest() -> None:
    packet = encode_accounting_request(3, SECRET, session("Start"))
    assert packet[4:20] == request_authenticator(packet)
    verify_accounting_request(packet, SECRET, require_message_authenticator=False)


def test_wrong_secret_is_a_bad_authenticator() -> None:
    packet = encode_accounting_request(1, SECRET, session("Start"))
    dropped(
        DropReason.BAD_AUTHENTICATOR, lambda: decode_accounting(packet, b"other", nas_id=NAS, received_at=NOW)
    )
    tampered = bytearray(packet)
    tampered[-1] ^= 1
    dropped(DropReason.BAD_AUTHENTICATOR, lambda: decode(bytes(tampered)))


def test_message_authenticator_required_but_missing() -> None:
    packet = encode_accounting_request(1, SECRET, session("Start"))
    dropped(
        DropReason.MISSING_MESSAGE_AUTHENTICATOR, lambda: decode(packet, require_message_authenticator=True)
    )
    assert decode(packet).status is StatusType.START  # optional unless required


def test_message_authenticator_is_checked_when_present() -> None:
    packet = encode_accounting_request(1, SECRET, session("Start"), message_authenticator=True)
    assert packet[20:22] == b"\x50\x12"  # first attribute
    # RFC 3579 section 3.2, for accounting with a zero authenticator, computed by hand
    expected = hmac.new(
        SECRET, packet[:4] + bytes(16) + packet[20:22] + bytes(16) + packet[38:], "md5"
    ).digest()
    assert packet[22:38] == expected
    verify_accounting_request(packet, SECRET, require_message_authenticator=True)

    tampered = bytearray(packet)
    tampered[30] ^= 0x40
    # re-signed so the Request Authenticator passes and only the MA is wrong
    dropped(DropReason.BAD_MESSAGE_AUTHENTICATOR, lambda: decode(resign(tampered)))
    dropped(
        DropReason.BAD_MESSAGE_AUTHENTICATOR,
        lambda: decode(resign(tampered), require_message_authenticator=True),
    )


def test_repeated_or_odd_sized_message_authenticator_is_malformed() -> None:
    twice = encode_accounting_request(
        1, SECRET, session("Start") + [(80, bytes(16))], message_authenticator=True
    )
    dropped(DropReason.MALFORMED, lambda: decode(twice))
    short = encode_accounting_request(1, SECRET, session("Start") + [(80, bytes(8))])
    dropped(DropReason.MALFORMED, lambda: decode(short))


def test_packets_from_pyrad_decode() -> None:
    """An independent encoder: pyrad's AcctPacket, with a Message-Authenticator."""
    request = AcctPacket(id=77, secret=SECRET, dict=load_dictionary())
    for name, value in (
        session("Interim-Update") + counter_attrs("Input", 6 * GIB) + [("Mikrotik-Rate-Limit", "2M/8M")]
    ):
        request.AddAttribute(name, value)
    request.add_message_authenticator()
    record = decode(request.RequestPacket(), require_message_authenticator=True)
    assert (record.input_octets, record.extra) == (6 * GIB, {"Mikrotik-Rate-Limit": "2M/8M"})


def test_accounting_response_authenticator() -> None:
    request = encode_accounting_request(
        200, SECRET, session("Start") + [("Proxy-State", b"p1"), ("Proxy-State", b"p2")]
    )
    response = encode_accounting_response(request, SECRET)
    assert response[0] == ACCOUNTING_RESPONSE and response[1] == 200
    assert struct.unpack("!H", response[2:4])[0] == len(response)
    # RFC 2866 section 3: MD5(Code+Identifier+Length+RequestAuth+Attributes+Secret)
    assert response[4:20] == hashlib.md5(response[:4] + request[4:20] + response[20:] + SECRET).digest()
    assert response[20:] == b"\x21\x04p1\x21\x04p2"  # Proxy-State copied, in order
    pyrad_request = AcctPacket(secret=SECRET, dict=load_dictionary(), packet=request)
    assert pyrad_request.VerifyReply(pyrad_request.CreateReply(packet=response), response)


def test_accounting_response_message_authenticator_follows_the_request() -> None:
    plain = encode_accounting_request(5, SECRET, session("Start"))
    assert len(encode_accounting_response(plain, SECRET)) == 20
    signed = encode_accounting_request(5, SECRET, session("Start"), message_authenticator=True)
    response = encode_accounting_response(signed, SECRET)
    assert response[20:22] == b"\x50\x12"
    # computed with 16 zero octets as authenticator, as FreeRADIUS (radclient) verifies it
    mac = hmac.new(SECRET, response[:4] + bytes(16) + response[20:22] + bytes(16), "md5").digest()
    assert response[22:38] == mac
    assert response[4:20] == hashlib.md5(response[:4] + signed[4:20] + response[20:] + SECRET).digest()
    assert len(encode_accounting_response(signed, SECRET, message_authenticator=False)) == 20


# ---------------------------------------------------------------------------- Status-Server


def status_server(secret: bytes = SECRET, *, message_authenticator: bool = True) -> bytes:
    """A Status-Server built by pyrad (random authenticator, Message-Authenticator)."""
    packet = AcctPacket(code=STATUS_SERVER, id=33, secret=secret, dict=load_dictionary())
    packet.AddAttribute("NAS-Identifier", "bng-1")
    packet.message_authenticator = message_authenticator
    return packet.RequestPacket()


def test_status_server_verify_and_answer() -> None:
    request = status_server()
    verify_status_server(request, SECRET)
    response = encode_status_server_response(request, SECRET)
    assert (response[0], response[1]) == (ACCOUNTING_RESPONSE, 33)
    assert response[20:22] == b"\x50\x12"
    # RFC 5997 section 3: the MA of the answer is computed with the Request Authenticator
    mac = hmac.new(SECRET, response[:4] + request[4:20] + response[20:22] + bytes(16), "md5").digest()
    assert response[22:38] == mac
    assert response[4:20] == hashlib.md5(response[:4] + request[4:20] + response[20:] + SECRET).digest()
    pyrad_request = AcctPacket(secret=SECRET, dict=load_dictionary(), packet=request)
    assert pyrad_request.VerifyReply(pyrad_request.CreateReply(packet=response), response, enforce_ma=True)


def test_status_server_without_or_with_a_bad_message_authenticator() -> None:
    unsigned = status_server(message_authenticator=False)
    dropped(DropReason.MISSING_MESSAGE_AUTHENTICATOR, lambda: verify_status_server(unsigned, SECRET))
    dropped(DropReason.MISSING_MESSAGE_AUTHENTICATOR, lambda: encode_status_server_response(unsigned, SECRET))
    forged = status_server(b"guess")
    dropped(DropReason.BAD_MESSAGE_AUTHENTICATOR, lambda: verify_status_server(forged, SECRET))
    dropped(
        DropReason.UNSUPPORTED_CODE,
        lambda: verify_status_server(encode_accounting_request(1, SECRET, {}), SECRET),
    )
    dropped(DropReason.UNSUPPORTED_CODE, lambda: encode_accounting_response(status_server(), SECRET))


# -------------------------------------------------------------------------------- attributes


def test_vendor_and_unknown_attributes_are_kept_in_extra() -> None:
    attrs = session(
        "Interim-Update",
        **{
            "Mikrotik-Rate-Limit": "10M/50M",
            "Mikrotik-Address-List": "active",
            "Cisco-AVPair": ["subscriber:accounting-list=default", "ip:addr-pool=wisp"],
            "Huawei-Input-Average-Rate": 2_000_000,
            "ERX-Service-Activate:2": "internet(50000000)",
            "ERX-Ingress-Statistics": "enable",
            "Accel-VRF-Name": "red",
            "NAS-Port-Type": "Ethernet",
            "NAS-Identifier": "bng-1.pop",
            "Class": b"\x01\xfe",
            "Delegated-IPv6-Prefix": "2001:db8:100::/56",
        },
    )
    attrs += [((99999, 7), b"\x00\x01\xff"), (200, b"raw"), (26, b"\x00\x00\x01\x00\x05\x09abc")]
    record = decode(encode_accounting_request(1, SECRET, attrs))
    assert record.extra == {
        "Mikrotik-Rate-Limit": "10M/50M",
        "Mikrotik-Address-List": "active",
        "Cisco-AVPair": "subscriber:accounting-list=default",
        "Cisco-AVPair#2": "ip:addr-pool=wisp",
        "Huawei-Input-Average-Rate": "2000000",
        "ERX-Service-Activate:2": "internet(50000000)",
        "ERX-Ingress-Statistics": "enable",
        "Accel-VRF-Name": "red",
        "NAS-Port-Type": "Ethernet",
        "NAS-Identifier": "bng-1.pop",
        "Class": "01fe",
        "Delegated-IPv6-Prefix": "2001:db8:100::/56",
        "99999:7": "0001ff",  # unknown vendor: raw hex
        "0:200": "726177",  # unknown standard attribute
        "Vendor-Specific:256": "0509616263",  # sub-attribute overruns: kept whole
    }


def test_vendor_attribute_codes_on_the_wire() -> None:
    packet = encode_accounting_request(
        1, SECRET, {"Mikrotik-Rate-Limit": "1M/1M", "Huawei-Output-Average-Rate": 5}
    )
    assert packet[20:] == (
        b"\x1a\x0d" + (14988).to_bytes(4, "big") + b"\x08\x071M/1M"
        + b"\x1a\x0c" + (2011).to_bytes(4, "big") + b"\x05\x06\x00\x00\x00\x05"
    )  # fmt: skip


def test_encoder_rejects_what_does_not_fit() -> None:
    with pytest.raises(ValueError):
        encode_accounting_request(1, SECRET, {"User-Name": "x" * 254})
    with pytest.raises(ValueError):
        encode_accounting_request(1, SECRET, {"No-Such-Attribute": "x"})
    with pytest.raises(ValueError):
        encode_accounting_request(256, SECRET, {})
    with pytest.raises(TypeError):
        encode_accounting_request(1, SECRET, {"Class": "not bytes"})


# ------------------------------------------------------------------------------------- CoA


@pytest.mark.parametrize("code", [COA_REQUEST, DISCONNECT_REQUEST])
def test_coa_request_verified_by_pyrad(code: int) -> None:
    attrs = [
        ("User-Name", "cust-0042@wisp"),
        ("Acct-Session-Id", "81f0001a"),
        ("Mikrotik-Rate-Limit", "1M/1M"),
    ]
    packet = encode_coa_request(code, 9, SECRET, attrs)
    assert packet[4:20] == request_authenticator(packet)  # RFC 5176 section 3.3
    received = CoAPacket(secret=SECRET, dict=load_dictionary(), packet=packet)
    assert received.code == code and received.VerifyCoARequest()
    assert received.message_authenticator and received.verify_message_authenticator()
    assert received["Mikrotik-Rate-Limit"] == ["1M/1M"]
    with pytest.raises(ValueError):
        encode_coa_request(ACCOUNTING_REQUEST, 9, SECRET, attrs)


def test_coa_reply_decoded_and_verified() -> None:
    packet = encode_coa_request(COA_REQUEST, 9, SECRET, {"Acct-Session-Id": "81f0001a"})
    request = CoAPacket(secret=SECRET, dict=load_dictionary(), packet=packet)
    nak = request.CreateReply(message_authenticator=True)
    nak.code = COA_NAK
    nak.AddAttribute("Error-Cause", "Session-Context-Not-Found")
    raw = nak.ReplyPacket()  # pyrad signs the MA with the Request Authenticator
    assert decode_coa_reply(raw, packet[4:20], SECRET) == (
        COA_NAK,
        {"Error-Cause": "Session-Context-Not-Found"},
    )

    ack = request.CreateReply().ReplyPacket()
    assert decode_coa_reply(ack, packet[4:20], SECRET) == (COA_ACK, {})
    dropped(DropReason.BAD_AUTHENTICATOR, lambda: decode_coa_reply(ack, packet[4:20], b"other"))
    dropped(DropReason.BAD_AUTHENTICATOR, lambda: decode_coa_reply(ack, bytes(16), SECRET))
    dropped(DropReason.UNSUPPORTED_CODE, lambda: decode_coa_reply(packet, packet[4:20], SECRET))
    # a MA signed with zeros instead of the Request Authenticator is refused
    body = b"\x50\x12" + bytes(16)
    header = struct.pack("!BBH", COA_ACK, 9, 20 + len(body))
    body = body[:2] + hmac.new(SECRET, header + bytes(16) + body, "md5").digest()
    zero_signed = header + hashlib.md5(header + packet[4:20] + body + SECRET).digest() + body
    dropped(DropReason.BAD_MESSAGE_AUTHENTICATOR, lambda: decode_coa_reply(zero_signed, packet[4:20], SECRET))


# ------------------------------------------------------------------------------- dictionary


FREERADIUS_DICTIONARIES = Path("/usr/share/freeradius")


def _freeradius_attributes() -> tuple[dict[str, tuple[int, int, str]], dict[tuple[str, str], int]]:
    """Attributes (name -> vendor id, code, type) and VALUEs of FreeRADIUS's dictionaries,
    read with a parser of our own (not pyrad's)."""
    attributes: dict[str, tuple[int, int, str]] = {}
    values: dict[tuple[str, str], int] = {}
    for path in sorted(FREERADIUS_DICTIONARIES.glob("dictionary.*")):
        vendors: dict[str, int] = {}
        vendor = 0
        for line in path.read_text(errors="replace").splitlines():
            tokens = line.split("#", 1)[0].split()
            if not tokens:
                continue
            if tokens[0] == "VENDOR":
                vendors[tokens[1]] = int(tokens[2], 0)
            elif tokens[0] == "BEGIN-VENDOR":
                vendor = vendors.get(tokens[1], -1)
            elif tokens[0] == "END-VENDOR":
                vendor = 0
            elif tokens[0] == "ATTRIBUTE" and re.fullmatch(r"\d+", tokens[2]):
                attributes.setdefault(tokens[1], (vendor, int(tokens[2]), tokens[3].split("[")[0]))
            elif tokens[0] == "VALUE" and re.fullmatch(r"\d+|0x[0-9a-fA-F]+", tokens[3]):
                values.setdefault((tokens[1], tokens[2]), int(tokens[3], 0))
    return attributes, values


def test_dictionary_loads_every_attribute() -> None:
    dictionary = load_dictionary()
    assert dictionary is load_dictionary()  # cached
    assert not dictionary.skipped_attributes
    assert dictionary.vendors.forward == {
        "": 0,
        "Mikrotik": 14988,
        "Cisco": 9,
        "Juniper": 2636,
        "ERX": 4874,
        "Accel-PPP": 55999,
        "Huawei": 2011,
    }
    expected = {
        "Acct-Input-Gigawords": 52,
        "Acct-Output-Gigawords": 53,
        "Event-Timestamp": 55,
        "Message-Authenticator": 80,
        "Acct-Interim-Interval": 85,
        "NAS-Port-Id": 87,
        "Error-Cause": 101,
        "Mikrotik-Rate-Limit": 8,
        "Cisco-AVPair": 1,
        "Cisco-Account-Info": 250,
        "Cisco-Command-Code": 252,
        "ERX-Ingress-Policy-Name": 10,
        "ERX-Egress-Policy-Name": 11,
        "ERX-Service-Activate": 65,
        "Accel-VRF-Name": 1,
        "Huawei-Input-Average-Rate": 2,
        "Huawei-Output-Average-Rate": 5,
    }
    assert {name: dictionary[name].code for name in expected} == expected


@pytest.mark.skipif(not FREERADIUS_DICTIONARIES.is_dir(), reason="FreeRADIUS dictionaries not installed")
def test_dictionary_agrees_with_freeradius() -> None:
    theirs, their_values = _freeradius_attributes()
    dictionary = load_dictionary()
    checked = 0
    for name, attribute in dictionary.attributes.items():
        vendor = dictionary.vendors.GetForward(attribute.vendor) if attribute.vendor else 0
        if vendor == 55999:  # accel-ppp's own dictionary, not in FreeRADIUS
            continue
        assert theirs.get(name) == (vendor, attribute.code, attribute.type), name
        for value_name, encoded in attribute.values.forward.items():
            assert their_values.get((name, value_name)) == int.from_bytes(encoded, "big"), (name, value_name)
        checked += 1
    assert checked > 100


# ----------------------------------------------------------------------------------- fuzzing


def _base_packets() -> list[bytes]:
    full = session(
        "Stop",
        **{
            "Acct-Session-Time": 60,
            "Acct-Delay-Time": 2,
            "Event-Timestamp": NOW,
            "Acct-Terminate-Cause": "Idle-Timeout",
            "Acct-Input-Packets": 5,
            "Acct-Multi-Session-Id": "m",
            "Cisco-AVPair": ["a=b", "c=d"],
            "ERX-Service-Volume:3": 7,
            "Framed-Interface-Id": "211:22ff:fe33:4455",
            "Framed-IPv6-Prefix": "2001:db8::/64",
        },
    )
    full += counter_attrs("Input", 9 * GIB + 1) + counter_attrs("Output", 3)
    return [
        encode_accounting_request(1, SECRET, full),
        encode_accounting_request(2, SECRET, full, message_authenticator=True),
        encode_accounting_request(3, SECRET, session("Interim-Update", **{"Mikrotik-Rate-Limit": "1M/1M"})),
        encode_accounting_request(4, SECRET, {"Acct-Status-Type": "Accounting-On"}),
        encode_accounting_request(
            5, SECRET, [((99999, 1), b"xyz"), (26, b"\x00\x00\x00\x09\x01\x05ab"), (190, b"")]
        ),
        status_server(),
    ]


def _mutate(rng: random.Random, base: bytes) -> bytes:
    data = bytearray(base)
    op = rng.randrange(9)
    if op == 0:  # bit flips
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncation
        data = data[: rng.randrange(len(data) + 1)]
    elif op == 2:  # the Length field lies
        lie = rng.choice(
            [0, 1, 19, 20, len(data) - 1, len(data) + 1, 4096, 4097, 65535, rng.randrange(65536)]
        )
        data[2:4] = lie.to_bytes(2, "big")
    elif op in (3, 4):  # attribute length 0, 1, off by one, overrunning
        offsets = attribute_offsets(base)
        if offsets:
            pos = rng.choice(offsets)
            data[pos + 1] = rng.choice([0, 1, 2, 3, base[pos + 1] - 1, base[pos + 1] + 1, 255])
    elif op == 5:  # garbage
        data = bytearray(rng.randbytes(rng.randrange(0, 200)))
    elif op == 6:  # a valid header over garbage attributes
        body = rng.randbytes(rng.randrange(0, 120))
        data = bytearray(
            struct.pack("!BBH", rng.choice([4, 4, 12, 44, 5, 1]), 1, 20 + len(body)) + bytes(16) + body
        )
    elif op == 7:  # a random (possibly vendor) attribute appended, Length kept right
        value = rng.randbytes(rng.randrange(0, 30))
        if rng.random() < 0.5:
            value = rng.randrange(1 << 32).to_bytes(4, "big") + value
            atype = 26
        else:
            atype = rng.randrange(256)
        data += bytes((atype, min(len(value) + 2, 255))) + value[:253]
        data[2:4] = len(data).to_bytes(2, "big")
    else:  # a random attribute value overwritten in place (same length)
        offsets = attribute_offsets(base)
        if offsets:
            pos = rng.choice(offsets)
            for i in range(pos + 2, pos + base[pos + 1]):
                data[i] = rng.randrange(256)
    if len(data) >= 20 and rng.random() < 0.6:
        # re-signed, so the mutation reaches attribute parsing and record building
        data = bytearray(resign(data)) if struct.unpack("!H", data[2:4])[0] <= len(data) else data
    return bytes(data)


def _feed(data: bytes, outcomes: dict[str, int]) -> None:
    """Feed one datagram to every entry point; anything but PacketDropped fails the test."""
    with contextlib.suppress(PacketDropped):
        peek_header(data)
    for require in (False, True):
        try:
            record = decode_accounting(
                data, SECRET, nas_id=NAS, received_at=NOW, require_message_authenticator=require
            )
            assert isinstance(record, AccountingRecord)
            record.to_json()
            outcomes["decoded"] = outcomes.get("decoded", 0) + 1
        except PacketDropped as exc:
            outcomes[exc.reason.value] = outcomes.get(exc.reason.value, 0) + 1
    for call in (
        lambda: encode_accounting_response(data, SECRET),
        lambda: verify_status_server(data, SECRET),
        lambda: decode_coa_reply(data, data[4:20].ljust(16, b"\0"), SECRET),
    ):
        with contextlib.suppress(PacketDropped):
            call()


def test_fuzz_100k_mutated_packets_only_drop() -> None:
    rng = random.Random(20240611)
    bases = _base_packets()
    outcomes: dict[str, int] = {}
    for _ in range(100_000):
        _feed(_mutate(rng, rng.choice(bases)), outcomes)
    # the mutations reached every stage, not just the first check
    for reason in ("decoded", "malformed", "bad-authenticator", "invalid-record", "unsupported-code"):
        assert outcomes.get(reason, 0) > 100, outcomes


def test_fuzz_padding_never_changes_a_valid_packet() -> None:
    rng = random.Random(7)
    for base in _base_packets()[:4]:  # the Accounting-Requests that decode
        expected = decode(base)
        for _ in range(200):
            padded = base + rng.randbytes(rng.randrange(1, 64))
            assert decode(padded) == expected
            assert encode_accounting_response(padded, SECRET) == encode_accounting_response(base, SECRET)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_property_arbitrary_bytes_only_drop(data: bytes) -> None:
    _feed(data, {})


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=40)), max_size=12),
    st.sampled_from([1, 2, 3, 7, 8, 15]),
)
def test_property_signed_packets_with_random_attributes_only_drop(
    attrs: list[tuple[int, bytes]], status: int
) -> None:
    packet = encode_accounting_request(1, SECRET, [(40, status.to_bytes(4, "big")), *attrs])
    _feed(packet, {})


_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=60
)


@settings(max_examples=200, deadline=None)
@given(
    session_id=_text,
    username=_text,
    upload=st.integers(0, (1 << 64) - 1),
    download=st.integers(0, (1 << 64) - 1),
    session_time=st.integers(0, (1 << 32) - 1),
    timestamp=st.none() | st.integers(0, (1 << 32) - 1),
    with_ma=st.booleans(),
)
def test_property_round_trip(
    session_id: str,
    username: str,
    upload: int,
    download: int,
    session_time: int,
    timestamp: int | None,
    with_ma: bool,
) -> None:
    attrs: list[tuple[Any, Any]] = [
        ("Acct-Status-Type", "Interim-Update"),
        ("Acct-Session-Id", session_id),
        ("User-Name", username),
        ("Acct-Session-Time", session_time),
    ]
    attrs += counter_attrs("Input", upload) + counter_attrs("Output", download)
    if timestamp is not None:
        attrs.append(("Event-Timestamp", timestamp))
    record = decode(encode_accounting_request(1, SECRET, attrs, message_authenticator=with_ma))
    assert (record.acct_session_id, record.username) == (session_id, username)
    assert (record.input_octets, record.output_octets, record.session_time) == (
        upload,
        download,
        session_time,
    )
    assert record.event_time == (NOW if timestamp is None else timestamp)


# ---------------------------------------------------------------------------- radclient


RADCLIENT = shutil.which("radclient")
needs_radclient = pytest.mark.skipif(
    RADCLIENT is None, reason="FreeRADIUS radclient (freeradius-utils) not installed"
)


def _radclient(
    command: str, attributes: str, answer: Callable[[bytes], bytes], *, timeout: int = 5
) -> tuple[subprocess.CompletedProcess[str], bytes]:
    """Run radclient against a UDP socket on loopback answered by ``answer``; return its
    result and the datagram it sent."""
    assert RADCLIENT is not None
    received: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(15)

        def serve() -> None:
            data, peer = sock.recvfrom(4096)
            received.append(data)
            sock.sendto(answer(data), peer)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [RADCLIENT, "-x", "-r", "1", "-t", str(timeout), f"127.0.0.1:{port}", command, SECRET.decode()],
            input=attributes,
            capture_output=True,
            text=True,
            timeout=30,
        )
        server.join(5)
    assert received, result.stdout + result.stderr
    return result, received[0]


@needs_radclient
def test_radclient_accounting_request_decodes_and_accepts_our_response() -> None:
    records: list[AccountingRecord] = []

    def answer(data: bytes) -> bytes:
        records.append(decode(data, require_message_authenticator=True))
        return encode_accounting_response(data, SECRET)  # with a Message-Authenticator, checked by radclient

    attributes = (
        'Acct-Status-Type = Interim-Update, Acct-Session-Id = "81f0001a", User-Name = "cust-0042@wisp", '
        "NAS-IP-Address = 10.0.0.1, Framed-IP-Address = 100.64.3.7, "
        f"Acct-Input-Octets = {(5 * GIB + 99) & 0xFFFFFFFF}, Acct-Input-Gigawords = {(5 * GIB + 99) >> 32}, "
        "Acct-Output-Octets = 123, Acct-Output-Gigawords = 0, Acct-Session-Time = 3600, "
        f"Acct-Delay-Time = 3, Event-Timestamp = {NOW - 10}, "
        'Mikrotik-Rate-Limit = "10M/50M", Message-Authenticator = 0x00'
    )
    result, sent = _radclient("acct", attributes, answer)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Received Accounting-Response" in result.stdout
    (record,) = records
    assert record.status is StatusType.INTERIM
    assert (record.acct_session_id, record.username) == ("81f0001a", "cust-0042@wisp")
    assert (record.nas_ip, record.framed_ip) == ("10.0.0.1", "100.64.3.7")
    assert (record.input_octets, record.output_octets) == (5 * GIB + 99, 123)
    assert (record.session_time, record.delay_time, record.event_time, record.event_timestamp_sent) == (
        3600,
        3,
        NOW - 10,
        True,
    )
    assert record.extra == {"Mikrotik-Rate-Limit": "10M/50M"}
    assert sent[4:20] == request_authenticator(sent)


@needs_radclient
def test_radclient_rejects_a_wrong_response_authenticator() -> None:
    """The control for the test above: radclient does check what we send."""

    def answer(data: bytes) -> bytes:
        return encode_accounting_response(data, b"not-the-secret")

    result, _ = _radclient(
        "acct", 'Acct-Status-Type = Accounting-On, NAS-Identifier = "bng-1"', answer, timeout=1
    )
    assert result.returncode != 0
    assert "invalid Response Authenticator" in result.stdout + result.stderr


@needs_radclient
def test_radclient_status_server() -> None:
    def answer(data: bytes) -> bytes:
        return encode_status_server_response(data, SECRET)

    result, sent = _radclient("status", "Message-Authenticator = 0x00", answer)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sent[0] == STATUS_SERVER
    verify_status_server(sent, SECRET)
