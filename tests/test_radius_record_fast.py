"""The server's record builder (``_record_fast``) against the reference (``_record_of``): for any
record attributes, the same record, or the same drop with the same reason and message; and the
packets NASes send are built without the reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.radius import codec
from adapters.radius.codec import PacketDropped

NAS = "bng-1"
NOW = 1_700_000_000

_U32_TYPES = (40, 41, 42, 43, 46, 47, 48, 49, 52, 53, 55)
_IP_TYPES = (4, 8)
_TEXT_TYPES = (1, 31, 44, 50)


def _outcome(build: object, fields: dict[int, bytes], others: list[tuple[int, bytes]]) -> object:
    try:
        return build(dict(fields), list(others), NAS, NOW)  # type: ignore[operator]
    except PacketDropped as dropped:
        return ("dropped", dropped.reason, dropped.message)


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


# Mostly well-formed values (the fast path), sometimes of another size, missing or odd.
_status = st.one_of(st.sampled_from([_u32(c) for c in (1, 2, 3, 7, 8)]), st.binary(max_size=6),
                    st.integers(0, 300).map(_u32))
_integer = st.one_of(st.integers(0, (1 << 32) - 1).map(_u32), st.binary(max_size=6))
_address = st.one_of(st.binary(min_size=4, max_size=4), st.binary(max_size=6))
_text = st.one_of(st.text(max_size=12).map(str.encode), st.binary(max_size=12),
                  st.sampled_from([b"", b"a\0", b"\0b", b"\xed\xa0\x80", b"\xff", "é".encode()]))


@st.composite
def _fields(draw: st.DrawFn) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    if draw(st.integers(0, 9)):
        fields[40] = draw(_status)
    for atype in _U32_TYPES[1:]:
        if draw(st.booleans()):
            fields[atype] = draw(_integer)
    for atype in _IP_TYPES:
        if draw(st.booleans()):
            fields[atype] = draw(_address)
    for atype in _TEXT_TYPES:
        if draw(st.integers(0, 3)):
            fields[atype] = draw(_text)
    return fields


# NAS-Port (5), NAS-Port-Type (61, with VALUE names) and 85 are plain integers; 64 is not in the
# dictionary (kept in hex), 26 a Vendor-Specific, 33 a Proxy-State.
_others = st.lists(st.tuples(st.sampled_from([5, 26, 33, 61, 64, 85, 87, 200]),
                             st.one_of(st.binary(max_size=10), st.integers(0, 40).map(_u32))), max_size=4)


@settings(max_examples=1500, deadline=None)
@given(_fields(), _others)
def test_any_record_attributes_build_as_the_reference_builds_them(
    fields: dict[int, bytes], others: list[tuple[int, bytes]]
) -> None:
    assert _outcome(codec._record_fast, fields, others) == _outcome(codec._record_of, fields, others)


def _typical(status: int) -> dict[int, bytes]:
    fields = {40: _u32(status), 44: b"sess-1", 1: "usér".encode(), 4: bytes((10, 0, 0, 1)),
              8: bytes((100, 64, 0, 7)), 31: b"02:00:00:00:00:01", 41: _u32(3), 46: _u32(600),
              42: _u32(123), 52: _u32(1), 43: _u32(456), 53: _u32(2), 47: _u32(7), 48: _u32(8),
              55: _u32(NOW - 5)}
    if status == 2:
        fields[49] = _u32(1)
    return fields


@pytest.mark.parametrize("status", [1, 2, 3, 7, 8])
def test_what_nases_send_is_built_without_the_reference(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    fields = _typical(status)
    expected = codec._record_of(dict(fields), [(5, _u32(9))], NAS, NOW)

    def reference(*_: object) -> None:
        raise AssertionError("the reference builder was used for a well-formed record")

    monkeypatch.setattr(codec, "_record_of", reference)
    assert codec._record_fast(dict(fields), [(5, _u32(9))], NAS, NOW) == expected
    assert expected.input_octets == 1 << 32 | 123 and expected.output_octets == 2 << 32 | 456
    assert expected.event_time == NOW - 5 and expected.delay_time == 3


@pytest.mark.parametrize("odd", [
    {41: b"\0\0\0"}, {55: b"\0\0\0\0\0"}, {49: b"\1"}, {4: b"\1\2\3"}, {8: b"\1\2\3\4\5"},
    {44: b"s\0"}, {1: b"\xff"}, {31: b"\xed\xa0\x80"}, {40: _u32(5)}, {40: b"\0\1"},
])
def test_unusual_records_are_left_to_the_reference(odd: dict[int, bytes]) -> None:
    fields = _typical(3)
    fields.update(odd)
    assert _outcome(codec._record_fast, fields, []) == _outcome(codec._record_of, fields, [])
