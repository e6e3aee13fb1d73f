"""The encoders generated per event class (ledger/event_encoders.py) against eventsourcing's own
Mapper and JSONTranscoder: random events of the ledger's classes (well-typed ones, ones with one
odd value, ones with any values at all: big integers, Decimals of many digits, NaN, floats,
unicode, datetimes in other zones, UUIDs inside lists, fields in another order) must be stored as
exactly the same StoredEvent (or refused alike), and well-typed ones must take the generated
encoder, not the fallback."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from eventsourcing.domain import Snapshot
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, Mapper, UUIDAsHex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.bootstrap import build_runtime
from api.settings import Settings
from domain.plans import PlanTerms
from ledger import Ledger
from ledger.account import Account
from ledger.billing_period import BillingPeriod
from ledger.event_encoders import ClassEncodingMapper, _kind, build_encoder, plain_tree
from ledger.nas_sessions import NasSessions
from ledger.session import Session

from .support import ingest, record


def _reference() -> Mapper[Any]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return Mapper(transcoder)


REFERENCE = _reference()
FAST = Ledger().mapper
CLASSES = [Session.Registered, Session.RecordApplied, Session.ClosedByNas,  # type: ignore[attr-defined]
           BillingPeriod.Opened, BillingPeriod.UsageRated, BillingPeriod.FairUseCapReached,  # type: ignore[attr-defined]
           NasSessions.Started, NasSessions.SessionsChanged, NasSessions.NasRestarted,  # type: ignore[attr-defined]
           Account.Opened, Snapshot]  # type: ignore[attr-defined]

texts = st.text(max_size=12)  # any unicode, surrogates and control characters included
big_ints = st.one_of(st.integers(-(2**63), 2**64 - 1), st.integers(-(2**80), 2**80))
decimals = st.one_of(st.decimals(allow_nan=True, places=None),
                     st.integers(-(10**40), 10**40).map(lambda n: Decimal(n).scaleb(-30)),
                     st.sampled_from([Decimal(0), Decimal("-0"), Decimal("-0.000000"), Decimal("1E+30")]))
datetimes_utc = st.datetimes(timezones=st.just(UTC))
datetimes_any = st.datetimes(timezones=st.sampled_from(
    [UTC, timezone(timedelta(hours=-3)), timezone(timedelta(hours=5, minutes=30, seconds=7)), ZoneInfo("UTC")]))
plain = st.one_of(st.none(), st.booleans(), big_ints, texts)
plain_trees = st.recursive(plain, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner),
    st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
odd = st.one_of(st.floats(), st.uuids(), decimals, datetimes_any, st.datetimes(),
                st.lists(st.one_of(st.uuids(), st.floats(), decimals), min_size=1, max_size=2),
                st.dictionaries(st.integers(0, 3), plain, min_size=1, max_size=2),
                texts.map(_Str := type("_Str", (str,), {})), st.sets(st.integers(), max_size=2))
anything = st.recursive(st.one_of(plain, odd), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.one_of(texts, st.integers(0, 2)), inner, max_size=3)),
    max_leaves=8)


def _typed(kind: str) -> st.SearchStrategy[Any]:
    """Values of a field of ``kind`` (event_encoders._kind of its annotation), as the rater makes them."""
    return {"UUID": st.one_of(st.uuids(), st.none()), "Decimal": decimals,
            "datetime": st.one_of(datetimes_utc, datetimes_any, st.datetimes()),
            "plain": plain}.get(kind, plain_trees)


def _event(cls: type, values: dict[str, Any]) -> Any:
    """An event of ``cls`` as emit() and the decorator make it: its fields in declaration order."""
    event = object.__new__(cls)
    object.__setattr__(event, "__dict__", values)
    return event


@st.composite
def events(draw: st.DrawFn, odd_values: int = 0, any_values: bool = False) -> tuple[Any, bool]:
    """An event of one of CLASSES and whether its values are all of their fields' types."""
    cls = draw(st.sampled_from(CLASSES))
    fields = dataclasses.fields(cls)
    values = {"originator_id": draw(st.uuids()), "originator_version": draw(st.integers(1, 2**40))}
    for field in fields[2:]:
        values[field.name] = draw(anything if any_values else _typed(_kind(field.type)))
    typed = not any_values
    for _ in range(odd_values):
        name = draw(st.sampled_from([f.name for f in fields[2:]]))
        values[name] = draw(odd)
        typed = False
    return _event(cls, values), typed


def _stored(mapper: Mapper[Any], event: Any) -> Any:
    try:
        return mapper.to_stored_event(event)
    except Exception as refused:  # noqa: BLE001 - the same refusal is what is compared
        return type(refused)


