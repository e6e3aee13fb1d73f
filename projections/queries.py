"""Read-side queries used by the API and the CLI. Plain functions over an Engine."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from . import tables as t


def account(engine: Engine, account_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(t.accounts).where(t.accounts.c.id == account_id)).mappings().first()
    if row is None:
        return None
    return dict(row) | {"usernames": json.loads(row["usernames"])}


def token(engine: Engine, hashed: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(t.api_tokens).where(t.api_tokens.c.hashed == hashed)).mappings().first()
    return dict(row) if row else None


def balance(engine: Engine, account_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(select(t.balances).where(t.balances.c.account_id == account_id)).mappings().first()
    if row is None:
        return None
    return {"receivable": Decimal(row["receivable"]), "currency": row["currency"],
            "updated_at": row["updated_at"], "position": row["position"]}


def usage(engine: Engine, account_id: str, granularity: str, start: int | None, end: int | None,
          limit: int) -> list[dict[str, Any]]:
    """Buckets in time order, each with its totals and its per-band split."""
    u = t.usage
    query = select(u).where(u.c.account_id == account_id, u.c.granularity == granularity)
    if start is not None:
        query = query.where(u.c.bucket_start >= start)
    if end is not None:
        query = query.where(u.c.bucket_start < end)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(u.c.bucket_start, u.c.band)).mappings().all()
    buckets: dict[int, dict[str, Any]] = {}
    for row in rows:
        bucket = buckets.setdefault(row["bucket_start"], {"bucket_start": row["bucket_start"], "upload_bytes": 0,
                                                          "download_bytes": 0, "bands": {}})
        if len(buckets) > limit:
            buckets.pop(row["bucket_start"])
            break
        bucket["upload_bytes"] += row["upload_bytes"]
        bucket["download_bytes"] += row["download_bytes"]
        bucket["bands"][row["band"]] = row["upload_bytes"] + row["download_bytes"]
    return list(buckets.values())


def sessions(engine: Engine, account_id: str, *, active: bool | None, before: str | None,
             limit: int) -> list[dict[str, Any]]:
    """Newest first; ``before`` is the cursor (started_at:id of the last row seen)."""
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
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(s.c.started_at.desc(), s.c.id.desc()).limit(limit)).mappings().all()
    return [dict(r) for r in rows]


def who_had_ip(engine: Engine, ip: str, at: int) -> list[dict[str, Any]]:
    """Sessions holding Framed-IP-Address ``ip`` at ``at`` (abuse and lawful requests)."""
    s = t.sessions
    query = select(s).where(s.c.framed_ip == ip, s.c.started_at <= at,
                            or_(s.c.stopped_at.is_(None), s.c.stopped_at >= at))
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query.order_by(s.c.started_at)).mappings().all()]


def listing(engine: Engine, table_name: str, limit: int = 1000) -> list[dict[str, Any]]:
    table = t.metadata.tables[table_name]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).limit(limit)).mappings().all()]


def find_accounts(engine: Engine, *, username: str | None = None, status: str | None = None,
                  name: str | None = None, after: str = "", limit: int = 100) -> list[dict[str, Any]]:
    """Accounts in id order after ``after``: the one that holds RADIUS ``username`` (exact),
    those with ``status``, those whose name contains ``name`` (case-insensitive); each with its
    balance (receivable, debit-positive) when it has one."""
    query = (select(t.accounts, t.balances.c.receivable)
             .select_from(t.accounts.outerjoin(t.balances, t.balances.c.account_id == t.accounts.c.id))
             .where(t.accounts.c.id > after).order_by(t.accounts.c.id).limit(limit))
    if username is not None:
        query = query.where(t.accounts.c.id.in_(
            select(t.usernames.c.account_id).where(t.usernames.c.username == username)))
    if status is not None:
        query = query.where(t.accounts.c.status == status)
    if name:
        query = query.where(t.accounts.c.name.ilike(f"%{name}%"))
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [dict(row) | {"usernames": json.loads(row["usernames"])} for row in rows]
