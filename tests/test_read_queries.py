"""The read models' queries (projections/queries.py: statements built once, run through a pooled
DB-API cursor) return what SQLAlchemy Core statements built per call return, on randomized
rows and filters, on both stores."""

from __future__ import annotations

import json
import os
import random
import secrets
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from api.bootstrap import Runtime
from ledger.access import token_hash
from projections import queries
from projections import tables as t

from .test_api_portal_reads import fill


def reference_rows(engine: Engine, query: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings().all()]


def reference_usage(engine: Engine, account_id: str, granularity: str, start: int | None, end: int | None,
                    limit: int) -> list[dict[str, Any]]:
    u = t.usage
    query = select(u).where(u.c.account_id == account_id, u.c.granularity == granularity)
    if start is not None:
        query = query.where(u.c.bucket_start >= start)
    if end is not None:
        query = query.where(u.c.bucket_start < end)
    buckets: dict[int, dict[str, Any]] = {}
    for row in reference_rows(engine, query.order_by(u.c.bucket_start, u.c.band)):
        bucket = buckets.setdefault(row["bucket_start"], {"bucket_start": row["bucket_start"], "upload_bytes": 0,
                                                          "download_bytes": 0, "bands": {}})
        if len(buckets) > limit:
            buckets.pop(row["bucket_start"])
            break
        bucket["upload_bytes"] += row["upload_bytes"]
        bucket["download_bytes"] += row["download_bytes"]
        bucket["bands"][row["band"]] = row["upload_bytes"] + row["download_bytes"]
    return list(buckets.values())


def reference_sessions(engine: Engine, account_id: str, active: bool | None, before: str | None,
                       limit: int) -> list[dict[str, Any]]:
    s = t.sessions
    query = select(s).where(s.c.account_id == account_id)
    if active is True:
        query = query.where(s.c.stopped_at.is_(None))
    elif active is False:
        query = query.where(s.c.stopped_at.is_not(None))
    if before:
        started, _, row_id = before.partition(":")
        query = query.where(or_(s.c.started_at < int(started),
                                and_(s.c.started_at == int(started), s.c.id < row_id)))
    return reference_rows(engine, query.order_by(s.c.started_at.desc(), s.c.id.desc()).limit(limit))


def test_queries_return_what_core_statements_return(runtime: Runtime) -> None:
    seed = int(os.environ.get("WISPGATE_TEST_SEED", secrets.randbelow(2**32)))
    print(f"seed {seed} (WISPGATE_TEST_SEED={seed} replays it)")
    rng = random.Random(seed)
    accounts, tokens, sessions = fill(runtime, rng)
    engine = runtime.engine
    for token, (role, _, revoked) in [*tokens.items(), ("wg_unknown", ("", None, False))]:
        expected = reference_rows(engine, select(t.api_tokens).where(t.api_tokens.c.hashed == token_hash(token)))
        found = queries.token(engine, token_hash(token))
        assert found == (expected[0] if expected else None)
        if found:
            assert found["revoked"] is revoked and found["role"] == role  # a bool, as Core gives it
    cursors = [f"{s['started_at']}:{s['id']}" for s in sessions]
    nonempty = 0
    for account in accounts:
        found = reference_rows(engine, select(t.accounts).where(t.accounts.c.id == account))
        assert queries.account(engine, account) == (
            found[0] | {"usernames": json.loads(found[0]["usernames"])} if found else None)
        found = reference_rows(engine, select(t.balances).where(t.balances.c.account_id == account))
        balance = queries.balance(engine, account)
        assert balance == (None if not found else {
            "receivable": Decimal(found[0]["receivable"]), "currency": found[0]["currency"],
            "updated_at": found[0]["updated_at"], "position": found[0]["position"]})
        for _ in range(12):
            start, end = (rng.choice([None, rng.randrange(0, 2_000_000)]) for _ in range(2))
            granularity, limit = rng.choice(["hour", "day"]), rng.choice([1, 2, 3, 1000])
            usage = queries.usage(engine, account, granularity, start, end, limit)
            assert usage == reference_usage(engine, account, granularity, start, end, limit)
            active, before = rng.choice([None, True, False]), rng.choice([None, *cursors])
            limit = rng.choice([1, 2, 3, 100])
            rows = queries.sessions(engine, account, active=active, before=before, limit=limit)
            assert rows == reference_sessions(engine, account, active, before, limit)
            nonempty += bool(rows) + bool(usage)
    assert nonempty >= 20  # the filters were not all empty
