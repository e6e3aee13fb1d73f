"""The FastAPI application for a runtime. Routers are discovered in `api.routers`: every
module there with a ``router`` is mounted, so adding a resource is adding a file."""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter, FastAPI

from . import problems, routers
from .bootstrap import Runtime


def create_app(runtime: Runtime) -> FastAPI:
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
    return app
