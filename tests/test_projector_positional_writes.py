"""The live projector's hot writes bind their values by position (``base.execute_rows``): a
session row's values land in their own columns (new rows, rows whose indexed columns moved,
rows updated in place), amounts in memory as Decimal are written as their canonical text,
byte totals saturate at BIGINT's range, and journal lines and balance changes are what the
money model's handlers made; on SQLite and PostgreSQL, random rows (seed printed;
WISPGATE_TEST_SEED replays it). A statement whose parameters are in another order than the
values given is refused rather than written."""

from __future__ import annotations

import os
import random
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from api.bootstrap import Runtime
from projections import base, money, sessions
from projections import tables as t
from projections.base import fmt

BIGINT_MAX = 2**63 - 1


def _seeded() -> random.Random:
    seed = int(os.environ.get("WISPGATE_TEST_SEED", random.randrange(2**32)))
    print(f"seed {seed} (WISPGATE_TEST_SEED={seed} replays it)")
    return random.Random(seed)


def _text(rng: random.Random, name: str) -> str:
    return rng.choice(["", f"{name}-{rng.randrange(1000)}", "éü", f"{rng.randrange(10**6)}"])


def _random_row(rng: random.Random, n: int) -> dict[str, Any]:
    started = 1_793_491_200 + rng.randrange(10**6)
    return {
        "id": f"s{n}:{started}", "nas_id": rng.choice(["", "nas-1", "nas-2"]),
        "acct_session_id": _text(rng, "acct"), "username": _text(rng, "user"),
        "account_id": rng.choice([None, f"a-{rng.randrange(9)}"]), "started_at": started,
        "updated_at": started + rng.randrange(10**5), "stopped_at": rng.choice([None, started + rng.randrange(10**5)]),
        "upload_bytes": rng.choice([0, rng.randrange(2**40), rng.randrange(2**63, 2**66)]),
        "download_bytes": rng.choice([0, rng.randrange(2**40), BIGINT_MAX, BIGINT_MAX + 1]),
        "amount": rng.choice(["0", "1.5", Decimal(rng.randrange(10**12)) / 10**9, Decimal("0.10"), Decimal("-3")]),
        "currency": rng.choice(["", "USD", "EUR"]), "framed_ip": rng.choice(["", "10.0.0.1", "100.64.3.248"]),
        "nas_ip": _text(rng, "ip"), "calling_station_id": _text(rng, "mac"), "terminate_cause": _text(rng, "cause"),
    }


def _stored(row: dict[str, Any]) -> tuple[Any, ...]:
    """What the table must hold for a row: written out plainly, column by column."""
    amount = row["amount"]
    return tuple(
        fmt(amount) if name == "amount" and isinstance(amount, Decimal)
        else min(row[name], BIGINT_MAX) if name in ("upload_bytes", "download_bytes")
        else row[name]
        for name in (c.name for c in t.sessions.columns))


def _flush(conn: Any, rows: list[dict[str, Any]]) -> None:
    batch = sessions._SessionBatch(conn)
    batch.touched = {row["id"]: row for row in rows}
    batch.flush()


def test_session_rows_land_in_their_columns(runtime: Runtime) -> None:
    rng = _seeded()
    engine = runtime.projector.engine
    rows = [_random_row(rng, n) for n in range(rng.randint(20, 60))]
    with engine.begin() as conn:
        for row in rows:
            row.update(_new=True, _keyless=not row["nas_id"], _indexed=(None, None))
        _flush(conn, rows)
        assert sorted(tuple(r) for r in conn.execute(select(t.sessions))) == sorted(map(_stored, rows))
        for row in rows:  # then changed in place: some move their indexed columns, most do not
            fresh = _random_row(rng, 0)
            for name in ("username", "updated_at", "stopped_at", "upload_bytes", "download_bytes", "amount",
                         "currency", "nas_id", "acct_session_id", "nas_ip", "calling_station_id", "terminate_cause"):
                row[name] = fresh[name]
            if rng.random() < 0.3:
                row["account_id"], row["framed_ip"] = fresh["account_id"], fresh["framed_ip"]
        _flush(conn, rows)
        assert sorted(tuple(r) for r in conn.execute(select(t.sessions))) == sorted(map(_stored, rows))
        conn.rollback()


def test_journal_lines_and_balances_are_what_the_handlers_made(runtime: Runtime) -> None:
    rng = _seeded()
    engine = runtime.projector.engine
    accounts = [f"00000000-0000-4000-8000-00000000000{n}" for n in range(4)]
    expected_lines, totals = [], {account: Decimal(0) for account in accounts}
    with engine.begin() as conn:
        for round_ in range(3):  # the first round makes the balances, the others change them
            batch = money._MoneyBatch(conn)
            for n in range(rng.randint(3, 15)):
                position, account = 1000 * round_ + n, rng.choice(accounts)
                amount = rng.choice(["0.34789031145", "12.5", "3", "0.000375", "1E+2", "-0.50"])
                postings = [{"ledger_account": f"receivable:{account}", "amount": amount, "currency": "USD"},
                            {"ledger_account": "revenue:usage", "amount": fmt(-Decimal(amount)), "currency": "USD"}]
                batch.postings(position, f"usage:{position}", 1_793_491_200 + position, postings)
                expected_lines += [(position, line, f"usage:{position}", 1_793_491_200 + position,
                                    posting["ledger_account"], fmt(Decimal(posting["amount"])), "USD")
                                   for line, posting in enumerate(postings)]
                totals[account] += Decimal(amount)
            batch.flush()
        assert sorted(tuple(r) for r in conn.execute(select(t.journal))) == sorted(expected_lines)
        stored = {r.account_id: r for r in conn.execute(select(t.balances))}
        for account, total in totals.items():
            if account in stored:
                assert Decimal(stored[account].receivable) == total
                assert stored[account].position == max(p for p, *_, a, _, _ in expected_lines
                                                        if a == f"receivable:{account}")
        conn.rollback()


@pytest.mark.parametrize("statement, names", [
    (sessions._UPDATE_UNINDEXED, sessions._UNINDEXED_PARAMETERS),
    (sessions._UPDATE_SESSION, sessions._UPDATE_PARAMETERS),
    (money._INSERT_JOURNAL, money._JOURNAL_PARAMETERS),
])
def test_values_in_another_order_than_the_statement_are_refused(runtime: Runtime, statement: Any,
                                                                 names: tuple[str, ...]) -> None:
    swapped = (names[1], names[0], *names[2:])
    with runtime.projector.engine.connect() as conn:
        assert base._positional(conn, statement, names)
        base._POSITIONAL.clear()  # the check runs when a statement is first compiled
        with pytest.raises(ValueError, match="parameters are"):
            base.execute_rows(conn, statement, swapped, [tuple(range(len(names)))])
