"""`wispgate serve`: the embedded mode (RADIUS, rater, projector and API on one machine).

By default the RADIUS listener runs in a child process of its own (adapters/radius/worker.py)
so that acknowledging records does not wait for the rater, projector or API to release the
interpreter lock; ``radius_process = "inline"`` keeps everything in one process. Likewise the
live projector (adapters/projector_worker.py) and the rater (adapters/rater_worker.py) run in
child processes, so rating, projecting and answering the API each have an interpreter (and a
share of the cores) of their own; ``projector_process`` / ``rater_process = "inline"`` keeps
them threads of this process."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from adapters import event_loop
from adapters.projector_worker import ProjectorWorker
from adapters.radius.registry import NasRegistry, keep_fresh
from adapters.radius.server import configured_server, start_accounting_server
from adapters.radius.worker import RadiusWorker, expose_child_metrics
from adapters.rater_worker import RaterWorker
from adapters.shipping import SiteController
from projections import queries

from ..app import create_app
from ..bootstrap import Runtime, build_runtime
from ..logs import configure
from ..settings import Settings
from ..site_guard import guard_writes
from .common import add_listen_options, add_store_options

log = logging.getLogger("wispgate.serve")

Listening = tuple[Callable[[], None] | None, str | None]  # (stop it, or the error text)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "serve", help="run RADIUS accounting, rating, read models and the API on one machine (embedded)")
    add_store_options(parser)
    add_listen_options(parser)
    parser.set_defaults(handler=lambda settings, _args: event_loop.run(serve(settings), settings.event_loop))


async def _listen_inline(settings: Settings, runtime: Runtime, site: SiteController) -> Listening:
    """The RADIUS listener on this process's event loop."""
    registry = NasRegistry(runtime.engine)
    runtime.projector.listeners.append(registry.mark_stale)
    registry.refresh(force=True)
    accounting = configured_server(registry, runtime.intake.append, settings)
    site.attach_accounting(accounting)
    site.start()
    try:
        await start_accounting_server(settings.radius_host, settings.radius_port, accounting,
                                      receive_buffer=settings.radius_receive_buffer)
    except OSError as error:
        return None, str(error)
    refresher = asyncio.create_task(keep_fresh(registry))

    def stop() -> None:
        refresher.cancel()
        accounting.close()

    return stop, None


async def _listen_separate(settings: Settings, runtime: Runtime, site: SiteController,
                           worker: RadiusWorker) -> Listening:
    """The RADIUS listener in a child process (launched already); its commits wake this
    process's rater."""
    runtime.projector.listeners.append(worker.mark_stale)
    site.attach_accounting(worker)
    site.start()
    error = await asyncio.to_thread(worker.start)
    if error is not None:
        return None, error
    undo_metrics = expose_child_metrics(worker)

    def stop() -> None:
        undo_metrics()
        worker.close()

    return stop, None


async def serve(settings: Settings) -> int:
    loop = asyncio.get_running_loop()
    halted: list[str] = []
    radius_failures: list[str] = []
    api: uvicorn.Server | None = None
    worker: RadiusWorker | None = None
    projector: ProjectorWorker | None = None
    rater: RaterWorker | None = None
    if settings.rater_process != "inline":
        # Its commits wake this process's followers of the ledger (projector, chainer) as the
        # thread's did; a batch it failed makes this process's enforcer forget its cache too.
        rater = RaterWorker(settings, writes_open=lambda: runtime.gate.writes_open,
                            on_rated=lambda: runtime.ledger.wake_followers(),
                            on_forgot=lambda: runtime.ledger.forget_live_sessions(),
                            on_fatal=lambda text: child_fatal("rater", text),
                            on_failed=lambda message: radius_failed(message), configure_logging=configure)
        rater.launch()
    if settings.projector_process != "inline":
        # Its positions reach this process's projector: read-your-writes waiters and the
        # listeners (NAS registries, enforcer) are woken as by the in-process stage.
        projector = ProjectorWorker(settings, on_position=lambda position: runtime.projector._advanced(position),
                                    on_fatal=lambda text: child_fatal("projector", text),
                                    on_failed=lambda message: radius_failed(message), configure_logging=configure)
        projector.launch()
    if settings.radius_process != "inline":
        # Launched first: its start-up (imports) overlaps this process's; it touches the
        # store only when told to, below, once the applications and tables exist.
        worker = RadiusWorker(settings, on_durable=lambda: runtime.intake.appended_elsewhere(),
                              on_failed=lambda message: radius_failed(message), configure_logging=configure)
        worker.launch()
    try:
        runtime = build_runtime(settings)
        # The site record decides, before any stage runs, whether this site may write (standby).
        site = SiteController(runtime)
    except BaseException:
        for child in (worker, projector, rater):
            if child is not None:
                child.close()
        raise

    def stop_api() -> None:
        if api is not None:
            loop.call_soon_threadsafe(setattr, api, "should_exit", True)

    def halt(stage: Any) -> None:
        """A ledger invariant failed in a stage: stop the whole process, never continue."""
        halted.append(stage.name)
        stop_api()

    def child_fatal(stage: str, text: str) -> None:
        """An invariant failed in the rater or projector process: stop, never continue."""
        log.critical("the %s process stopped: %s", stage, text)
        halted.append(stage)
        stop_api()

    def radius_failed(message: str) -> None:
        """A child (RADIUS listener, projector) died too often or cannot listen: stop, so a
        supervisor restarts us."""
        radius_failures.append(message)
        stop_api()

    runtime.on_fatal = halt
    try:
        runtime.start_stages(projector, rater)
        for child in (rater, projector):
            if child is not None and not await asyncio.to_thread(child.start):
                log.warning("%s is not ready yet; serving meanwhile", child.title)
        if worker is None:
            stop_radius, error = await _listen_inline(settings, runtime, site)
        else:
            stop_radius, error = await _listen_separate(settings, runtime, site, worker)
        if stop_radius is None:
            print(f"wispgate: cannot listen on {settings.radius_host}:{settings.radius_port}/udp: {error}",
                  file=sys.stderr)
            return 1
        app = create_app(runtime)
        guard_writes(app, lambda: bool(site.active))
        # What start-up built (modules, the app, the applications) lives as long as the
        # process: out of the collector's sight, full collections under load scan only what
        # the stages made since (GC CPU while rating: -40 %, ~4 % of rating, bench notes).
        gc.collect()
        gc.freeze()
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
        if halted or radius_failures:  # failed before the API existed
            api.should_exit = True
        try:
            await api.serve()
        finally:
            stop_radius()
        if halted:
            print(f"wispgate: stopped: a ledger invariant failed in stage {', '.join(halted)} (see the log)",
                  file=sys.stderr)
            return 70
        if radius_failures:
            print(f"wispgate: stopped: {radius_failures[0]}", file=sys.stderr)
            return 1
        return 0 if api.started else 1
    finally:
        for child in (worker, rater, projector):
            if child is not None:
                child.close()  # idempotent; here for the paths that never started the API
        site.stop()
        runtime.close()
