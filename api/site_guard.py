"""A standby (or fenced) site refuses writes through the API: its ledger is a copy of the
active site's, and anything written here would diverge from it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

ALWAYS_ALLOWED = ("/v1/site", "/v1/replication", "/v1/audit")


def guard_writes(app: FastAPI, is_active: Callable[[], bool]) -> None:
    @app.middleware("http")
    async def refuse_writes_on_standby(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Any:
        path = request.url.path
        if (request.method in ("POST", "PUT", "PATCH", "DELETE") and path.startswith("/v1/")
                and not path.startswith(ALWAYS_ALLOWED) and not is_active()):
            return JSONResponse(
                {"type": "about:blank", "title": "This site is a standby", "status": 503,
                 "detail": "writes go to the active site; see `wispgate site status`"},
                status_code=503, media_type="application/problem+json")
        return await call_next(request)


class RecordedRole:
    """Whether the site is active, from its durable record, re-read at most every ``ttl``
    seconds (the `api` nodes of a distributed site have no controller in process). While the
    record cannot be read the last known answer stands."""

    def __init__(self, store: Any, name: str, default_role: str, ttl: float = 0.5) -> None:
        self.store = store
        self.name = name
        self.default_role = default_role
        self.ttl = ttl
        self.known = default_role == "active"
        self.read_at = -ttl

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self.read_at >= self.ttl:
            # The database briefly unavailable: writes would fail anyway; keep the last answer.
            with contextlib.suppress(Exception):
                self.known = self.store.site(default_name=self.name, default_role=self.default_role).active
            self.read_at = now
        return self.known
