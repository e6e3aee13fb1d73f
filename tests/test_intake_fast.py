"""The accounting log's direct encoding against eventsourcing's own path, on random records:
the record id and the stored state are byte for byte what saving a ReceivedRecord would
store, whichever encoder wrote them (orjson for plain records, the transcoder otherwise)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.persistence import eventstore_env
from domain.accounting import COUNTER_MAX, AccountingRecord, StatusType
from domain.ids import accounting_record_id
from ledger.intake import AccountingLog, ReceivedRecord, accounting_record_hex

_texts = st.text(max_size=30)  # any code point, lone surrogates included
_u32 = st.integers(0, (1 << 32) - 1)


@st.composite
def records(draw: Any) -> AccountingRecord:
    status = draw(st.sampled_from(list(StatusType)))
    return AccountingRecord(
        nas_id=draw(_texts), status=status,
        event_time=draw(st.integers(-(1 << 40), 1 << 40) | st.floats(0, 1e12, allow_nan=False)),
        received_at=draw(_u32),
        acct_session_id=draw(st.text(min_size=1, max_size=30)), username=draw(_texts),
        session_time=draw(_u32), input_octets=draw(st.integers(0, COUNTER_MAX)),
        output_octets=draw(st.integers(0, COUNTER_MAX)), input_packets=draw(_u32),
        output_packets=draw(st.integers(0, 1 << 70)), delay_time=draw(_u32),
        event_timestamp_sent=draw(st.booleans()), nas_ip=draw(_texts), framed_ip=draw(_texts),
        calling_station_id=draw(_texts), terminate_cause=draw(_texts), multi_session_id=draw(_texts),
        extra=draw(st.dictionaries(_texts, _texts, max_size=4)),
    )


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> AccountingLog:
    data_dir: Path = tmp_path_factory.mktemp("intake")
    return AccountingLog(env=eventstore_env("accountinglog", data_dir=data_dir, database_url=""))


def reference_state(intake: AccountingLog, key: str, record: AccountingRecord, state: bytes) -> bytes:
    """What eventsourcing's mapper stores for the Received event, at the timestamp ``state`` has."""
    timestamp = intake.mapper.transcoder.decode(state)["timestamp"]
    event = ReceivedRecord.Received(  # type: ignore[attr-defined]
        originator_id=accounting_record_id(key), originator_version=1, timestamp=timestamp,
        originator_topic="ledger.intake:ReceivedRecord", key=key, record=record.to_dict())
    return bytes(intake.mapper.to_stored_event(event).state)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records())
def test_the_stored_state_is_the_mappers_byte_for_byte(intake: AccountingLog, record: AccountingRecord) -> None:
    key = hashlib.sha256(repr(record).encode("utf-8", "surrogatepass")).hexdigest()  # names may not encode
    state = intake._event_state(key, record)
    assert state == reference_state(intake, key, record, state)


def test_plain_records_take_orjsons_path_and_odd_ones_the_transcoders(
        intake: AccountingLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths are exercised above: what the codec makes goes through orjson; a float, an
    int beyond 64 bits or a nested object (whose floats orjson writes otherwise) through the
    transcoder (counted here, so the comparison covers both)."""
    calls: list[int] = []
    monkeypatch.setattr(orjson, "dumps", lambda *a, **k: calls.append(1) or orjson_dumps(*a, **k))
    plain = AccountingRecord(nas_id="n", status=StatusType.INTERIM, event_time=5, received_at=5,
                             acct_session_id="s", extra={"NAS-Port": "1"})
    intake._event_state("k", plain)
    assert calls == [1]
    for odd in (AccountingRecord(nas_id="n", status=StatusType.STOP, event_time=5.5, received_at=5,
                                 acct_session_id="s"),
                AccountingRecord(nas_id="n", status=StatusType.STOP, event_time=5, received_at=5,
                                 acct_session_id="s", output_packets=1 << 70),
                AccountingRecord(nas_id={"n": 1e-7}, status=StatusType.STOP,  # type: ignore[arg-type]
                                 event_time=5, received_at=5, acct_session_id="s")):
        state = intake._event_state("k", odd)
        assert state == reference_state(intake, "k", odd, state)


orjson_dumps = orjson.dumps


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_the_record_id_is_uuid5s(key: str) -> None:
    assert accounting_record_hex(key) == accounting_record_id(key).hex


def test_a_large_batch_keeps_its_order_and_dedupes(intake: AccountingLog) -> None:
    """A batch of 600 (the server's batches go up to 512): notification ids in the batch's
    order; a record already stored and one twice in the batch, far apart, stored once."""
    def batch(tag: str, n: int) -> list[AccountingRecord]:
        return [AccountingRecord(nas_id="n", status=StatusType.INTERIM, event_time=i, received_at=i,
                                 event_timestamp_sent=True, acct_session_id=f"{tag}{i}") for i in range(n)]

    start = intake.position()
    first = batch("a", 600)
    assert intake.append(first) == [True] * 600
    stored = intake.recorder.select_notifications(start=start + 1, limit=1000)
    assert [n.originator_id for n in stored] == [accounting_record_id(r.idempotency_key()) for r in first]
    second = batch("b", 600)
    second[300] = first[500]  # already stored
    second[550] = second[10]  # twice in the batch
    assert intake.append(second) == [i not in (300, 550) for i in range(600)]
    assert intake.position() == start + 600 + 598


@pytest.mark.parametrize("when", [
    datetime(2026, 11, 26, 22, 40, 0, 0, tzinfo=UTC), datetime(2026, 11, 26, 22, 40, 1, 7, tzinfo=UTC),
    datetime(1999, 1, 2, 3, 4, 5, 999999, tzinfo=UTC),
    datetime(2026, 11, 26, 23, 40, 0, 120, tzinfo=timezone(timedelta(hours=1))),
])
def test_the_event_time_is_written_as_the_mapper_writes_it(
        intake: AccountingLog, monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    """orjson writes a UTC timestamp itself (whole seconds too); another zone is written as text."""
    monkeypatch.setattr(ReceivedRecord.Received, "create_timestamp", lambda: when)  # type: ignore[attr-defined]
    record = AccountingRecord(nas_id="n", status=StatusType.INTERIM, event_time=5, received_at=5,
                              acct_session_id="s", extra={"NAS-Port": "1"})
    state = intake._event_state("k", record)
    assert intake.mapper.transcoder.decode(state)["timestamp"] == when
    assert state == reference_state(intake, "k", record, state)
