"""The enforcer's fast paths act as the reference does: its topic-first reading of the log
gives what decoding every event with the mapper gives (randomized, seeded), it passes over
only accounts no balance can act on, and what it keeps of an account between batches
follows every change the log records (credit limit, plan change, plan revision, suspension,
resumption): an account first seen as "nothing to do" is acted on when that changes."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.enforcement_triggers import WATCHED_TOPICS, TriggerReader, read_by_mapper, watched_rows
from adapters.enforcer import AccountFacts, Enforcer, balance_matters
from adapters.radius.codec import DISCONNECT_REQUEST
from api.bootstrap import Runtime
from domain.enforcement import balance_decision
from domain.plans import PlanTerms
from ledger.account import Account

from .support import record, settle
from .test_enforcement import SECRET, NasStandIn

GB = 10**9


@pytest.fixture
def nas() -> Iterator[NasStandIn]:
    stand_in = NasStandIn()
    yield stand_in
    stand_in.close()


@given(model=st.sampled_from(["prepaid", "postpaid"]),
       limit=st.decimals(min_value=-5, max_value=5, places=2),
       credit=st.decimals(min_value=-10, max_value=10, places=2))
def test_only_accounts_no_balance_can_act_on_are_passed_over(model: str, limit: Decimal, credit: Decimal) -> None:
    if not balance_matters(model, limit):
        assert balance_decision(model, credit, limit) is None


@given(plans=st.lists(st.tuples(st.integers(0, 100), st.uuids()), min_size=1, max_size=5),
       at=st.integers(-10, 110))
def test_facts_pick_the_plan_the_account_would(plans: list[tuple[int, UUID]], at: int) -> None:
    plans.sort(key=lambda p: p[0])
    account = Account(name="a", plan_id=plans[0][1], currency="USD", usernames=["a"], opened_at=plans[0][0])
    for effective_from, plan_id in plans[1:]:
        account.change_plan(plan_id=plan_id, effective_from=effective_from)
    assert AccountFacts.of(account).plan_at(at) == account.plan_at(at)


def _random_ledger(runtime: Runtime, seed: int) -> None:
    """Accounts on prepaid, postpaid and fair-use plans with payments, usage (sessions opening,
    going on, stopping), plan changes and revisions, suspensions, billing settings."""
    rng = random.Random(seed)
    ledger = runtime.ledger
    nas = ledger.register_nas(address="127.0.0.1", name="bng", secret="s")
    plans = [ledger.create_plan(name="post", terms=PlanTerms.parse("USD", "10", "0.5"), effective_from=0),
             ledger.create_plan(name="pre", terms=PlanTerms.parse("USD", "0", "1", payment_model="prepaid"),
                                effective_from=0),
             ledger.create_plan(name="fair", terms=PlanTerms.parse(
                 "USD", "0", "0", fair_use={"cap_gb": "2", "action": "throttle", "throttle_rate": "1M/1M"}),
                 effective_from=0)]
    accounts = [ledger.open_account(name=f"a{i}", plan_id=rng.choice(plans).id, usernames=[f"u{i}"], opened_at=0,
                                    credit_limit=Decimal(rng.choice([0, 0, 5]))) for i in range(12)]
    # One account always crosses its fair-use cap (whatever the random changes do to the others),
    # so every seed exercises a fair-use trigger.
    ledger.open_account(name="capped", plan_id=plans[2].id, usernames=["ucapped"], opened_at=0)
    t0 = 1_795_000_000
    for step in range(4):
        status = "start" if step == 0 else ("stop" if step == 3 else "interim")
        records = [record(status, "scapped", at=t0 + 300 * step, start=t0, down=step * 2 * GB, user="ucapped",
                          nas=str(nas.id))]
        for i, account in enumerate(accounts):
            if rng.random() < 0.2:
                ledger.record_payment(idempotency_key=f"p-{seed}-{step}-{i}", account_id=account.id,
                                      amount=Decimal(rng.randint(1, 9)), currency="USD", method="cash",
                                      reference="", received_at=t0)
            at = t0 + 300 * step
            status = "start" if step == 0 else ("stop" if step == 3 else "interim")
            records.append(record(status, f"s{i}", at=at, start=t0, down=step * rng.randint(0, 2) * GB,
                                  user=f"u{i}", nas=str(nas.id)))
        runtime.intake.append(records)
        change = rng.choice(accounts)
        roll = rng.random()
        if roll < 0.3:
            ledger.set_account_status(change.id, status=rng.choice(["suspended", "active"]), at=t0)
        elif roll < 0.5:
            ledger.change_plan(change.id, plan_id=rng.choice(plans).id, effective_from=t0 + step)
        elif roll < 0.7:
            ledger.revise_plan(rng.choice(plans).id, terms=PlanTerms.parse("USD", "5", "0.25"),
                              effective_from=t0 + step + 1)
        else:
            loaded = ledger.get_account(change.id)
            loaded.change_billing(tax_zone="", tax_rate=Decimal(0), credit_limit=Decimal(rng.randint(0, 3)))
            ledger.save(loaded)
        settle(runtime)


def test_reading_by_topic_equals_decoding_every_event(runtime: Runtime) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    _random_ledger(runtime, seed)
    notifications = runtime.ledger.recorder.select_notifications(start=1, limit=1_000_000)
    rows = watched_rows(runtime.ledger.recorder, 1, notifications[-1].id, 1_000_000)
    assert [r.id for r in rows] == [n.id for n in notifications if n.topic in WATCHED_TOPICS]
    assert watched_rows(runtime.ledger.recorder, rows[2].id, rows[6].id, 3) == rows[2:5]  # bounds and limit
    fast = TriggerReader(runtime.ledger.mapper).read(rows)
    reference = read_by_mapper(runtime.ledger.mapper, notifications)
    assert fast.accounts and fast.changed_accounts and fast.changed_plans, "the ledger exercises every kind"
    assert any(t.new_sessions for t in fast.accounts.values()) and any(t.fair_use for t in fast.accounts.values())
    assert fast == reference, f"seed {seed}"


def test_rated_usage_attributed_by_its_period_gives_what_decoding_gives_batch_by_batch(runtime: Runtime) -> None:
    """One reader over the log in random batches (as the enforcer reads it), attributing a
    period's rated usages by the period once one of its events was read: each batch reads as
    decoding every event of it with the mapper reads."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    _random_ledger(runtime, seed)
    notifications = runtime.ledger.recorder.select_notifications(start=1, limit=1_000_000)
    rows = watched_rows(runtime.ledger.recorder, 1, notifications[-1].id, 1_000_000)
    by_id = {n.id: n for n in notifications}
    reader = TriggerReader(runtime.ledger.mapper)
    start = 0
    while start < len(rows):
        batch = rows[start:start + rng.randint(1, 12)]
        start += len(batch)
        assert reader.read(batch) == read_by_mapper(runtime.ledger.mapper, [by_id[r.id] for r in batch]), \
            f"seed {seed}, rows {batch[0].id}-{batch[-1].id}"
    usages = [r for r in rows if r.topic.endswith("BillingPeriod.UsageRated")]
    assert len({r.originator_id for r in usages}) < len(usages), "periods with several usages: the memo is used"
    assert set(reader.period_accounts) == {r.originator_id for r in rows if r.topic.startswith("ledger.billing_period")}


