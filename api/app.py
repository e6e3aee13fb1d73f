"""The FastAPI application for a runtime."""

from __future__ import annotations

from fastapi import FastAPI

from . import problems
from .bootstrap import Runtime
from .routers import admin, ops, portal


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="WISPGate Ledger",
        version="0.1.0",
        description="Event-sourced billing and rating ledger for wireless ISPs.",
    )
    app.state.runtime = runtime
    problems.install(app)
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(portal.router)
    return app
