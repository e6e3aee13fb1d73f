"""A billing run reads BillingPeriods' usage totals without rebuilding them (ledger/period_usage.py):
on seeded random histories (odd prices, several bands, fair-use caps crossed, periods long
enough to have a snapshot, ids with no period) it answers exactly what rebuilding each
aggregate answers. Set WISPGATE_TEST_SEED to replay one history."""

from __future__ import annotations

import os
import random
import uuid

import pytest

from api.bootstrap import Runtime
from domain.plans import PlanTerms
from ledger import period_usage as period_usage_module
from ledger.billing_period import BillingPeriod
from ledger.bulk import load_aggregates
from ledger.journal import receivable
from ledger.period_usage import period_usage
from rating import Fragment

GB = 10**9
START, END = 1_790_812_800, 1_793_491_200


def _terms(rng: random.Random) -> PlanTerms:
    return PlanTerms.parse("USD", "30.00", f"{rng.randrange(1, 400)}.{rng.randrange(1000):03d}",
                           included_gb=str(rng.randrange(0, 5)),
                           fair_use={"cap_gb": str(rng.randrange(3, 30)), "action": "throttle",
                                     "throttle_rate": "1M/1M"},
                           bands=[{"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                   "start_hour": 0, "end_hour": 6, "price_per_gb": f"0.{rng.randrange(1, 999):03d}"}])


def test_period_usage_equals_the_rebuilt_aggregates(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = int(os.environ.get("WISPGATE_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed}")
    rng = random.Random(seed)
    ledger = runtime.ledger
    terms = _terms(rng)
    plan = ledger.create_plan(name="Odd", terms=terms, effective_from=0)
    periods = []
    for n in range(40):
        account_id = uuid.uuid4()
        period = BillingPeriod(account_id=account_id, start=START, end=END, currency="USD")
        # A few periods pass the snapshot interval (200), so their snapshot is read first.
        for serial in range(205 if n < 3 else rng.randrange(0, 6)):
            when = rng.randrange(START, END - 3600)
            fragment = Fragment(when, when + 3600, rng.randrange(2 * GB), rng.randrange(3 * GB),
                                rng.choice(["standard", "night"]))
            period.rate(terms=terms, plan_id=plan.id, fragment=fragment, packs=(), session_id=uuid.uuid4(),
                        incarnation="i", record_key=f"r{n}-{serial}", subscriber=receivable(account_id))
        periods.append(period)
    ledger.save(*periods)
    ids = [p.id for p in periods] + [uuid.uuid4() for _ in range(5)]
    rng.shuffle(ids)
    rebuilt = load_aggregates(ledger, BillingPeriod, ids)
    fallbacks: list[object] = []
    monkeypatch.setattr(period_usage_module, "load_aggregates", lambda *a: fallbacks.append(a) or {})
    fast = period_usage(ledger, ids)
    assert not fallbacks, "plain stored periods must be read without rebuilding them"
    assert set(fast) == set(rebuilt) == {p.id for p in periods}, f"seed {seed}"
    for key, period in rebuilt.items():
        assert (fast[key].version, fast[key].usage_totals) == (period.version, period.usage_totals), \
            f"seed {seed}, period {key}"
    assert any(p.meter.get("fair_use_reached") for p in periods), f"seed {seed}: no fair-use cap was crossed"
    if ledger.snapshots is not None:
        assert ledger.snapshots.recorder.select_events(periods[0].id, desc=True, limit=1), "no snapshot taken"
