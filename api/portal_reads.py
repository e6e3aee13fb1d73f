"""The portal's balance read, answered before FastAPI's routing when it can be.

`GET /v1/accounts/{id}/balance` is the read a customer portal (and the freshness prober of
`bench/`) makes most. Through FastAPI it cost ~3-5 ms of the serving process's CPU: route
matching over every route, dependency solving, a thread-pool hand-off for the endpoint,
two SQLAlchemy Core statements built and compiled per request, response validation. In
`serve` that process also rates, and its threads share one interpreter lock.

Here the common case (a known, unrevoked bearer token that may read the account, and a
projected balance) is one indexed join over the read models through a pooled DB-API
connection, and the same JSON bytes. Everything else (no or unknown token, a token issued a
moment ago and not projected yet, revoked, another subscriber's account, no balance, any
query string, any error) falls through to the FastAPI route, so the answers there, the
problem+json errors and the OpenAPI document stay those of `api/routers/portal.py`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import Engine, bindparam, select

from ledger.access import token_hash
from projections import tables as t

from .deps import Principal
from .routers.portal import balance_fields

# Only the canonical form of a UUID (what str(UUID) gives): other spellings FastAPI accepts
# go the long way, where the path parameter is parsed.
_BALANCE_PATH = re.compile(r"/v1/accounts/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/balance")
_HEADERS = [(b"content-type", b"application/json")]


def _balance_query(engine: Engine) -> tuple[str, list[str]]:
    """The token-and-balance join as the engine's driver takes it, and its parameters' order."""
    query = (select(t.api_tokens.c.role, t.api_tokens.c.account_id, t.api_tokens.c.revoked,
                    t.balances.c.receivable, t.balances.c.currency, t.balances.c.updated_at)
             .select_from(t.api_tokens.outerjoin(t.balances, t.balances.c.account_id == _param("account")))
             .where(t.api_tokens.c.hashed == _param("hashed")))
    compiled = query.compile(dialect=engine.dialect)
    return compiled.string, list(compiled.positiontup or [])


def _param(name: str) -> Any:
    return bindparam(name, type_=t.api_tokens.c.hashed.type)


class PortalReads:
    """ASGI middleware answering the portal's balance read directly (see the module's docstring)."""

    def __init__(self, app: Any, engine: Engine) -> None:
        self.app = app
        self.engine = engine
        self.sql, self.order = _balance_query(engine)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("query_string"):
            match = _BALANCE_PATH.fullmatch(scope["path"])
            if match is not None:
                body = self.balance(match[1], scope["headers"])
                if body is not None:
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [(b"content-length", str(len(body)).encode()), *_HEADERS]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def balance(self, account_id: str, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """The balance JSON of ``account_id`` for the bearer of ``headers``, or None when the
        request needs FastAPI's route (any refusal, any doubt)."""
        token = _bearer(headers)
        if token is None:
            return None
        try:
            row = self._read(account_id, token_hash(token))
            if row is None:
                return None
            role, token_account, revoked, receivable, currency, updated_at = row
            if revoked or receivable is None or not Principal(role, token_account).may_read_account(account_id):
                return None
            balance, exact = balance_fields(receivable, currency)
            as_of = None if updated_at is None else datetime.fromtimestamp(updated_at, UTC).isoformat()
        except Exception:  # the route meets the same fault and answers it as it does
            return None
        # As FastAPI writes BalanceOut: compact, and a UTC time with "Z" (pydantic's form).
        return orjson.dumps({"account_id": account_id, "balance": balance, "balance_exact": exact,
                             "currency": currency, "as_of": as_of and as_of.replace("+00:00", "Z")})

    def _read(self, account_id: str, hashed: str) -> tuple[Any, ...] | None:
        values = {"account": account_id, "hashed": hashed}
        params: Any = [values[name] for name in self.order] if self.order else values
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql, params)
                row = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            connection.close()  # back to the pool
        return tuple(row) if row is not None else None


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The bearer credentials as FastAPI's ``HTTPBearer`` reads them (the first Authorization
    header), or None where it would find none."""
    for name, value in headers:
        if name == b"authorization":
            authorization = value.decode("latin-1")
            scheme, credentials = get_authorization_scheme_param(authorization)
            if authorization and scheme and credentials and scheme.lower() == "bearer":
                return credentials
            return None
    return None
