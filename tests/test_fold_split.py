"""The rebuild's fold split over two processes (``projections/fold_worker.py``) gives what the
one-process fold gives: the second process folds its own events of a window first and the
session amounts of the window's rated usages after them (``Fold.apply_rated``, handed over by
the rebuild's process, which folds their usage buckets), on seeded random event sequences cut
into random windows: usage before
its session's records or key, NAS closes before and after, amounts and buckets across windows.
Where that order cannot give log order's rows (a NAS's close that found no row a rated usage
logged before it would have made), ``apply_rated`` says so instead of folding."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from decimal import Context, Decimal, localcontext
from types import SimpleNamespace
from typing import Any

from projections.fold import SESSION_PROCESS_EVENTS, Fold, SessionWrites, account_digit

from .rebuild_support import seeded

T0 = 1_793_491_200
ACCOUNTS = [f"{n:032x}" for n in range(1, 4)]


def _typed_id(hex_text: str) -> dict[str, str]:
    return {"_type_": "uuid_hex", "_data_": hex_text}


def log(rng: random.Random) -> list[tuple[str, str, Any]]:
    """(event name, originator id, state or decoded event) in log order: a few sessions of a
    few incarnations each, their records, rated usages (logged by a billing period, before or
    after the session's own events), keys and NAS closes, shuffled within loose bounds."""
    events: list[tuple[float, str, str, Any]] = []
    for s in range(rng.randint(1, 6)):
        session_id = f"{0xabc000 + s:032x}"
        hyphenated = f"{session_id[:8]}-{session_id[8:12]}-{session_id[12:16]}-{session_id[16:20]}-{session_id[20:]}"
        account = rng.choice(ACCOUNTS)
        if rng.random() < 0.8:
            events.append((rng.uniform(0, 60), "Session.Registered", hyphenated,
                           {"nas_id": f"nas-{s % 2}", "acct_session_id": f"a{s}"}))
        for i in range(rng.randint(1, 2)):
            incarnation = str(T0 + 100_000 * i + s)
            for k in range(rng.randint(0, 4)):
                at = int(incarnation) + rng.randint(0, 9000)
                up, down = rng.choice([0, rng.randrange(10**9)]), rng.choice([0, rng.randrange(10**10)])
                events.append((rng.uniform(0, 100), "Session.RecordApplied", hyphenated, {
                    "incarnation": incarnation, "event_time": at, "upload_bytes": up, "download_bytes": down,
                    "username": rng.choice(["", f"u{s}"]), "framed_ip": rng.choice(["", f"10.0.0.{k}"]),
                    "nas_ip": rng.choice(["", "127.0.0.1"]), "calling_station_id": rng.choice(["", "02:00"]),
                    "terminate_cause": rng.choice(["", "", "User-Request"]),
                    "account_id": rng.choice([None, _typed_id(account)]), "closes": rng.random() < 0.2}))
            for _ in range(rng.randint(0, 4)):
                start = int(incarnation) + rng.randint(0, 9000)
                amount = f"{rng.randint(0, 10**6)}.{rng.randint(0, 99999):05d}"
                if rng.random() < 0.2:  # now and then another account's usage of the session
                    account = rng.choice(ACCOUNTS)
                events.append((rng.uniform(0, 100), "BillingPeriod.UsageRated", f"period-{account}", {
                    "session_id": _typed_id(session_id), "incarnation": incarnation,
                    "amount": {"_type_": "decimal_str", "_data_": amount}, "currency": rng.choice(["USD", "EUR"]),
                    "account_id": _typed_id(account), "band": rng.choice(["standard", "night"]), "start": start,
                    "end": start + rng.choice([0, 60, 300, 5000, 90_000]),
                    "upload_bytes": rng.choice([0, rng.randrange(10**9)]),
                    "download_bytes": rng.choice([0, rng.randrange(10**9)]),
                    "postings": [{"ledger_account": f"receivable:{account}", "amount": amount, "currency": "USD"},
                                 {"ledger_account": "revenue:usage", "amount": f"-{amount}", "currency": "USD"}]}))
            if rng.random() < 0.4:
                events.append((rng.uniform(0, 100), "Session.ClosedByNas", hyphenated, SimpleNamespace(
                    originator_id=hyphenated, incarnation=incarnation, event_time=int(incarnation) + 5000)))
    for n, account in enumerate(ACCOUNTS):  # money events of the rebuild's own process that touch balances
        if rng.random() < 0.7:
            events.append((rng.uniform(0, 100), "Account.Opened", account, {  # its balance: the postings' key
                "name": f"a{n}", "plan_id": _typed_id(f"{n:032x}"), "currency": rng.choice(["USD", "EUR"]),
                "opened_at": T0 + n, "usernames": [f"u{n}"]}))
        for p in range(rng.randint(0, 2)):
            amount = Decimal(rng.randint(1, 10**5)) / 100
            currency = rng.choice(["USD", "EUR"])
            events.append((rng.uniform(0, 100), "Payment.Received", f"pay-{n}-{p}", SimpleNamespace(
                originator_id=f"pay-{n}-{p}", account_id=account, amount=amount, currency=currency, method="bank",
                reference=f"r{n}{p}", received_at=T0 + rng.randint(0, 10**6), postings=[
                    {"ledger_account": f"receivable:{account}", "amount": str(-amount), "currency": currency},
                    {"ledger_account": "cash:bank", "amount": str(amount), "currency": currency}])))
    events.sort(key=lambda e: e[0])
    return [(name, originator, state) for _, name, originator, state in events]


def _fold(fold: Fold, position: int, name: str, originator: str, state: Any) -> None:
    handler = fold.hot.get(name)
    if handler is not None:
        handler(position, originator, 1, state)
    elif name in fold.cold:
        fold.cold[name](position, state)


def _windows(rng: random.Random, events: list[Any], whole: Fold, second: Fold, first: Fold,
             in_second: Callable[[str, Any], bool]) -> Iterator[None]:
    """Fold ``events`` in 1-4 random windows, each event into ``whole`` and into ``second``
    where ``in_second(name, state)``, else into ``first``; yields after each window."""
    cuts = sorted(rng.sample(range(1, len(events) + 1), k=min(len(events), rng.randint(1, 4))))
    position = 0
    for cut in cuts:
        for name, originator, state in events[position:cut]:
            position += 1
            _fold(whole, position, name, originator, state)
            _fold(second if in_second(name, state) else first, position, name, originator, state)
        yield


def _comparable(writes: SessionWrites) -> tuple[Any, ...]:
    """A window's writes with each list in one order (the processes make rows in other orders)."""
    return tuple(sorted(part, key=repr) for part in writes)


def test_the_second_process_order_gives_the_one_process_rows() -> None:
    seed, rng = seeded()
    split = refused = 0
    with localcontext(Context(prec=80)):
        for _ in range(300):
            events = log(rng)
            whole, sessions, money = Fold(), Fold(money=False), Fold(sessions=False)
            ok = True
            for _ in _windows(rng, events, whole, sessions, money, lambda name, state: name in SESSION_PROCESS_EVENTS):
                expected = whole.take_session_writes()
                if not sessions.apply_rated(money.take_rated()):
                    ok = False
                    break
                # The usage buckets are folded by the rebuild's process (see fold.Fold).
                usage_new, usage_dirty = money.take_usage()
                writes = sessions.take_session_writes()._replace(usage_new=usage_new, usage_dirty=usage_dirty)
                assert _comparable(writes) == _comparable(expected), f"seed {seed}"
                assert money.journal == whole.journal, f"seed {seed}"
                assert money.balances.take() == whole.balances.take(), f"seed {seed}"
                money.journal, whole.journal = [], []
            split += ok
            refused += not ok
    # Most sequences fold split; a few are refused (a close before which usage made the row).
    assert split > 200 and refused, f"seed {seed}: {split} split, {refused} refused"


def test_a_refused_order_is_one_that_log_order_folds_differently() -> None:
    """The case ``apply_rated`` refuses: a rated usage makes a session's row, a NAS's close
    finds it (log order), whereas the second process saw the close before the row existed."""
    session = "00000000-0000-0000-0000-000000000abc"
    rated = {"session_id": _typed_id("00000000000000000000000000000abc"), "incarnation": str(T0),
             "amount": {"_type_": "decimal_str", "_data_": "1.5"}, "currency": "USD",
             "account_id": _typed_id(ACCOUNTS[0]), "band": "standard", "start": T0, "end": T0 + 60,
             "upload_bytes": 1, "download_bytes": 2, "postings": []}
    close = SimpleNamespace(originator_id=session, incarnation=str(T0), event_time=T0 + 99)
    whole, sessions, money = Fold(), Fold(money=False), Fold(sessions=False)
    for position, (name, originator, state) in enumerate(
            [("BillingPeriod.UsageRated", "period", rated), ("Session.ClosedByNas", session, close)], start=1):
        _fold(whole, position, name, originator, state)
        _fold(sessions if name in SESSION_PROCESS_EVENTS else money, position, name, originator, state)
    assert whole.sessions.rows[f"{session}:{T0}"]["stopped_at"] == T0 + 99  # closed in log order
    assert not sessions.apply_rated(money.take_rated())


def test_a_share_of_rated_usages_folded_whole_by_the_second_process_gives_the_one_process_rows() -> None:
    """``Fold(share=)``: the second process folds the share's rated usages whole (in log order
    with its own events: session amounts, usage buckets, journal lines, balance changes per
    window), the rebuild's process the rest and merges the share's balance changes
    (``merge_balances``): the same rows as the one-process fold, whatever the share (none,
    some or all of the accounts), with balances made, changed and paid on either side and
    currencies that change."""
    seed, rng = seeded()
    shared = refused = 0
    with localcontext(Context(prec=80)):
        for _ in range(300):
            events = log(rng)
            share = frozenset(rng.sample("0123456789abcdef", k=rng.randint(0, 16)))
            whole, second, first = Fold(), Fold(money=False, share=share), Fold(sessions=False, share=share)

            def in_second(name: str, state: Any, share: frozenset[str] = share) -> bool:
                nonlocal shared
                rated_in_share = name == "BillingPeriod.UsageRated" and account_digit(state) in share
                shared += rated_in_share
                return rated_in_share or name in SESSION_PROCESS_EVENTS

            ok = True
            for _ in _windows(rng, events, whole, second, first, in_second):
                expected = whole.take_session_writes()
                if not second.apply_rated(first.take_rated()):
                    ok = False
                    break
                journal, changes = second.take_share()
                first.merge_balances(changes)
                writes = second.take_session_writes()
                usage_new, usage_dirty = first.take_usage()
                writes = writes._replace(usage_new=writes.usage_new + usage_new,
                                         usage_dirty=writes.usage_dirty + usage_dirty)
                assert _comparable(writes) == _comparable(expected), f"seed {seed}"
                assert sorted(first.journal + journal) == sorted(whole.journal), f"seed {seed}"
                assert _by_account(first.balances.take()) == _by_account(whole.balances.take()), f"seed {seed}"
                first.journal, whole.journal = [], []
            refused += not ok
    assert shared > 500 and refused < 100, f"seed {seed}: {shared} rated usages in shares, {refused} refused"


def _by_account(taken: tuple[list[Any], list[Any]]) -> tuple[list[Any], list[Any]]:
    new, dirty = taken
    return sorted(new, key=lambda r: r["account_id"]), sorted(dirty, key=lambda r: r["account_id"])
