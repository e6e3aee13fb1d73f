"""`wispgate radius`: the stateless RADIUS accounting adapter of the distributed mode.
Verified records go to the accounting topic; the BNG is answered once the broker has
acknowledged them. NAS secrets come from the PostgreSQL read model. Run several behind the
BNGs' primary/secondary server settings or an anycast address."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from typing import Any

from adapters.event_log import LedgerStore
from adapters.kafka.accounting_topic import AccountingTopic
from adapters.persistence import read_model_engine
from adapters.radius.registry import NasRegistry, keep_fresh
from adapters.radius.server import AccountingServer, configured_server, start_accounting_server
from projections import tables

from ..settings import Settings
from .common import add_listen_options, add_store_options
from .distributed import add_role_options, create_topics, role_settings, run_role, schema_lock, serve_metrics

log = logging.getLogger("wispgate.radius")


def register(commands: Any) -> None:
    parser = commands.add_parser("radius", help="distributed: RADIUS accounting adapter producing to Kafka")
    add_store_options(parser)
    add_listen_options(parser)
    add_role_options(parser)
    parser.set_defaults(handler=lambda settings, args: run_role(
        "radius", lambda s, t: asyncio.run(radius(s, t)), role_settings(settings, args)))


async def radius(settings: Settings, topics: Any) -> int:
    await asyncio.to_thread(create_topics, settings, topics)
    engine = read_model_engine(data_dir=settings.data_dir, database_url=settings.database_url)
    with schema_lock(settings):
        tables.metadata.create_all(engine)
        site_store = LedgerStore.open(data_dir=settings.data_dir, database_url=settings.database_url)
    registry = NasRegistry(engine)
    registry.refresh(force=True)
    sink = AccountingTopic(settings.kafka_bootstrap, topics.accounting,
                           client_id=f"wispgate-radius-{socket.gethostname()}")
    server = configured_server(registry, sink.append, settings)
    server.accepting = await asyncio.to_thread(_site_is_active, site_store, settings)  # a standby stays silent
    try:
        await start_accounting_server(settings.radius_host, settings.radius_port, server,
                                      receive_buffer=settings.radius_receive_buffer)
    except OSError as error:
        print(f"wispgate radius: cannot listen on {settings.radius_host}:{settings.radius_port}/udp: {error}",
              file=sys.stderr)
        return 1
    serve_metrics(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    refresher = asyncio.create_task(keep_fresh(registry))
    follower = asyncio.create_task(_follow_site(site_store, settings, server))
    print(f"WISPGate radius: accounting on {settings.radius_host}:{settings.radius_port}/udp -> "
          f"{topics.accounting} ({settings.kafka_bootstrap})", flush=True)
    try:
        await stopping.wait()
    finally:
        for task in (refresher, follower):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server.close()  # stops accepting, lets the batch in flight finish
        sink.close()
        engine.dispose()
        site_store.close()
    return 0


def _site_is_active(store: LedgerStore, settings: Settings) -> bool:
    return store.site(default_name=settings.site, default_role=settings.site_role).active


async def _follow_site(store: LedgerStore, settings: Settings, server: AccountingServer,
                       interval: float = 0.5) -> None:
    """Answer BNGs only while the site is active: a standby's silence makes them send to their
    other server. While the database cannot be read, the last known role stands (Kafka still
    makes records durable, and the raters catch up later)."""
    while True:
        await asyncio.sleep(interval)
        try:
            active = await asyncio.to_thread(_site_is_active, store, settings)
        except Exception:
            log.warning("cannot read the site record; keeping the last known role", exc_info=True)
            continue
        if active != server.accepting:
            log.warning("site %s is %s: RADIUS %s", settings.site, "active" if active else "not active",
                        "answering" if active else "silent")
            server.accepting = active
