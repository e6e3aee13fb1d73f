"""Read-side queries used by the API and the CLI. Plain functions over an Engine."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Engine, Select, and_, bindparam, or_, select

from . import tables as t


class _Read:
    """A SELECT built once and compiled once per kind of database, run through a pooled DB-API
    cursor. The portal's reads are a few indexed rows; building a Core statement per call and
    executing it through a Connection cost ~0.5 ms of CPU each, the read itself ~20-50 us."""

    def __init__(self, query: Select[Any]) -> None:
        self.query = query
        self.names = [str(column.key) for column in query.selected_columns]
        self.compiled: dict[tuple[str, str], tuple[str, list[str], dict[str, Any]]] = {}

    def rows(self, engine: Engine, **values: Any) -> list[dict[str, Any]]:
        """The rows for ``values`` (the statement's bound parameters), as dicts by column name.
        Values come as the driver gives them (text and integers here; SQLite's booleans as 0 or 1)."""
        dialect = engine.dialect
        key = (dialect.name, dialect.paramstyle)
        if key not in self.compiled:
            compiled = self.query.compile(dialect=dialect)
            # Parameters the compiler adds itself (SQLite's OFFSET with a bound LIMIT) keep their values.
            self.compiled[key] = (compiled.string, list(compiled.positiontup or []), dict(compiled.params))
        sql, order, defaults = self.compiled[key]
        values = defaults | values
        connection = engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, [values[name] for name in order] if order else values)
                found = cursor.fetchall()
            finally:
                cursor.close()
        finally:
            connection.close()  # back to the pool
        return [dict(zip(self.names, row, strict=True)) for row in found]


def _text(name: str) -> Any:
    return bindparam(name, type_=t.accounts.c.id.type)


def _number(name: str) -> Any:
    return bindparam(name, type_=BigInteger())


_ACCOUNT = _Read(select(t.accounts).where(t.accounts.c.id == _text("account")))
_TOKEN = _Read(select(t.api_tokens).where(t.api_tokens.c.hashed == _text("hashed")))
_BALANCE = _Read(select(t.balances).where(t.balances.c.account_id == _text("account")))


_TOKEN_COLUMNS = (t.api_tokens.c.role, t.api_tokens.c.account_id, t.api_tokens.c.revoked)
_TOKEN_AND_BALANCE = _Read(
    select(*_TOKEN_COLUMNS, t.balances.c.receivable, t.balances.c.currency, t.balances.c.updated_at)
    .select_from(t.api_tokens.outerjoin(t.balances, t.balances.c.account_id == _text("account")))
    .where(t.api_tokens.c.hashed == _text("hashed")))
_TOKEN_AND_ACCOUNT = _Read(
    select(*_TOKEN_COLUMNS, t.accounts.c.id.label("existing"))
    .select_from(t.api_tokens.outerjoin(t.accounts, t.accounts.c.id == _text("account")))
    .where(t.api_tokens.c.hashed == _text("hashed")))


def token_and_balance(engine: Engine, hashed: str, account_id: str) -> dict[str, Any] | None:
    """The token's role, account_id and revoked (0/1 on SQLite), with the balance row's
    receivable, currency and updated_at of ``account_id`` (None when it has none); one read."""
    found = _TOKEN_AND_BALANCE.rows(engine, hashed=hashed, account=account_id)
    return found[0] if found else None


def token_and_account(engine: Engine, hashed: str, account_id: str) -> dict[str, Any] | None:
    """The token's role, account_id and revoked (0/1 on SQLite), with "existing": the id of
    ``account_id`` if such an account exists, else None; one read."""
    found = _TOKEN_AND_ACCOUNT.rows(engine, hashed=hashed, account=account_id)
    return found[0] if found else None


def account(engine: Engine, account_id: str) -> dict[str, Any] | None:
    found = _ACCOUNT.rows(engine, account=account_id)
    if not found:
        return None
    return found[0] | {"usernames": json.loads(found[0]["usernames"])}


def token(engine: Engine, hashed: str) -> dict[str, Any] | None:
    found = _TOKEN.rows(engine, hashed=hashed)
    return found[0] | {"revoked": bool(found[0]["revoked"])} if found else None  # SQLite gives 0 or 1


def balance(engine: Engine, account_id: str) -> dict[str, Any] | None:
    found = _BALANCE.rows(engine, account=account_id)
    if not found:
        return None
    row = found[0]
    return {"receivable": Decimal(row["receivable"]), "currency": row["currency"],
            "updated_at": row["updated_at"], "position": row["position"]}


def _usage_read(start: bool, end: bool) -> _Read:
    u = t.usage
    query = select(u).where(u.c.account_id == _text("account"), u.c.granularity == _text("granularity"))
    if start:
        query = query.where(u.c.bucket_start >= _number("start"))
    if end:
        query = query.where(u.c.bucket_start < _number("end"))
    return _Read(query.order_by(u.c.bucket_start, u.c.band))


_USAGE = {(start, end): _usage_read(start, end) for start in (False, True) for end in (False, True)}


def _sessions_read(active: bool | None, before: bool) -> _Read:
    s = t.sessions
    query = select(s).where(s.c.account_id == _text("account"))
    if active is True:
        query = query.where(s.c.stopped_at.is_(None))
    elif active is False:
        query = query.where(s.c.stopped_at.is_not(None))
    if before:
        query = query.where(or_(s.c.started_at < _number("started"),
                                and_(s.c.started_at == _number("started"), s.c.id < _text("row_id"))))
    return _Read(query.order_by(s.c.started_at.desc(), s.c.id.desc()).limit(_number("limit")))


_SESSIONS = {(active, before): _sessions_read(active, before) for active in (None, True, False)
             for before in (False, True)}


def usage(engine: Engine, account_id: str, granularity: str, start: int | None, end: int | None,
          limit: int) -> list[dict[str, Any]]:
    """Buckets in time order, each with its totals and its per-band split."""
    rows = _USAGE[start is not None, end is not None].rows(
        engine, account=account_id, granularity=granularity, start=start, end=end)
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
    started, _, row_id = (before or "").partition(":")
    return _SESSIONS[active, bool(before)].rows(engine, account=account_id, started=int(started or 0),
                                                row_id=row_id, limit=limit)


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
