"""Guarantee 8 in the ledger and read models: absurd but well-formed input (64-bit counters
at their maximum, prices with many decimals) neither stops a stage nor loses precision."""

from __future__ import annotations

from decimal import Decimal

from api.bootstrap import Runtime
from domain.accounting import COUNTER_MAX
from domain.plans import PlanTerms
from projections import queries

from .support import ingest, record


def test_counters_at_the_64_bit_limit_are_rated_exactly_and_projected(runtime: Runtime) -> None:
    plan = runtime.ledger.create_plan(name="odd", terms=PlanTerms.parse("USD", "0", "0.0000000123"), effective_from=0)
    account = runtime.ledger.open_account(name="x", plan_id=plan.id, usernames=["alice"], opened_at=0)
    ingest(runtime,
           record("interim", "huge-1", at=10_000, start=1_000, up=COUNTER_MAX, down=COUNTER_MAX),
           record("interim", "huge-2", at=10_000, start=1_000, up=COUNTER_MAX, down=COUNTER_MAX))
    assert runtime.ledger.tracked_position("AccountingLog") == runtime.intake.position()
    assert runtime.projector.position() == runtime.ledger.recorder.max_notification_id()
    found = queries.balance(runtime.engine, str(account.id))
    assert found is not None
    expected = Decimal(4 * COUNTER_MAX) * Decimal("0.0000000123") / Decimal(10**9)
    assert found["receivable"] == expected  # 30 significant digits, no rounding
    rows = queries.sessions(runtime.engine, str(account.id), active=None, before=None, limit=10)
    assert {row["download_bytes"] for row in rows} == {2**63 - 1}  # saturated for the table, exact in the ledger