# ---- what the enforcer keeps of an account follows the log ------------------------------------------------


def _setup(runtime: Runtime, nas: NasStandIn, **plan: Any) -> tuple[str, UUID, UUID]:
    ledger = runtime.ledger
    registered = ledger.register_nas(address="127.0.0.1", name="bng", secret=SECRET.decode(), vendor="mikrotik",
                                     coa_port=nas.port)
    plan_id = ledger.create_plan(name="p", terms=PlanTerms.parse("USD", "0", "1.00", rate_limit="20M/20M", **plan),
                                 effective_from=0).id
    account = ledger.open_account(name="a", plan_id=plan_id, usernames=["alice"], opened_at=0)
    return str(registered.id), account.id, plan_id


def _use(runtime: Runtime, enforcer: Enforcer, nas_id: str, total: int, status: str = "interim") -> None:
    now = int(time.time())
    runtime.intake.append([record(status, "S1", at=now, start=now - 600, down=total, user="alice", nas=nas_id,
                                  framed_ip="100.64.1.9")])
    _enforce(runtime, enforcer)


def _enforce(runtime: Runtime, enforcer: Enforcer) -> None:
    settle(runtime)
    while enforcer.step():
        pass


def _enforcement(runtime: Runtime, account_id: UUID) -> dict[str, Any] | None:
    return runtime.ledger.get_account(account_id).enforcement


