"""A standby (or fenced) site refuses writes through the API: its ledger is a copy of the
active site's, and anything written here would diverge from it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

ALWAYS_ALLOWED = ("/v1/site", "/v1/replication", "/v1/audit")


def guard_writes(app: FastAPI, is_active: Callable[[], bool]) -> None:
    """Refuse writes through the API while ``is_active()`` says this site is not active."""
    app.add_middleware(_WriteGuard, is_active=is_active)


class _WriteGuard:
    """Plain ASGI (Starlette's ``BaseHTTPMiddleware`` costs a task group and a stream per
    request: a fifth of a balance read's CPU)."""

    def __init__(self, app: Any, is_active: Callable[[], bool]) -> None:
        self.app = app
        self.is_active = is_active

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if (scope["method"] in ("POST", "PUT", "PATCH", "DELETE") and path.startswith("/v1/")
                    and not path.startswith(ALWAYS_ALLOWED) and not self.is_active()):
                response = JSONResponse(
                    {"type": "about:blank", "title": "This site is a standby", "status": 503,
                     "detail": "writes go to the active site; see `wispgate site status`"},
                    status_code=503, media_type="application/problem+json")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
