"""The projector's fast decoding of stored events (orjson, typed values converted at the top
level only) gives exactly what the json module with the typed-value hook gives, on random
event states: typed values at the top level and nested, 64-bit and wider integers, floats,
digits inside strings, NaN (which orjson refuses) and non-ASCII text."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections.decoding import _decoder, _state

UUID_HEX = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
TYPED = st.one_of(
    st.builds(lambda h: {"_type_": "uuid_hex", "_data_": h}, UUID_HEX),
    st.builds(lambda d: {"_type_": "decimal_str", "_data_": d},
              st.decimals(allow_nan=False, allow_infinity=False).map(str)),
    st.just({"_type_": "datetime_iso", "_data_": "2026-11-26T08:08:15.889936+00:00"}),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.text(max_size=30),
    st.text(alphabet="0123456789:,[", min_size=15, max_size=30),  # digit runs inside strings
    st.integers(min_value=-(2**70), max_value=2**70),  # across orjson's 64-bit range
    st.integers(min_value=2**63 - 5, max_value=2**64 + 5),
    st.floats(allow_nan=True, allow_infinity=False),
)
VALUES = st.recursive(st.one_of(SCALARS, TYPED),
                      lambda inner: st.one_of(st.lists(inner, max_size=4),
                                              st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
STATES = st.dictionaries(st.text(min_size=1, max_size=12), st.one_of(SCALARS, TYPED, VALUES), max_size=10)


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN, and of the same types (an int must not become a float)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=400, deadline=None)
@given(STATES)
def test_fast_decoding_equals_the_json_modules(state: dict[str, Any]) -> None:
    data = json.dumps(state, separators=(",", ":")).encode()
    assert _same(_state(data), _decoder.decode(data.decode("utf8")))


def test_integers_beyond_64_bits_stay_exact() -> None:
    for value in (2**64 - 1, 2**64, 2**64 + 1, -(2**63), -(2**63) - 1, 10**30):
        data = json.dumps({"upload_bytes": value, "id": {"_type_": "uuid_hex", "_data_": "ab" * 16}}).encode()
        decoded = _state(data)
        assert decoded["upload_bytes"] == value and type(decoded["upload_bytes"]) is int
        assert decoded["id"] == "abababab-abab-abab-abab-abababababab"
