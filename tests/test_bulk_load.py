"""The bulk aggregate loader (used by billing runs) rebuilds exactly what the repository does,
on SQLite and PostgreSQL, including aggregates restored from a snapshot."""

from __future__ import annotations

import uuid
from decimal import Decimal

from api.bootstrap import Runtime
from domain.plans import PlanTerms
from ledger.account import Account
from ledger.billing_period import BillingPeriod
from ledger.bulk import CHUNK, existing_ids, load_aggregates
from ledger.journal import receivable
from rating import Fragment

START, END = 1_790_812_800, 1_793_491_200  # 2026-10-01 .. 2026-11-01 UTC


def test_bulk_load_equals_the_repository(runtime: Runtime) -> None:
    ledger = runtime.ledger
    terms = PlanTerms.parse("USD", "30.00", "1.00", included_gb="1")
    plan = ledger.create_plan(name="Home", terms=terms, effective_from=0)
    accounts = [Account(name=f"S{n}", plan_id=plan.id, currency="USD", usernames=[f"bulk{n}"], opened_at=0,
                        tax_rate=Decimal("0.16")) for n in range(CHUNK + 3)]  # more than one query's worth
    periods = [BillingPeriod(account_id=a.id, start=START, end=END, currency="USD") for a in accounts]
    ledger.save(*accounts, *periods)
    busy = periods[0]
    for n in range(450):  # past two snapshots (BillingPeriod: every 200 events)
        busy.rate(terms=terms, plan_id=plan.id, fragment=Fragment(START + n * 60, START + n * 60 + 60, 10**7, 10**7,
                                                                  "standard"),
                  packs=(), session_id=uuid.uuid4(), incarnation="i", record_key=f"r{n}",
                  subscriber=receivable(busy.account_id))
        ledger.save(busy)
    assert ledger.snapshots is not None and len(list(ledger.snapshots.get(busy.id))) == 2

    ids = [p.id for p in periods]
    loaded = load_aggregates(ledger, BillingPeriod, [*ids, uuid.uuid4()])
    assert list(loaded) == ids  # unknown ids are left out, the order is kept
    for period_id in (ids[0], ids[1], ids[-1]):
        assert vars(loaded[period_id]) == vars(ledger.repository.get(period_id))
    assert loaded[ids[0]].version == 451 and loaded[ids[0]].usage_amount > 0
    # An aggregate of another type is not returned as the type asked for.
    assert load_aggregates(ledger, Account, ids[:3]) == {}
    assert existing_ids(ledger, [accounts[0].id, uuid.uuid4(), ids[5]]) == {accounts[0].id, ids[5]}
