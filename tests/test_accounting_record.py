"""``AccountingRecord.of`` and ``from_dict`` (which build the record without the dataclass's
generated constructor) against the constructor: for any field values, the same record (equal,
of the same type, field by field of the same types, written alike, stored as the same bytes)
or the same error with the same message; and the record behaves as a frozen dataclass."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.persistence import eventstore_env
from domain.accounting import COUNTER_MAX, AccountingRecord, StatusType
from ledger.intake import AccountingLog, ReceivedRecord, _writes_alike

FIELDS = [f.name for f in dataclasses.fields(AccountingRecord)]


def reference_from_dict(data: Any) -> AccountingRecord:
    """``from_dict`` as it was before it built records itself (the generic keyword call)."""
    values = dict(data)
    values["status"] = StatusType(values["status"])
    values["extra"] = dict(values.get("extra") or {})
    return AccountingRecord(**values)


def outcome(build: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return build(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return ("error", type(exc), str(exc))


def assert_same(got: Any, expected: Any) -> None:
    """The same error, or records that nothing downstream can tell apart."""
    if not isinstance(expected, AccountingRecord):
        assert got == expected
        return
    assert type(got) is AccountingRecord
    assert got == expected
    assert repr(got) == repr(expected)
    assert [type(getattr(got, name)) for name in FIELDS] == [type(getattr(expected, name)) for name in FIELDS]
    assert outcome(dataclasses.asdict, got) == outcome(dataclasses.asdict, expected)
    assert outcome(got.to_dict) == outcome(expected.to_dict)
    assert outcome(got.to_json) == outcome(expected.to_json)
    assert outcome(orjson.dumps, got) == outcome(orjson.dumps, expected)
    assert _writes_alike(got) == _writes_alike(expected)
    assert outcome(got.idempotency_key) == outcome(expected.idempotency_key)
    assert outcome(hash, got) == outcome(hash, expected)


_texts = st.text(max_size=8)
_counter = st.one_of(st.integers(0, COUNTER_MAX), st.integers(-3, 3), st.integers(COUNTER_MAX - 2, COUNTER_MAX + 2))
_time = st.one_of(st.integers(0, 1 << 32), st.integers(-2, 2))
_valid = {"acct_session_id": st.text(min_size=1, max_size=8), "session_time": st.integers(0, 1 << 32),
          "input_octets": st.integers(0, COUNTER_MAX), "output_octets": st.integers(0, COUNTER_MAX),
          "delay_time": st.integers(0, 1 << 32)}


@st.composite
def field_values(draw: st.DrawFn, valid: bool = False) -> dict[str, Any]:
    """Every field, mostly what the codec makes, sometimes what the domain refuses (never when
    ``valid``)."""
    values = {
        "nas_id": draw(_texts), "status": draw(st.sampled_from(list(StatusType))),
        "event_time": draw(st.integers(-(1 << 40), 1 << 40)), "received_at": draw(st.integers(0, 1 << 32)),
        "acct_session_id": draw(st.one_of(st.just(""), _texts)), "username": draw(_texts),
        "session_time": draw(_time), "input_octets": draw(_counter), "output_octets": draw(_counter),
        "input_packets": draw(st.integers(0, 1 << 32)), "output_packets": draw(st.integers(0, 1 << 70)),
        "delay_time": draw(_time), "event_timestamp_sent": draw(st.booleans()), "nas_ip": draw(_texts),
        "framed_ip": draw(_texts), "calling_station_id": draw(_texts), "terminate_cause": draw(_texts),
        "multi_session_id": draw(_texts), "extra": draw(st.dictionaries(_texts, _texts, max_size=3)),
    }
    if valid:
        values.update({name: draw(strategy) for name, strategy in _valid.items()})
    return values


@settings(max_examples=600, deadline=None)
@given(field_values())
def test_of_builds_what_the_constructor_builds_or_raises_what_it_raises(values: dict[str, Any]) -> None:
    assert_same(outcome(AccountingRecord.of, *values.values()), outcome(AccountingRecord, **values))


@settings(max_examples=200, deadline=None)
@given(field_values(), st.sampled_from(FIELDS), st.one_of(st.none(), st.floats(allow_nan=False), _texts,
                                                          st.integers(), st.just(StatusType.STOP)))
def test_of_with_a_value_of_another_type_matches_the_constructor(values: dict[str, Any], name: str,
                                                                 value: Any) -> None:
    """The constructor converts and checks no types beyond its invariants; neither does ``of``
    (a float time, a None counter: the same record or the same TypeError/AttributeError)."""
    values[name] = value
    assert_same(outcome(AccountingRecord.of, *values.values()), outcome(AccountingRecord, **values))


_odd_status = st.one_of(st.sampled_from([s.value for s in StatusType]), st.sampled_from(list(StatusType)),
                        _texts, st.integers(0, 9), st.none(), st.just(["start"]))
_odd_extra = st.one_of(st.dictionaries(_texts, _texts, max_size=3), st.none(), st.just({}), st.just([("a", "b")]),
                       st.just(0), st.just("x"))


@st.composite
def stored_dicts(draw: st.DrawFn) -> Any:
    """What to_dict writes, often changed: a key missing, unknown or left out for another, the
    status and ``extra`` as something else; sometimes not a dict at all."""
    data: Any = draw(field_values())
    data["status"] = data["status"].value
    if draw(st.booleans()):
        data["status"] = draw(_odd_status)
    if draw(st.booleans()):
        data["extra"] = draw(_odd_extra)
    change = draw(st.integers(0, 5))
    if change == 1:
        del data[draw(st.sampled_from(FIELDS))]
    elif change == 2:
        data[draw(_texts)] = 1
    elif change == 3:  # as many keys as fields, one of them unknown
        del data[draw(st.sampled_from(FIELDS))]
        data["unknown"] = 1
    elif change == 4:
        return list(data.items())
    return data


@settings(max_examples=800, deadline=None)
@given(stored_dicts())
def test_from_dict_reads_what_it_always_read(data: Any) -> None:
    assert_same(outcome(AccountingRecord.from_dict, data), outcome(reference_from_dict, data))


def test_from_dict_copies_extra() -> None:
    data = AccountingRecord(nas_id="n", status=StatusType.START, event_time=1, received_at=1,
                            acct_session_id="s", extra={"NAS-Port": "1"}).to_dict()
    record = AccountingRecord.from_dict(data)
    data["extra"]["NAS-Port"] = "2"
    assert record.extra == {"NAS-Port": "1"}


@pytest.mark.parametrize("status", list(StatusType))
def test_closes_nas_is_accounting_on_and_off(status: StatusType) -> None:
    assert status.closes_nas == (status in (StatusType.ACCOUNTING_ON, StatusType.ACCOUNTING_OFF))


def sample() -> AccountingRecord:
    return AccountingRecord.of("n", StatusType.INTERIM, 100, 101, "s", "alice", 60, 1 << 40, 7, 3, 4, 1, True,
                               "10.0.0.1", "100.64.0.9", "aa-bb", "", "m", {"NAS-Port": "3"})


def test_a_record_built_by_of_is_frozen() -> None:
    record = sample()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.username = "mallory"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del record.username  # type: ignore[misc]
    assert record.username == "alice"


def test_a_record_built_by_of_is_replaced_copied_and_pickled_as_any() -> None:
    record = sample()
    expected = AccountingRecord(**{name: getattr(record, name) for name in FIELDS})
    assert dataclasses.replace(record, username="bob") == dataclasses.replace(expected, username="bob")
    with pytest.raises(ValueError, match="output_octets out of the 64-bit counter range: -1"):
        dataclasses.replace(record, output_octets=-1)
    for again in (copy.copy(record), copy.deepcopy(record), pickle.loads(pickle.dumps(record))):
        assert_same(again, expected)


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> AccountingLog:
    data_dir: Path = tmp_path_factory.mktemp("intake")
    return AccountingLog(env=eventstore_env("accountinglog", data_dir=data_dir, database_url=""))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field_values(valid=True))
def test_the_accounting_log_stores_the_same_bytes(intake: AccountingLog, monkeypatch: pytest.MonkeyPatch,
                                                   values: dict[str, Any]) -> None:
    """The stored state of a record built by ``of`` or read by ``from_dict`` is the
    constructor's record's, byte for byte (the intake hands the record itself to orjson)."""
    when = datetime(2026, 11, 27, 1, 2, 3, 456, tzinfo=UTC)
    monkeypatch.setattr(ReceivedRecord.Received, "create_timestamp", lambda: when)  # type: ignore[attr-defined]
    expected = AccountingRecord(**values)
    state = intake._event_state("k", expected)
    assert intake._event_state("k", AccountingRecord.of(*values.values())) == state
    assert intake._event_state("k", AccountingRecord.from_dict(expected.to_dict())) == state


def reference_key(record: AccountingRecord) -> str:
    """``idempotency_key`` as written before it read the status's ``_value_``."""
    parts = [record.nas_id, record.acct_session_id, record.status.value,
             str(record.event_time) if record.event_timestamp_sent or record.status.closes_nas else "",
             str(record.session_time), str(record.input_octets), str(record.output_octets),
             str(record.input_packets), str(record.output_packets)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@settings(max_examples=300, deadline=None)
@given(field_values(valid=True))
def test_the_content_key_and_the_dict_are_what_they_were(values: dict[str, Any]) -> None:
    record = AccountingRecord.of(*values.values())
    assert record.idempotency_key() == reference_key(record)
    assert list(record.to_dict().items()) == [*{**values, "status": values["status"].value}.items()]
