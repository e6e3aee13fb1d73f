"""The portal's reads (balance, usage, sessions of one account), answered before FastAPI's
routing when they can be.

`GET /v1/accounts/{id}/balance` is the read a customer portal (and the freshness prober of
`bench/`) makes most. Through FastAPI it cost ~3-6 ms of the serving process's CPU: route
matching over every route, dependency solving, a thread-pool hand-off for the endpoint,
SQLAlchemy Core statements built and compiled per request, response validation. In `serve`
that process also rates, and its threads share one interpreter lock.

Here the common case (a known, unrevoked bearer token that may read the account, which
exists or has a projected balance) is one indexed join of the token and the account over the
read models through a pooled DB-API connection, the view's own query for usage and sessions,
and the same JSON bytes. Everything else (no or unknown token, a token issued a moment ago
and not projected yet, revoked, another subscriber's account, no such account, a query
parameter in any but its plain form, any error) falls through to the FastAPI route, so the
answers there, the problem+json errors and the OpenAPI document stay those of
`api/routers/portal.py`.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import Engine

from ledger.access import token_hash
from projections import queries

from . import portal_views as reading
from .deps import Principal
from .routers.portal import balance_fields

# Only the canonical form of a UUID (what str(UUID) gives): other spellings FastAPI accepts
# go the long way, where the path parameter is parsed.
_PATH = re.compile(r"/v1/accounts/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                   r"/(balance|usage|sessions)")
_HEADERS = [(b"content-type", b"application/json")]


class PortalReads:
    """ASGI middleware answering the portal's reads directly (see the module's docstring)."""

    def __init__(self, app: Any, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _PATH.fullmatch(scope["path"])
            if match is not None:
                body = self.answer(match[1], match[2], scope.get("query_string", b""), scope["headers"])
                if body is not None:
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [(b"content-length", str(len(body)).encode()), *_HEADERS]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def answer(self, account_id: str, resource: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """The JSON of ``resource`` (balance, usage, sessions) of ``account_id`` for the bearer
        of ``headers``, or None when the request needs FastAPI's route (any refusal, any doubt)."""
        token = _bearer(headers)
        if token is None:
            return None
        try:
            if resource == "balance":
                return None if query else self._balance(account_id, token_hash(token))
            if resource == "usage":
                usage = reading.usage_params(query)
                return None if usage is None else self._readable(account_id, token, reading.usage, *usage)
            found = reading.session_params(query)
            return None if found is None else self._readable(account_id, token, reading.sessions, *found)
        except Exception:  # the route meets the same fault and answers it as it does
            return None

    def _balance(self, account_id: str, hashed: str) -> bytes | None:
        row = queries.token_and_balance(self.engine, hashed, account_id)
        if row is None or row["receivable"] is None or not _may_read(row, account_id):
            return None
        balance, exact = balance_fields(row["receivable"], row["currency"])
        # As FastAPI writes BalanceOut: compact, and a UTC time with "Z" (pydantic's form).
        return orjson.dumps({"account_id": account_id, "balance": balance, "balance_exact": exact,
                             "currency": row["currency"], "as_of": reading.iso(row["updated_at"])})

    def _readable(self, account_id: str, token: str, view: Any, *args: Any) -> bytes | None:
        """``view(engine, account_id, *args)`` if the bearer may read the account and it exists."""
        row = queries.token_and_account(self.engine, token_hash(token), account_id)
        if row is None or row["existing"] is None or not _may_read(row, account_id):
            return None
        return orjson.dumps(view(self.engine, account_id, *args))


def _may_read(token: dict[str, Any], account_id: str) -> bool:
    """Whether an unrevoked token may read ``account_id``, as `api.deps` decides it."""
    return not token["revoked"] and Principal(token["role"], token["account_id"]).may_read_account(account_id)


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
