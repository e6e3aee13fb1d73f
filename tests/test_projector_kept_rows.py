"""Rows the live projector keeps in memory between batches (session rows and keys, balances)
never make it write what following the log from a cold start would not: with a second
projector writing the same tables in between, resets and rebuilds, batches that fail and roll
back, and caches small enough to be evicted, the tables equal a rebuild from position 0 row
by row (seeded random traffic; the seed is printed)."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import Any

import pytest

from adapters.followers import drain, rate_step
from api.bootstrap import Runtime
from domain.plans import PlanTerms
from projections import ReadModelProjector, money, sessions

from .support import record

T0 = 1_793_491_200  # 2026-11-01T00:00:00Z
GB = 10**9


def provision_and_rate(runtime: Runtime, rng: random.Random) -> None:
    """Accounts, payments and seeded sessions (some open, some stopped, some closed by a NAS
    restart, out of order), rated into the ledger; nothing projected yet."""
    ledger = runtime.ledger
    night = {"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_hour": 0,
             "end_hour": 6, "price_per_gb": "0.10"}
    plan = ledger.create_plan(name="Home", terms=PlanTerms.parse("USD", "25", "0.45", bands=[night]),
                              effective_from=0)
    accounts = [ledger.open_account(name=f"S{n}", plan_id=plan.id, usernames=[f"u{n}"], opened_at=T0 - 86_400)
                for n in range(rng.randint(4, 7))]
    records = []
    for n in range(rng.randint(12, 20)):
        start, user = T0 + rng.randrange(10 * 86_400), f"u{rng.randrange(len(accounts))}"
        up = down = 0
        at = start
        records.append(record("start", f"s{n}", at=start, user=user))
        for _ in range(rng.randint(1, 6)):
            at += rng.randint(60, 5400)
            up, down = up + rng.randrange(2 * GB), down + rng.randrange(7 * GB)
            records.append(record("interim", f"s{n}", at=at, start=start, up=up, down=down, user=user))
        if rng.random() < 0.6:
            records.append(record("stop", f"s{n}", at=at + 30, start=start, up=up, down=down + 1, user=user))
    records.append(record("accounting-on", at=T0 + 11 * 86_400))
    rng.shuffle(records)
    for offset in range(0, len(records), 5):
        runtime.intake.append(records[offset:offset + 5])
        drain(rate_step(runtime.intake, runtime.ledger))
    for n in range(3):
        ledger.record_payment(idempotency_key=f"p{n}", account_id=rng.choice(accounts).id,
                              amount=Decimal(rng.randint(100, 5000)) / 100, currency="USD", method="bank",
                              reference=f"r{n}", received_at=T0 + n)


class _Failure(Exception):
    pass


@pytest.mark.parametrize("evict", [False, True], ids=["kept", "evicted"])
def test_kept_rows_give_what_a_rebuild_gives(runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
                                             evict: bool) -> None:
    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    if evict:  # a handful of rows kept at most: eviction runs in most batches
        monkeypatch.setattr(sessions, "MAX_KEPT", 3)
        monkeypatch.setattr(money, "MAX_KEPT", 2)
    provision_and_rate(runtime, rng)
    recorder = runtime.ledger.recorder
    head = recorder.max_notification_id()
    live = runtime.projector
    other = ReadModelProjector(runtime.engine, runtime.ledger.mapper)  # another writer of the same tables
    original_flush = money._MoneyBatch.flush
    failures = 0

    def failing_flush(self: Any) -> None:
        original_flush(self)  # written, and the session rows in memory already changed: rolled back
        raise _Failure

    while (position := live.position()) < head:
        batch = recorder.select_notifications(start=position + 1, limit=rng.randint(1, 12))
        roll = rng.random()
        if roll < 0.2:
            other.process(batch)
        elif roll < 0.25:  # a reset and a rebuild to where the live projector stood
            other.reset()
            other.rebuild(recorder, upto=position, window=rng.randint(3, 50))
            assert other.position() == position
        elif roll < 0.33 and failures < 4:
            failures += 1
            monkeypatch.setattr(money._MoneyBatch, "flush", failing_flush)
            with pytest.raises(_Failure):
                live.process(batch)
            monkeypatch.setattr(money._MoneyBatch, "flush", original_flush)
            assert live.position() == position
        else:
            live.process(batch)
    projected = live.table_rows()
    assert projected["sessions"] and projected["usage_buckets"] and projected["balances"]
    live.reset()
    live.rebuild(recorder)
    assert live.position() == head
    rebuilt = live.table_rows()
    for name, rows in rebuilt.items():
        assert projected[name] == rows, f"seed {seed}: table {name} differs from a rebuild"


def test_events_projected_as_recorded_do_not_use_stale_kept_rows(runtime: Runtime) -> None:
    """``project_recorded`` (a billing run's own events) after another projector moved on:
    the balances it changes are read from the tables, not from rows kept before."""
    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    provision_and_rate(runtime, rng)
    recorder, mapper = runtime.ledger.recorder, runtime.ledger.mapper
    head = recorder.max_notification_id()
    live, other = runtime.projector, ReadModelProjector(runtime.engine, mapper)
    cut = rng.randint(head // 3, 2 * head // 3)
    live.process(recorder.select_notifications(start=1, limit=cut))  # balances kept by live
    later = rng.randint(cut + 1, head - 1)
    other.process(recorder.select_notifications(start=cut + 1, limit=later - cut))  # and changed by other
    rest = recorder.select_notifications(start=later + 1, limit=head)
    assert live.project_recorded([(n.id, mapper.to_domain_event(n)) for n in rest])
    projected = live.table_rows()
    live.reset()
    live.rebuild(recorder)
    for name, rows in live.table_rows().items():
        assert projected[name] == rows, f"seed {seed}: table {name} differs from a rebuild"