def _same_as_reference(event: Any) -> None:
    ours, theirs = _stored(FAST, event), _stored(REFERENCE, event)
    assert ours == theirs, (type(event).__qualname__, vars(event))


@given(events())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_well_typed_events_take_the_generated_encoder_and_store_the_reference_bytes(drawn: tuple[Any, bool]) -> None:
    event, _ = drawn
    _same_as_reference(event)
    encoder = build_encoder(type(event), FAST.transcoder)
    assert encoder is not None
    if type(event) is not Snapshot and not _too_big(vars(event)):
        # not the fallback: the generated code itself wrote the reference's bytes
        assert encoder(vars(event)) == REFERENCE.to_stored_event(event).state


def _too_big(value: Any) -> bool:
    """An integer orjson refuses (beyond 64 bits), anywhere in ``value``: the fallback's to write."""
    if type(value) is int:
        return not -(2**63) <= value < 2**64
    if type(value) in (list, tuple):
        return any(_too_big(v) for v in value)
    if type(value) is dict:
        return any(_too_big(v) for v in value.values())
    return False


@given(events(odd_values=1))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_an_event_with_one_odd_value_is_stored_as_the_reference_stores_it(drawn: tuple[Any, bool]) -> None:
    _same_as_reference(drawn[0])


@given(events(any_values=True))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_an_event_with_any_values_is_stored_as_the_reference_stores_it(drawn: tuple[Any, bool]) -> None:
    _same_as_reference(drawn[0])


@given(events(), st.randoms(use_true_random=False))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fields_in_another_order_are_written_in_that_order(drawn: tuple[Any, bool], rng: random.Random) -> None:
    """A decoded event has its originator id and version last; any other order is kept too."""
    event, _ = drawn
    items = list(vars(event).items())
    rng.shuffle(items)
    _same_as_reference(_event(type(event), dict(items)))
    extra = dict(vars(event)) | {"class_version": 2}
    _same_as_reference(_event(type(event), extra))


@given(anything)
@settings(max_examples=40, deadline=None)
def test_plain_tree_accepts_exactly_what_needs_no_transcoding(value: Any) -> None:
    def reference(v: Any) -> bool:
        if type(v) in (list, tuple):
            return all(reference(i) for i in v)
        if type(v) is dict:
            return all(type(k) is str and reference(i) for k, i in v.items())
        return type(v) in (str, int, bool, type(None))
    assert plain_tree(value) == reference(value)


def test_the_ledger_stores_the_rater_events_as_the_reference_encodes_them(tmp_path: Path) -> None:
    """A rated session's stored events (seeded traffic) decode to events that the reference
    mapper encodes to the very bytes stored."""
    runtime = build_runtime(Settings(data_dir=tmp_path))
    ledger = runtime.ledger
    assert isinstance(ledger.mapper, ClassEncodingMapper)
    seed = random.randrange(2**32)
    print("seed", seed)
    rng = random.Random(seed)
    plan = ledger.create_plan(name="P", terms=PlanTerms.parse("USD", "10.00", "0.45"), effective_from=0)
    ledger.open_account(name="a", plan_id=plan.id, usernames=["alice"], opened_at=0)
    records, up, down, at = [], 0, 0, 1_795_000_000
    for status in ["start", "interim", "interim", "stop"]:
        up, down, at = up + rng.randrange(2**33), down + rng.randrange(2**34), at + 300
        records.append(record(status, "s-1", at=at, start=1_795_000_000, up=up, down=down))
    ingest(runtime, *records)
    stored = ledger.recorder.select_notifications(start=1, limit=1000)
    topics = set()
    for notification in stored:
        event = ledger.mapper.to_domain_event(notification)
        state = vars(event)
        emitted = _event(type(event), {"originator_id": state.pop("originator_id"),
                                       "originator_version": state.pop("originator_version")} | state)
        assert REFERENCE.to_stored_event(emitted).state == notification.state
        topics.add(notification.topic)
    runtime.close()
    assert {"ledger.session:Session.RecordApplied", "ledger.billing_period:BillingPeriod.UsageRated"} <= topics


def test_a_datetime_in_utc_is_written_as_isoformat_writes_it() -> None:
    encoder = build_encoder(BillingPeriod.FairUseCapReached, FAST.transcoder)  # type: ignore[attr-defined]
    for when in (datetime(1, 1, 1, tzinfo=UTC), datetime(2026, 11, 26, 19, 0, 0, 1, tzinfo=UTC),
                 datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)):
        event = _event(BillingPeriod.FairUseCapReached, {  # type: ignore[attr-defined]
            "originator_id": UUID(int=1), "originator_version": 2, "timestamp": when,
            "account_id": UUID(int=3), "at": 4, "action": "throttle", "throttle_rate": "1M"})
        assert encoder(vars(event)) == REFERENCE.to_stored_event(event).state
