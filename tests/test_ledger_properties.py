"""Ledger invariants over random accounting feeds, through the real intake log, rater and
projector: money conserved per journal transaction, balances equal to their postings, usage
charged exactly once whatever the duplicates and batch boundaries, deterministic re-rating,
and read models that rebuild identically from the log (guarantees 2, 3 and 4).

Usage is counted independently here: the generator knows the true cumulative counters of
every session incarnation, with counter resets (a reset's first report is below the last one
seen) and out-of-order delivery only inside a counter segment, so the rules of DESIGN.md
("Accounting semantics") must recover exactly the sum of each segment's last counter.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Context, Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Table, select

from adapters.followers import drain, project_step
from api.bootstrap import Runtime, build_runtime
from api.settings import Settings
from domain.accounting import AccountingRecord, StatusType
from domain.ids import session_id
from domain.plans import BYTES_PER_GB, PlanTerms
from projections import tables as t

from .support import settle

T0 = 1_700_000_000
SPACING = 40_000  # session i starts in [T0 + i*SPACING, T0 + i*SPACING + 30_000]
WIDE = Context(prec=200)
PLANS = {"alice": ("USD", "0.50"), "bob": ("USD", "0.0375"), "kenji": ("JPY", "7"), "fatima": ("BHD", "0.125")}
GHOST = "ghost"  # sends accounting, has no account
USERS = [*PLANS, GHOST]
PAYMENT = Decimal("10.00")  # alice pays this (USD) before any usage
COMPARED = (t.accounts, t.balances, t.journal, t.sessions, t.usage)


# ---- scenario ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    dt: int  # seconds after the previous report
    up: int  # bytes added; on a reset, seeds the new (lower) counter value
    down: int
    reset: bool  # the NAS restarted its counters before this report


@dataclass(frozen=True)
class SessionPlan:
    nas: str
    sid: str
    user: str
    offset: int
    with_start: bool
    steps: tuple[Step, ...]
    stop: bool
    timestamped: bool  # Event-Timestamp sent; otherwise event time = received - Acct-Delay-Time
    delay: int
    swaps: tuple[int, ...]  # swap reports j and j+1 when both are in the first counter segment


@dataclass(frozen=True)
class Scenario:
    sessions: tuple[SessionPlan, ...]
    reboots: tuple[tuple[str, int], ...]  # Accounting-On (nas, seconds after T0)
    duplicates: tuple[tuple[int, int, int], ...]  # (feed index, how much later, receive-time shift)
    cuts: tuple[int, ...]  # batch boundaries in the feed


@dataclass
class Built:
    feed: list[AccountingRecord]  # arrival order, with retransmissions
    originals: list[AccountingRecord]  # arrival order, each record once
    truth: dict[tuple[str, str, int], tuple[int, int, str]]  # (nas, sid, start) -> (up, down, user)

    def chunks(self, cuts: tuple[int, ...]) -> list[list[AccountingRecord]]:
        points = sorted({c % (len(self.feed) + 1) for c in cuts} | {0, len(self.feed)})
        return [self.feed[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def build(scenario: Scenario) -> Built:
    slots: list[tuple[tuple[int, int, int], AccountingRecord]] = []
    truth: dict[tuple[str, str, int], tuple[int, int, str]] = {}
    for index, plan in enumerate(scenario.sessions):
        start = T0 + index * SPACING + plan.offset
        # Without Event-Timestamp a Start of a reused Acct-Session-Id has the same content key
        # as the previous incarnation's Start (by design), so such sessions get their own id.
        sid = plan.sid if plan.timestamped else f"u{index}"

        def report(status: StatusType, at: int, up: int, down: int, plan: SessionPlan = plan,
                   start: int = start, sid: str = sid, index: int = index) -> AccountingRecord:
            return AccountingRecord(
                nas_id=plan.nas, status=status, event_time=at, received_at=at + plan.delay,
                delay_time=0 if plan.timestamped else plan.delay, event_timestamp_sent=plan.timestamped,
                acct_session_id=sid, username=plan.user, session_time=at - start,
                input_octets=up, output_octets=down, framed_ip=f"100.64.{index}.1",
            )

        reports: list[AccountingRecord] = []
        segments: list[int] = []
        if plan.with_start or not plan.steps:
            reports.append(report(StatusType.START, start, 0, 0))
            segments.append(0)
        at, up, down, segment, done_up, done_down = start, 0, 0, 0, 0, 0
        for i, step in enumerate(plan.steps):
            at += step.dt
            if step.reset:  # the first report after a NAS counter reset is below the last one
                done_up, done_down = done_up + up, done_down + down
                up = step.up % up if up else step.up
                down = step.down % down if down else step.down
                segment += 1
            else:
                up, down = up + step.up, down + step.down
            last = plan.stop and i == len(plan.steps) - 1
            reports.append(report(StatusType.STOP if last else StatusType.INTERIM, at, up, down))
            segments.append(segment)
        truth[(plan.nas, sid, start)] = (done_up + up, done_down + down, plan.user)
        times = [r.event_time for r in reports]
        for j in plan.swaps:
            if j + 1 < len(reports) and segments[j] == segments[j + 1] == 0:
                reports[j], reports[j + 1] = reports[j + 1], reports[j]
        slots += [((times[k], index, k), r) for k, r in enumerate(reports)]
    for n, (nas, offset) in enumerate(scenario.reboots):
        at = T0 + offset
        slots.append(((at, -1, n), AccountingRecord(
            nas_id=nas, status=StatusType.ACCOUNTING_ON, event_time=at, received_at=at,
            event_timestamp_sent=True)))
    originals = [r for _, r in sorted(slots, key=lambda slot: slot[0])]
    placed: list[tuple[int, AccountingRecord]] = [(2 * k, r) for k, r in enumerate(originals)]
    for index, later, shift in scenario.duplicates:
        i = index % len(originals)
        rec = originals[i]
        # a retransmission: new Identifier, later receive time, longer Acct-Delay-Time
        again = dataclasses.replace(rec, received_at=rec.received_at + shift, delay_time=rec.delay_time + shift)
        placed.append((2 * min(len(originals) - 1, i + later) + 1, again))
    feed = [r for _, r in sorted(placed, key=lambda p: p[0])]
    return Built(feed=feed, originals=originals, truth=truth)


steps = st.builds(
    Step,
    dt=st.one_of(st.integers(1, 600), st.integers(600, 7_200)),
    up=st.one_of(st.integers(0, 10**9), st.integers(0, 1 << 36), st.sampled_from([0, 1 << 32, 5 << 32])),
    down=st.one_of(st.integers(0, 10**9), st.integers(0, 1 << 38), st.sampled_from([0, (1 << 32) - 1])),
    reset=st.sampled_from([False] * 5 + [True]),
)
session_plans = st.builds(
    SessionPlan,
    nas=st.sampled_from(["nas-a", "nas-b"]),
    sid=st.sampled_from(["s1", "s2", "s3"]),  # reused ids: several incarnations per aggregate
    user=st.sampled_from(USERS),
    offset=st.integers(0, 30_000),
    with_start=st.sampled_from([True, True, True, False]),
    steps=st.lists(steps, max_size=5).map(tuple),
    stop=st.booleans(),
    timestamped=st.sampled_from([True, True, True, False]),
    delay=st.integers(0, 30),
    swaps=st.lists(st.integers(0, 5), max_size=3).map(tuple),
)
scenarios = st.builds(
    Scenario,
    sessions=st.lists(session_plans, min_size=1, max_size=6).map(tuple),
    reboots=st.lists(st.tuples(st.sampled_from(["nas-a", "nas-b"]), st.integers(0, 6 * SPACING)),
                     max_size=2, unique=True).map(tuple),
    duplicates=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 10), st.integers(1, 30)),
                        max_size=6).map(tuple),
    cuts=st.lists(st.integers(0, 200), max_size=4).map(tuple),
)


# ---- running it --------------------------------------------------------------------------


@contextmanager
def sqlite_runtime() -> Iterator[Runtime]:
    with tempfile.TemporaryDirectory(prefix="wg-ledger-props-") as tmp:
        runtime = build_runtime(Settings(data_dir=Path(tmp) / "var"))
        try:
            yield runtime
        finally:
            runtime.close()


def open_accounts(runtime: Runtime) -> dict[str, str]:
    """One account and plan per PLANS user; alice prepays. Returns username -> account id."""
    ids: dict[str, str] = {}
    for user, (currency, price) in PLANS.items():
        plan = runtime.ledger.create_plan(name=f"{user} plan", terms=PlanTerms.parse(currency, "30", price),
                                          effective_from=0)
        account = runtime.ledger.open_account(name=user, plan_id=plan.id, usernames=[user], opened_at=0)
        ids[user] = str(account.id)
    runtime.ledger.record_payment(idempotency_key="prepay-alice", account_id=UUID(ids["alice"]),
                                  amount=PAYMENT, currency="USD", method="cash", reference="r-1",
                                  received_at=T0 - 1)
    settle(runtime)
    return ids


def tables(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    with runtime.engine.connect() as conn:
        return {table.name: [tuple(row) for row in conn.execute(
            select(table).order_by(*table.primary_key.columns))] for table in COMPARED}


def named(snapshot: dict[str, list[tuple[Any, ...]]], table: Table) -> list[dict[str, Any]]:
    names = [c.name for c in table.columns]
    return [dict(zip(names, row, strict=True)) for row in snapshot[table.name]]


def applied(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """What the rater decided, by session: each RecordApplied (counted bytes) and each
    UsageRated (the price of a fragment of it), without the random account and plan ids."""
    found: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    position = 1
    while notifications := runtime.ledger.recorder.select_notifications(start=position, limit=500):
        for notification in notifications:
            e = runtime.ledger.mapper.to_domain_event(notification)
            name = type(e).__qualname__
            if name == "Session.RecordApplied":
                found[f"applied:{e.originator_id}"].append((
                    e.originator_version, e.key, e.incarnation, e.status, e.upload_bytes,
                    e.download_bytes, e.interval_start, e.interval_end))
            elif name == "BillingPeriod.UsageRated":
                found[f"rated:{e.session_id}"].append((
                    e.record_key, e.incarnation, e.start, e.end, e.band, e.upload_bytes,
                    e.download_bytes, e.amount, e.currency, e.lines))
        position = notifications[-1].id + 1
    # a session's events are in version order; its fragments' order across billing periods
    # depends on how the batch collected the aggregates, so they are compared as a set
    return {key: events if key.startswith("applied:") else sorted(events, key=repr)
            for key, events in found.items()}


def exact_sum(amounts: list[Decimal]) -> Decimal:
    total = Decimal(0)
    for amount in amounts:
        total = WIDE.add(total, amount)
    return total


def charge(user: str, total_bytes: int) -> Decimal:
    return WIDE.divide(WIDE.multiply(Decimal(PLANS[user][1]), Decimal(total_bytes)), Decimal(BYTES_PER_GB))


def check_invariants(runtime: Runtime, ids: dict[str, str], built: Built) -> dict[str, list[tuple[Any, ...]]]:
    """Guarantee 3 and the usage rules on the live read models; returns the tables."""
    snapshot = tables(runtime)
    journal = named(snapshot, t.journal)
    balances = {row["account_id"]: Decimal(row["receivable"]) for row in named(snapshot, t.balances)}

    # every transaction sums to zero in each currency
    transactions: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for line in journal:
        key = (line["transaction_ref"], line["currency"])
        transactions[key] = WIDE.add(transactions[key], Decimal(line["amount"]))
    assert all(total == 0 for total in transactions.values()), transactions

    # each balance is the sum of its receivable postings
    receivables: dict[str, Decimal] = defaultdict(Decimal)
    for line in journal:
        if line["ledger_account"].startswith("receivable:"):
            account = line["ledger_account"].split(":", 1)[1]
            receivables[account] = WIDE.add(receivables[account], Decimal(line["amount"]))
    assert set(receivables) <= set(balances)
    for account_id, balance in balances.items():
        assert balance == receivables.get(account_id, Decimal(0)), account_id

    # charged = price_per_gb * counted bytes / 10^9, with the bytes counted from the rules
    by_user: dict[str, int] = defaultdict(int)
    for up, down, user in built.truth.values():
        by_user[user] += up + down
    for user, account_id in ids.items():
        expected = charge(user, by_user[user])
        paid = PAYMENT if user == "alice" else Decimal(0)
        assert balances[account_id] == WIDE.subtract(expected, paid), (user, by_user[user])
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for line in journal:
        if line["ledger_account"] == "revenue:usage":
            revenue[line["currency"]] = WIDE.subtract(revenue[line["currency"]], Decimal(line["amount"]))
    for currency in {c for c, _ in PLANS.values()}:
        owed = [charge(u, by_user[u]) for u, (c, _) in PLANS.items() if c == currency]
        assert revenue[currency] == exact_sum(owed), currency

    # every incarnation is one session row holding exactly its usage (unbilled ones too)
    rows = {row["id"]: row for row in named(snapshot, t.sessions)}
    assert len(rows) == len(built.truth)
    for (nas, sid, start), (up, down, user) in built.truth.items():
        row = rows[f"{session_id(nas, sid)}:{start}"]
        assert (row["upload_bytes"], row["download_bytes"], row["username"]) == (up, down, user)
        assert row["started_at"] == start
        assert row["account_id"] == ids.get(user)
        assert Decimal(row["amount"]) == (charge(user, up + down) if user in ids else 0)

    # usage buckets: hours hold each account's bytes, days are the sum of their hours
    hours: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    days: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    day_rows: dict[tuple[str, int], tuple[int, int]] = {}
    for bucket in named(snapshot, t.usage):
        account_id, start = bucket["account_id"], bucket["bucket_start"]
        up, down = bucket["upload_bytes"], bucket["download_bytes"]
        if bucket["granularity"] == "hour":
            assert start % 3600 == 0
            hours[account_id][0] += up
            hours[account_id][1] += down
            days[(account_id, start - start % 86_400)][0] += up
            days[(account_id, start - start % 86_400)][1] += down
        else:
            assert start % 86_400 == 0
            totals = day_rows.get((account_id, start), (0, 0))
            day_rows[(account_id, start)] = (totals[0] + up, totals[1] + down)
    assert {k: tuple(v) for k, v in days.items()} == day_rows
    for user, account_id in ids.items():
        used = [(up, down) for up, down, u in built.truth.values() if u == user]
        assert tuple(hours[account_id]) == (sum(u for u, _ in used), sum(d for _, d in used))
    return snapshot


def run_checks(runtime: Runtime, built: Built, cuts: tuple[int, ...]) -> None:
    """Feed ``built`` to ``runtime`` in batches and check every property; a second, fresh
    SQLite runtime is the reference for batch independence and re-rating."""
    ids = open_accounts(runtime)
    stored = 0
    for chunk in built.chunks(cuts):
        stored += sum(runtime.intake.append(chunk))
        settle(runtime)
    assert stored == len(built.originals)  # the log keeps each record once
    live = check_invariants(runtime, ids, built)
    events = applied(runtime)

    # redelivery to the rater (a replayed Kafka partition, the other site's copy) charges nothing
    runtime.ledger.apply_records(list(built.feed), None)
    runtime.ledger.apply_records(list(reversed(built.originals)), None)
    settle(runtime)
    assert applied(runtime) == events
    again = tables(runtime)
    assert again == live
    live = check_invariants(runtime, ids, built)

    # deterministic replay: the read models rebuilt from position 0 are the live ones
    runtime.projector.reset()
    assert all(not rows for rows in tables(runtime).values())
    drain(project_step(runtime.ledger, runtime.projector))
    assert tables(runtime) == live

    # a fresh ledger fed the same records at once: same events, same balances
    with sqlite_runtime() as fresh:
        fresh_ids = open_accounts(fresh)
        assert sum(fresh.intake.append(list(built.originals))) == len(built.originals)
        settle(fresh)
        assert applied(fresh) == events
        check_invariants(fresh, fresh_ids, built)
        user_of = {v: k for k, v in ids.items()} | {v: k for k, v in fresh_ids.items()}

        def owed(snapshot: dict[str, list[tuple[Any, ...]]]) -> dict[str, tuple[str, str]]:
            return {user_of[r["account_id"]]: (r["currency"], r["receivable"])
                    for r in named(snapshot, t.balances)}

        assert owed(live) == owed(tables(fresh))


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios)
def test_ledger_invariants_on_random_feeds(scenario: Scenario) -> None:
    built = build(scenario)
    with sqlite_runtime() as runtime:
        run_checks(runtime, built, scenario.cuts)


GIGA = 1 << 32
FIXED = Scenario(
    sessions=(
        # gigaword counters, a reordered Interim/Stop pair, Event-Timestamp sent
        SessionPlan("nas-a", "s1", "alice", 100, True,
                    (Step(300, 5 * GIGA + 7, GIGA, False), Step(3_600, 3 * GIGA, 12_345, False),
                     Step(900, 10**9, 10**9, False)), True, True, 2, (2,)),
        # counter reset mid-session, no Event-Timestamp, retransmitted below
        SessionPlan("nas-a", "s2", "bob", 5_000, True,
                    (Step(600, 7 * 10**9, 10**8, False), Step(600, 4_000, 17, True),
                     Step(1_200, 2 * 10**9, 5, False)), False, False, 5, ()),
        # Interim with no Start; a ghost without an account
        SessionPlan("nas-b", "s1", GHOST, 0, False, (Step(60, 10**10, 10**9, False),), True, True, 0, ()),
        # Acct-Session-Id s1 of nas-a reused after the reboot; JPY and BHD plans
        SessionPlan("nas-a", "s1", "kenji", 20_000, True,
                    (Step(4_000, 3 * GIGA, GIGA - 1, False), Step(100, 9, 9, True)), True, True, 1, (0,)),
        SessionPlan("nas-b", "s3", "fatima", 100, False,
                    (Step(7_000, 123_456_789_012, 1, False), Step(10, 0, 0, False)), False, True, 0, (0,)),
    ),
    reboots=(("nas-a", 3 * SPACING),),
    duplicates=((0, 3, 2), (4, 0, 1), (7, 5, 11), (9, 1, 30), (13, 0, 3)),
    cuts=(3, 8, 11),
)


def test_ledger_invariants_on_a_fixed_feed(runtime: Runtime) -> None:
    """The same checks as the property, once on each store (SQLite and PostgreSQL)."""
    built = build(FIXED)
    assert len(built.feed) > len(built.originals)
    assert any(r.status is StatusType.ACCOUNTING_ON for r in built.feed)
    run_checks(runtime, built, FIXED.cuts)
