"""The FastAPI application for a runtime. Routers are discovered in `api.routers`: every
module there with a ``router`` is mounted, so adding a resource is adding a file."""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter, FastAPI

from . import problems, routers
from .bootstrap import Runtime
from .portal_reads import PortalReads


def create_app(runtime: Runtime, *, portal_fast_path: bool = True) -> FastAPI:
    """The API of ``runtime``. ``portal_fast_path=False`` leaves every request to FastAPI's
    routes (the reference the fast path is tested against)."""
    app = FastAPI(
        title="WISPGate Ledger",
        version="0.1.0",
        description="Event-sourced billing and rating ledger for wireless ISPs.",
    )
    app.state.runtime = runtime
    problems.install(app)
    for module_info in sorted(pkgutil.iter_modules(routers.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{routers.__name__}.{module_info.name}")
        router = getattr(module, "router", None)
        if isinstance(router, APIRouter):
            app.include_router(router)
    if portal_fast_path:
        app.add_middleware(PortalReads, engine=runtime.engine)
    return app