def test_a_credit_limit_set_later_cuts_off_an_account_first_passed_over(runtime: Runtime, nas: NasStandIn) -> None:
    nas_id, account_id, _ = _setup(runtime, nas)
    enforcer = Enforcer(runtime.ledger, runtime.engine, runtime.projector)
    _use(runtime, enforcer, nas_id, 0, "start")
    _use(runtime, enforcer, nas_id, 3 * GB)  # owes 3.00, postpaid without a limit: nothing to do
    assert enforcer.facts[account_id.hex] is not None and _enforcement(runtime, account_id) is None
    account = runtime.ledger.get_account(account_id)
    account.change_billing(tax_zone="", tax_rate=Decimal(0), credit_limit=Decimal(2))
    runtime.ledger.save(account)
    _enforce(runtime, enforcer)
    assert _enforcement(runtime, account_id) == {"action": "block", "reason": "credit-limit", "rate": "",
                                                 "at": pytest.approx(time.time(), abs=60)}
    assert nas.received and nas.received[-1][0] == DISCONNECT_REQUEST


def test_a_plan_change_or_revision_to_prepaid_is_seen(runtime: Runtime, nas: NasStandIn) -> None:
    nas_id, account_id, plan_id = _setup(runtime, nas)
    ledger = runtime.ledger
    enforcer = Enforcer(ledger, runtime.engine, runtime.projector)
    _use(runtime, enforcer, nas_id, 0, "start")
    _use(runtime, enforcer, nas_id, 1 * GB)
    assert _enforcement(runtime, account_id) is None
    # The plan itself becomes prepaid (a revision, not an account event): the next usage acts.
    ledger.revise_plan(plan_id, terms=PlanTerms.parse("USD", "0", "1.00", payment_model="prepaid"), effective_from=1)
    _use(runtime, enforcer, nas_id, 2 * GB)
    assert _enforcement(runtime, account_id)["reason"] == "prepaid-exhausted"
    ledger.record_payment(idempotency_key="top-up-1", account_id=account_id, amount=Decimal(50), currency="USD",
                          method="cash", reference="", received_at=0)
    _enforce(runtime, enforcer)
    assert _enforcement(runtime, account_id) is None
    # A change to a dearer prepaid plan: the next usage, at its price, uses the credit up.
    other = ledger.create_plan(name="pre2", terms=PlanTerms.parse("USD", "0", "100", payment_model="prepaid"),
                               effective_from=0)
    _use(runtime, enforcer, nas_id, 40 * GB)  # 40.00 of 50.00 at the old price: still credit
    assert _enforcement(runtime, account_id) is None
    ledger.change_plan(account_id, plan_id=other.id, effective_from=0)
    _use(runtime, enforcer, nas_id, 41 * GB)  # 1 GB more at 100.00: credit gone
    assert _enforcement(runtime, account_id)["reason"] == "prepaid-exhausted"


