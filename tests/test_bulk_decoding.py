"""Stored states decoded by orjson (``ledger/bulk_decoding.py``) are exactly what the ledger's
transcoder decodes, on random values (hypothesis): UUIDs, Decimals and datetimes, nested
lists and objects, objects that only look like transcoded ones, floats, integers beyond 64
bits, NaN, unknown transcoding names (the transcoder's error); and aggregates loaded in bulk
with it equal the repository's."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.bootstrap import Runtime
from domain.plans import PlanTerms
from ledger.account import Account
from ledger.application import Ledger
from ledger.bulk import load_aggregates
from ledger.bulk_decoding import decode_state

TRANSCODER = Ledger().mapper.transcoder

keys = st.text(max_size=6) | st.sampled_from(["_type_", "_data_", "amount"])
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=12)
           | st.floats(allow_nan=False) | st.uuids() | st.decimals(allow_nan=False, allow_infinity=False)
           | st.datetimes(timezones=st.just(UTC)))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=20)


def _same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down (1 == 1.0 == True would hide a difference)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _decodes_as_the_transcoder(data: bytes) -> None:
    """The same value, or the same kind of error."""
    try:
        expected = TRANSCODER.decode(data)
    except Exception as error:  # noqa: BLE001 - the same error is expected
        with pytest.raises(type(error)):
            decode_state(TRANSCODER, data)
    else:
        assert _same(decode_state(TRANSCODER, data), expected)


@given(values)
@settings(max_examples=500, deadline=None)
def test_decoded_states_are_the_transcoder_s(value: Any) -> None:
    _decodes_as_the_transcoder(TRANSCODER.encode({"state": value}))


@pytest.mark.parametrize("text", [
    '{"a": 123456789012345678901234567890}', '{"a": -9223372036854775809}', '{"a": 1e400}', '{"a": NaN}',
    '{"a": [1.5, {"_type_": "decimal_str", "_data_": "1.5"}]}', '{"a": "\\ud800"}',
    '{"_type_": "decimal_str", "_data_": "2"}', '{"_type_": "decimal_str", "_data_": "2", "x": 1}',
    '{"a": {"_type_": "uuid_hex", "_data_": {"_type_": "decimal_str", "_data_": "1"}}}',
    '{"a": {"_data_": "x", "_type_": "datetime_iso"}}', '{"a": {"_type_": ["x"], "_data_": 1}}',
])
def test_edge_cases_decode_as_the_transcoder_decodes_them(text: str) -> None:
    _decodes_as_the_transcoder(text.encode())


def test_unknown_transcodings_raise_the_transcoder_s_error() -> None:
    data = json.dumps({"a": {"_type_": "no_such_type", "_data_": 1}}).encode()
    with pytest.raises(TypeError, match="no_such_type"):
        decode_state(TRANSCODER, data)


def test_accounts_loaded_in_bulk_equal_the_repository_s(runtime: Runtime) -> None:
    ledger = runtime.ledger
    plan = ledger.create_plan(name="Home", terms=PlanTerms.parse("USD", "30", "1"), effective_from=0)
    ids = []
    for n in range(12):
        account = ledger.open_account(name=f"A {n}", plan_id=plan.id, usernames=[f"bulk-{n}"], opened_at=1000 + n,
                                      tax_rate=Decimal("0.16"))
        if n % 3 == 0:
            ledger.change_plan(account.id, plan_id=plan.id, effective_from=5000)
        ids.append(account.id)
    loaded = load_aggregates(ledger, Account, [*ids, UUID(int=7)])
    assert list(loaded) == ids
    for account_id in ids:
        expected = ledger.get_account(account_id)
        assert vars(loaded[account_id]) == vars(expected)
    assert datetime.now(UTC) - loaded[ids[0]].created_on < timedelta(minutes=5)
    assert isinstance(loaded[ids[0]].tax_rate, Decimal)
