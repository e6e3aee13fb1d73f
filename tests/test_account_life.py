"""An account is charged only for usage inside its life: from its opening to its termination.

A subscriber migrated from another system while online keeps a session whose counters start
at the session's start, before the account existed; that part was the old system's to bill.
Usage reported after termination is not the account's either. The session still counts all
of it (its counters and totals are what the NAS said); only pricing is bounded."""

from __future__ import annotations

from decimal import Context, Decimal
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.bootstrap import Runtime
from domain.plans import PlanTerms
from projections import queries

from .support import ingest, record, settle

T0 = 1_795_000_000  # 2026-11-18 11:06:40 UTC, mid billing period
WIDE = Context(prec=100)


def alice(runtime: Runtime, opened_at: int) -> str:
    plan = runtime.ledger.create_plan(name="Flat 0.50", terms=PlanTerms.parse("USD", "30", "0.50"),
                                      effective_from=0)
    account = runtime.ledger.open_account(name="Alice", plan_id=plan.id, usernames=["alice"],
                                          opened_at=opened_at)
    return str(account.id)


def owed(runtime: Runtime, account_id: str) -> Decimal:
    found = queries.balance(runtime.engine, account_id)
    assert found is not None
    return Decimal(found["receivable"])


def charge(total_bytes: int) -> Decimal:
    return WIDE.divide(WIDE.multiply(Decimal("0.50"), Decimal(total_bytes)), Decimal(10**9))


def test_usage_before_the_opening_is_not_charged(runtime: Runtime) -> None:
    """A session running for an hour when the account is opened: its first Interim reports the
    whole hour; only the 15 minutes after the opening are charged, pro rata by time."""
    account_id = alice(runtime, opened_at=T0 + 2700)
    ingest(runtime, record("interim", at=T0 + 3600, start=T0, down=4 * 10**9))
    assert owed(runtime, account_id) == charge(10**9)  # 900 s of 3,600 s: a quarter of 4 GB
    ingest(runtime, record("stop", at=T0 + 7200, start=T0, down=6 * 10**9))
    assert owed(runtime, account_id) == charge(3 * 10**9)
    session, = queries.sessions(runtime.engine, account_id, active=None, before=None, limit=10)
    assert session["download_bytes"] == 6 * 10**9, "the session keeps what the NAS reported"


def test_a_session_entirely_before_the_opening_is_not_charged(runtime: Runtime) -> None:
    account_id = alice(runtime, opened_at=T0 + 86_400)
    ingest(runtime, record("start", at=T0), record("stop", at=T0 + 600, start=T0, up=10**9, down=10**9))
    assert owed(runtime, account_id) == 0


def test_usage_after_termination_is_not_charged(runtime: Runtime) -> None:
    account_id = alice(runtime, opened_at=0)
    ingest(runtime, record("start", at=T0), record("interim", at=T0 + 600, start=T0, down=10**9))
    runtime.ledger.set_account_status(UUID(account_id), status="terminated", at=T0 + 900)
    # The Stop reports 3 GB more over 600 s, 300 of them after the termination.
    ingest(runtime, record("stop", at=T0 + 1200, start=T0, down=4 * 10**9))
    settle(runtime)
    assert owed(runtime, account_id) == charge(10**9) + charge(3 * 10**9 // 2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opened=st.integers(0, 4000), end=st.integers(1, 4000), total=st.integers(0, 10**12))
def test_the_charge_is_the_share_after_the_opening(runtime: Runtime, opened: int, end: int, total: int) -> None:
    """Whatever the opening's place in the interval, the charge is exactly the bytes the
    pro-rata split puts after it (and nothing when the interval ends before it)."""
    user = f"u{opened}-{end}-{total}"
    plan = runtime.ledger.create_plan(name="p", terms=PlanTerms.parse("USD", "30", "0.50"), effective_from=0)
    account = runtime.ledger.open_account(name=user, plan_id=plan.id, usernames=[user], opened_at=T0 + opened)
    ingest(runtime, record("interim", f"s-{user}", at=T0 + end, start=T0, down=total, user=user))
    # split_usage apportions by elapsed time, rounding down the share before the opening
    expected = 0 if opened >= end else total - total * opened // end
    assert owed(runtime, str(account.id)) == charge(expected)
