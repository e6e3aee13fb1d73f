"""The rater's direct event emission (ledger/emit.py) against eventsourcing's ``@event``
decorator path, on seeded random traffic: each emitted event must be stored as exactly the
same bytes as the decorator would store, leave the aggregate in the same state, and replay
(the decorator's apply) to the same state."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate, Snapshot, decorated_funcs

from domain.plans import PlanTerms
from ledger import Ledger
from ledger.billing_period import BillingPeriod
from ledger.journal import receivable
from ledger.nas_sessions import NasSessions
from ledger.session import Session
from rating import DataPack, Fragment

from .support import record

BASE = 1_795_000_000
HEADER = ("originator_id", "originator_version", "timestamp")


def _state(aggregate: Aggregate) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k not in ("_pending_events", "_modified_on")}


def _twin(aggregate: Aggregate) -> Aggregate:
    """A copy of a freshly created aggregate, by replaying its creation event."""
    created = aggregate.collect_events()
    assert len(created) == 1
    twin: Any = None
    for event in created:
        twin = event.mutate(twin)
    return twin


def _same_as_decorator_path(ledger: Ledger, ours: Aggregate, twin: Aggregate, created: Any) -> None:
    """Replays each of ``ours``' pending events on ``twin`` by calling its decorated method,
    and compares stored bytes and state; then rebuilds ``ours`` from its events."""
    events = ours.collect_events()
    assert events, "the scenario emitted nothing"
    for event in events:
        fields = {k: v for k, v in vars(event).items() if k not in HEADER}
        getattr(twin, decorated_funcs[type(event)].__name__)(**fields)
        (theirs,) = twin.collect_events()
        object.__setattr__(theirs, "timestamp", event.timestamp)  # the only field that may differ
        assert type(theirs) is type(event)
        assert ledger.mapper.to_stored_event(event) == ledger.mapper.to_stored_event(theirs)
    assert _state(ours) == _state(twin)
    rebuilt: Any = created.mutate(None)
    for event in events:
        rebuilt = event.mutate(rebuilt)
    assert _state(rebuilt) == _state(ours)


def test_session_and_registry_events_equal_the_decorator_path() -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    ledger = Ledger()
    for n in range(20):
        session = Session(nas_id="nas", acct_session_id=f"s{n}")
        (created,) = session.collect_events()
        twin: Any = created.mutate(None)
        registry = NasSessions(nas_id="nas")
        (registry_created,) = registry.collect_events()
        registry_twin: Any = registry_created.mutate(None)
        start = BASE + rng.randrange(10**6)
        sent: list[Any] = []
        for _ in range(rng.randrange(1, 12)):
            if sent and rng.random() < 0.15:
                rec = rng.choice(sent)  # a retransmission: no event
            else:
                at = start + rng.randrange(0, 4000)
                begin = start + rng.choice([0, 0, 0, 5000])  # sometimes a second incarnation
                rec = record(rng.choice(["start", "interim", "interim", "stop"]), f"s{n}", at=max(at, begin),
                             start=begin, up=rng.randrange(2**40), down=rng.randrange(2**34),
                             user=rng.choice(["", "alice"]))
                sent.append(rec)
            before = set(session.open_incarnations())
            session.apply_record(rec, rng.choice([None, uuid4()]))
            after = set(session.open_incarnations())
            for _ in after - before:
                registry.session_opened(session_id=session.id)
            for _ in before - after:
                registry.session_closed(session_id=session.id)
        if rng.random() < 0.5:
            session.close_by_nas(start + 3000, "accounting-on")
        _same_as_decorator_path(ledger, session, twin, created)
        if registry.pending_events:
            _same_as_decorator_path(ledger, registry, registry_twin, registry_created)


def test_billing_period_events_equal_the_decorator_path() -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    ledger = Ledger()
    gb = 10**9
    for _ in range(20):
        terms = PlanTerms.parse(
            "USD", "30", str(Decimal(rng.randrange(0, 5000)) / 1000), included_gb=str(rng.randrange(0, 3)),
            tiers=[{"up_to_gb": "2", "price_per_gb": "0.7"}, {"up_to_gb": None, "price_per_gb": "0.2"}],
            fair_use={"cap_gb": str(rng.randrange(1, 6)), "action": "throttle", "throttle_rate": "1M/1M"},
        )
        account_id = uuid4()
        period = BillingPeriod(account_id=account_id, start=BASE, end=BASE + 30 * 86_400, currency="USD")
        (created,) = period.collect_events()
        twin: Any = created.mutate(None)
        packs = (DataPack("p1", gb, BASE, BASE + 86_400),) if rng.random() < 0.3 else ()
        cursor = BASE
        for _ in range(rng.randrange(1, 10)):
            length = rng.randrange(0, 3600)
            fragment = Fragment(cursor, cursor + length, rng.randrange(2 * gb), rng.randrange(2 * gb),
                                "standard")
            cursor += length
            period.rate(terms=terms, plan_id=UUID(int=7), fragment=fragment, packs=packs, session_id=uuid4(),
                        incarnation=str(BASE), record_key=f"k{cursor}", subscriber=receivable(account_id))
        _same_as_decorator_path(ledger, period, twin, created)


def test_the_rater_s_tariff_schedule_equals_the_lookup_at_each_instant() -> None:
    """_Pricing.tariff reads a per-batch step function of time; it must give, at any
    instant, what looking the plan and its version up at that instant gives."""
    from domain.plans import version_in_force
    from ledger.rater import _Pricing

    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    ledger = Ledger()
    plans = []
    for n in range(3):
        effective = BASE + rng.randrange(-10**6, 10**6)
        plan = ledger.create_plan(name=f"p{n}", terms=PlanTerms.parse("USD", "10", f"0.{n + 1}"),
                                  effective_from=effective)
        for _ in range(rng.randrange(3)):
            effective += rng.randrange(1, 10**6)  # revisions take effect after the current version
            ledger.revise_plan(plan.id, terms=PlanTerms.parse("USD", "10", str(rng.randrange(1, 9))),
                               effective_from=effective)
        plans.append(ledger.get_plan(plan.id))
    account = ledger.open_account(name="a", plan_id=plans[0].id, usernames=["alice"], opened_at=BASE,
                                  anchor_day=rng.randrange(1, 29))
    changed = BASE
    for _ in range(rng.randrange(4)):
        changed += rng.randrange(0, 10**6)
        ledger.change_plan(account.id, plan_id=rng.choice(plans).id, effective_from=changed)
    account = ledger.get_account(account.id)
    pricing = _Pricing(ledger)
    instants = [BASE + rng.randrange(-3 * 10**6, 6 * 10**6) for _ in range(300)]
    instants += [int(e["effective_from"]) + d for e in account.plans for d in (-1, 0, 1)]
    instants += [v.effective_from + d for p in plans for v in p.plan_versions() for d in (-1, 0, 1)]
    for at in instants:
        tariff = pricing.tariff("alice", at)
        assert tariff is not None
        plan_id = account.plan_at(at)
        assert (tariff.plan_id, tariff.terms) == (
            plan_id, version_in_force(ledger.get_plan(plan_id).plan_versions(), at).terms), at
        assert tariff.anchor_day == account.anchor_day


def _created_through_metaclass(aggregate_class: Any, fields: dict[str, Any]) -> Aggregate:
    aggregate: Aggregate = aggregate_class(**fields)
    return aggregate


def test_created_aggregates_equal_the_metaclass_path() -> None:
    """emit.create against calling the class (eventsourcing's metaclass): the same created
    event (class, fields in the same order, stored bytes), the same aggregate (attributes in
    the same order: a snapshot stores them so), the same snapshot bytes, and the same
    aggregate when the event is replayed; then the aggregate takes events as usual."""
    from ledger.emit import create

    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    ledger = Ledger()
    for _ in range(30):
        text = "".join(rng.choice("ab:-é0") for _ in range(rng.randrange(0, 12)))
        cases: list[tuple[Any, dict[str, Any]]] = [
            (Session, {"nas_id": str(uuid4()), "acct_session_id": text}),
            (NasSessions, {"nas_id": text, "shard": rng.choice(["", "ledger.accounting:3"])}),
            (BillingPeriod, {"account_id": uuid4(), "start": BASE + rng.randrange(-10**6, 10**6),
                             "end": BASE + 10**7, "currency": rng.choice(["USD", "EUR"])}),
        ]
        for aggregate_class, fields in cases:
            theirs = _created_through_metaclass(aggregate_class, dict(fields))
            shuffled = dict(rng.sample(list(fields.items()), len(fields)))  # callers' order may differ
            ours = create(aggregate_class, theirs.id, **shuffled)
            (event,) = ours.pending_events
            (their_event,) = theirs.pending_events
            assert type(event) is type(their_event)
            object.__setattr__(their_event, "timestamp", event.timestamp)  # the only field that may differ
            assert list(vars(event).items()) == list(vars(their_event).items())
            assert ledger.mapper.to_stored_event(event) == ledger.mapper.to_stored_event(their_event)
            for attribute in ("_created_on", "_modified_on"):
                assert getattr(ours, attribute) == event.timestamp
                setattr(theirs, attribute, event.timestamp)
            assert type(ours) is aggregate_class
            assert [(k, v) for k, v in vars(ours).items() if k != "_pending_events"] == [
                (k, v) for k, v in vars(theirs).items() if k != "_pending_events"]
            snapshot, their_snapshot = Snapshot.take(ours), Snapshot.take(theirs)
            object.__setattr__(their_snapshot, "timestamp", snapshot.timestamp)
            assert ledger.mapper.to_stored_event(snapshot) == ledger.mapper.to_stored_event(their_snapshot)
            replayed: Any = event.mutate(None)
            assert list(vars(replayed)) == list(vars(ours))
            assert _state(replayed) == _state(ours)
    session = create(Session, Session.create_id("nas", "s1"), nas_id="nas", acct_session_id="s1")
    session.apply_record(record("start", "s1", at=BASE, start=BASE), None)
    assert [e.originator_version for e in session.collect_events()] == [1, 2]


def test_create_leaves_to_the_metaclass_what_it_was_not_made_for() -> None:
    """A field left to its default or a name the event lacks: the class's own call decides
    (the default filled in; eventsourcing's TypeError)."""
    from ledger.emit import create

    registry = create(NasSessions, NasSessions.create_id("nas"), nas_id="nas")
    (event,) = registry.pending_events
    assert (event.shard, registry.shard) == ("", "")
    with pytest.raises(TypeError):
        create(NasSessions, NasSessions.create_id("nas"), nas_id="nas", shard="", colour="red")


def test_the_rater_s_pricing_answers_each_username_with_its_own_account() -> None:
    """_Pricing remembers each username's account and schedule for its batch: usernames of
    different accounts, asked in turn, each get their own account's tariff; a username no
    account claims gets none, and is found by the next batch's pricing once claimed."""
    from ledger.rater import _Pricing

    ledger = Ledger()
    cheap = ledger.create_plan(name="cheap", terms=PlanTerms.parse("USD", "10", "0.1"), effective_from=0)
    dear = ledger.create_plan(name="dear", terms=PlanTerms.parse("EUR", "20", "0.9"), effective_from=0)
    accounts = {
        "alice": ledger.open_account(name="a", plan_id=cheap.id, usernames=["alice"], opened_at=0),
        "bob": ledger.open_account(name="b", plan_id=dear.id, usernames=["bob"], opened_at=0),
    }
    plans = {"alice": cheap.id, "bob": dear.id}
    pricing = _Pricing(ledger)
    for username in ["alice", "bob", "carol", "bob", "alice", "carol", "alice"]:
        tariff = pricing.tariff(username, BASE)
        if username == "carol":
            assert tariff is None and pricing.account(username) is None
            continue
        assert tariff is not None
        assert (tariff.account_id, tariff.plan_id) == (accounts[username].id, plans[username])
        found = pricing.subscriber(username)
        assert found is not None and found[0].id == accounts[username].id
    carol = ledger.open_account(name="c", plan_id=dear.id, usernames=["carol"], opened_at=0)
    tariff = _Pricing(ledger).tariff("carol", BASE)
    assert tariff is not None and tariff.account_id == carol.id


def test_a_session_given_the_incarnation_applies_records_as_one_that_looks_it_up() -> None:
    """The rater passes apply_record the incarnation it looked up already: the same events
    and state as a session that looks it up itself (restarts, late and repeated records)."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    ledger = Ledger()
    for n in range(20):
        told = Session(nas_id="nas", acct_session_id=f"s{n}")
        looking = _twin(told)
        told.collect_events()
        start = BASE + rng.randrange(10**6)
        sent: list[Any] = []
        for _ in range(rng.randrange(1, 15)):
            if sent and rng.random() < 0.2:
                rec = rng.choice(sent)
            else:
                begin = start + rng.choice([0, 0, 60, 5000])
                rec = record(rng.choice(["start", "interim", "stop"]), f"s{n}", at=begin + rng.randrange(0, 4000),
                             start=begin, up=rng.randrange(2**40), down=rng.randrange(2**34))
                sent.append(rec)
            account_id = rng.choice([None, UUID(int=5)])
            ours = told.apply_record(rec, account_id, rec.idempotency_key(), told.incarnation_for(rec.session_start))
            assert ours == looking.apply_record(rec, account_id)
        for event, theirs in zip(told.collect_events(), looking.collect_events(), strict=True):
            object.__setattr__(theirs, "timestamp", event.timestamp)
            assert ledger.mapper.to_stored_event(event) == ledger.mapper.to_stored_event(theirs)
        assert _state(told) == _state(looking)