def test_suspension_and_resumption_of_a_cached_account(runtime: Runtime, nas: NasStandIn) -> None:
    nas_id, account_id, _ = _setup(runtime, nas)
    ledger = runtime.ledger
    enforcer = Enforcer(ledger, runtime.engine, runtime.projector)
    _use(runtime, enforcer, nas_id, 0, "start")
    assert enforcer.facts[account_id.hex] is not None
    ledger.set_account_status(account_id, status="suspended", at=0)
    _enforce(runtime, enforcer)
    assert _enforcement(runtime, account_id)["reason"] == "suspended"
    ledger.set_account_status(account_id, status="active", at=0)
    _enforce(runtime, enforcer)
    assert _enforcement(runtime, account_id) is None
    # A restarted enforcer (nothing cached) decides the same.
    ledger.set_account_status(account_id, status="suspended", at=0)
    _enforce(runtime, Enforcer(ledger, runtime.engine, runtime.projector))
    assert _enforcement(runtime, account_id)["reason"] == "suspended"


def test_what_the_enforcer_keeps_is_dropped_when_the_ledger_forgets_or_another_enforcer_acts(
        runtime: Runtime, nas: NasStandIn) -> None:
    nas_id, account_id, _ = _setup(runtime, nas)
    ledger = runtime.ledger
    enforcer = Enforcer(ledger, runtime.engine, runtime.projector)
    _use(runtime, enforcer, nas_id, 0, "start")
    kept = enforcer.facts[account_id.hex]
    ledger.forget_live_sessions()  # e.g. a fenced site set its divergent tail aside
    assert enforcer.facts[account_id.hex] is kept  # never under a running step: at the next one
    _enforce(runtime, enforcer)  # starts over from the recorded position, reading the account again
    assert enforcer.facts[account_id.hex] is not kept and enforcer.facts[account_id.hex] == kept
    _use(runtime, enforcer, nas_id, 1 * GB)
    assert account_id.hex in enforcer.facts
    other = Enforcer(ledger, runtime.engine, runtime.projector)  # took over, then went away
    _use(runtime, other, nas_id, 2 * GB)
    ledger.set_account_status(account_id, status="suspended", at=0)
    settle(runtime)
    enforcer.step()
    assert _enforcement(runtime, account_id)["reason"] == "suspended"


def test_a_decision_is_recorded_with_its_position_and_a_restart_re_decides_the_rest(
        runtime: Runtime, nas: NasStandIn) -> None:
    nas_id, account_id, _ = _setup(runtime, nas)
    ledger = runtime.ledger
    enforcer = Enforcer(ledger, runtime.engine, runtime.projector)
    enforcer.record_interval = 3600  # a batch that decides nothing leaves its position unrecorded
    _use(runtime, enforcer, nas_id, 0, "start")
    _use(runtime, enforcer, nas_id, 1 * GB)
    assert ledger.tracked_position("enforcer") == 0 < enforcer.position
    ledger.set_account_status(account_id, status="suspended", at=0)
    _enforce(runtime, enforcer)
    assert ledger.tracked_position("enforcer") == enforcer.position  # recorded with the decision
    sent = len(nas.received)
    assert sent == 1 and _enforcement(runtime, account_id)["reason"] == "suspended"
    _use(runtime, enforcer, nas_id, 2 * GB)  # still suspended: nothing new to decide or record
    assert ledger.tracked_position("enforcer") < enforcer.position
    restarted = Enforcer(ledger, runtime.engine, runtime.projector)  # after a crash
    _enforce(runtime, restarted)
    assert restarted.position == enforcer.position and len(nas.received) == sent
    # A session opened while suspended is cut off, by whichever enforcer runs.
    now = int(time.time())
    runtime.intake.append([record("start", "S2", at=now, user="alice", nas=nas_id)])
    _enforce(runtime, restarted)
    assert len(nas.received) == sent + 2  # both open sessions (S1 and S2) disconnected again
