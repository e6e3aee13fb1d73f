"""A standby (or fenced) site refuses writes through the API: its ledger is a copy of the
active site's, and anything written here would diverge from it."""

from __future__ import annotations

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
