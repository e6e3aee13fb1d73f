"""`wispgate serve`: the embedded mode in one process (RADIUS, rater, projector, API)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import uvicorn

from adapters.radius.registry import NasRegistry
from adapters.radius.server import AccountingServer, start_accounting_server
from adapters.shipping import SiteController
from projections import queries

from ..app import create_app
from ..bootstrap import build_runtime
from ..settings import Settings
from ..site_guard import guard_writes
from .common import add_listen_options, add_store_options

log = logging.getLogger("wispgate.serve")


async def _refresh_registry(registry: NasRegistry, interval: float = 2.0) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(registry.refresh, force=True)
        except Exception:
            log.exception("could not refresh the NAS registry")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "serve", help="run RADIUS accounting, rating, read models and the API in one process (embedded)")
    add_store_options(parser)
    add_listen_options(parser)
    parser.set_defaults(handler=lambda settings, _args: asyncio.run(serve(settings)))


async def serve(settings: Settings) -> int:
    runtime = build_runtime(settings)
    registry = NasRegistry(runtime.engine)
    runtime.projector.listeners.append(registry.mark_stale)
    # The site record decides, before any stage runs, whether this site may write (standby).
    site = SiteController(runtime)
    loop = asyncio.get_running_loop()
    halted: list[str] = []
    api: uvicorn.Server | None = None

    def halt(stage: Any) -> None:
        """A ledger invariant failed in a stage: stop the whole process, never continue."""
        halted.append(stage.name)
        if api is not None:
            loop.call_soon_threadsafe(setattr, api, "should_exit", True)

    runtime.on_fatal = halt
    try:
        runtime.start_stages()
        registry.refresh(force=True)
        accounting = AccountingServer(
            registry, runtime.intake.append, batch_max=settings.radius_batch_max,
            duplicate_window=settings.duplicate_cache_seconds,
        )
        site.attach_accounting(accounting)
        site.start()
        try:
            await start_accounting_server(settings.radius_host, settings.radius_port, accounting,
                                          receive_buffer=settings.radius_receive_buffer)
        except OSError as error:
            print(f"wispgate: cannot listen on {settings.radius_host}:{settings.radius_port}/udp: {error}",
                  file=sys.stderr)
            return 1
        refresher = asyncio.create_task(_refresh_registry(registry))
        app = create_app(runtime)
        guard_writes(app, lambda: bool(site.active))
        api = uvicorn.Server(uvicorn.Config(
            app, host=settings.api_host, port=settings.api_port,
            log_level=settings.log_level, lifespan="off", access_log=False,
        ))
        where = settings.database_url.split("@")[-1] if settings.database_url else f"{settings.data_dir}/ (SQLite)"
        print(f"WISPGate Ledger (embedded): RADIUS accounting on {settings.radius_host}:{settings.radius_port}/udp, "
              f"API on http://{settings.api_host}:{settings.api_port}, data in {where}", flush=True)
        if not queries.listing(runtime.engine, "api_tokens", limit=1):
            print("No API token exists yet. Create an admin token with:  wispgate token create --role admin",
                  flush=True)
        if halted:  # a stage failed before the API existed
            api.should_exit = True
        try:
            await api.serve()
        finally:
            refresher.cancel()
            accounting.close()
        if halted:
            print(f"wispgate: stopped: a ledger invariant failed in stage {', '.join(halted)} (see the log)",
                  file=sys.stderr)
            return 70
        return 0 if api.started else 1
    finally:
        site.stop()
        runtime.close()
