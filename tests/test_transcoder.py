"""The ledger's orjson event encoder writes exactly the bytes eventsourcing's standard JSON
transcoder writes, for any value (hypothesis), and decodes back the same way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger.transcoder import FastJSONTranscoder


def _transcoder(cls: type[JSONTranscoder]) -> JSONTranscoder:
    transcoder = cls()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


STANDARD, FAST = _transcoder(JSONTranscoder), _transcoder(FastJSONTranscoder)

scalars = st.one_of(
    st.none(), st.booleans(), st.text(), st.integers(), st.integers(-(2**70), 2**70),
    st.uuids(), st.decimals(allow_nan=False), st.floats(), st.tuples(st.integers()),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3))])),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=5), st.integers(0, 3)), inner,
                                                 max_size=4)), max_leaves=20)


def _encoded(transcoder: JSONTranscoder, value: Any) -> Any:
    try:
        return transcoder.encode(value)
    except Exception as refused:  # noqa: BLE001 - the same refusal is what is compared
        return type(refused)


@given(st.dictionaries(st.text(max_size=8), values, max_size=8))
@settings(max_examples=500, deadline=None)
def test_the_fast_encoder_writes_the_standard_bytes(state: dict[str, Any]) -> None:
    assert _encoded(FAST, state) == _encoded(STANDARD, state)


def test_the_ledger_stores_events_with_the_fast_encoder_and_reads_them_back() -> None:
    ledger = Ledger()
    assert isinstance(ledger.mapper.transcoder, FastJSONTranscoder)
    state = {"at": datetime(2026, 11, 26, tzinfo=UTC), "big": 2**80, "nested": [{"x": 1.5}]}
    assert ledger.mapper.transcoder.decode(ledger.mapper.transcoder.encode(state)) == state


def test_a_value_neither_encoder_knows_is_refused_by_both() -> None:
    with pytest.raises(TypeError):
        FAST.encode({"set": {1, 2}})
