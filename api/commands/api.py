"""`wispgate api`: the HTTP API of the distributed mode, over the PostgreSQL read models and
ledger. Stateless: run several behind a load balancer. Admin writes go to the ledger; they
answer once the projector (another process) has applied them."""

from __future__ import annotations

from typing import Any

import uvicorn

from adapters.kafka.accounting_topic import AccountingTopic

from ..app import create_app
from ..settings import Settings
from ..site_guard import RecordedRole, guard_writes
from ..stores import ledger_store
from .common import add_listen_options, add_store_options
from .distributed import build_role_runtime, run_role, schema_lock


def register(commands: Any) -> None:
    parser = commands.add_parser("api", help="distributed: the HTTP API over PostgreSQL")
    add_store_options(parser)
    add_listen_options(parser)
    parser.set_defaults(handler=lambda settings, _args: run_role("api", serve_api, settings))


def serve_api(settings: Settings, topics: Any) -> int:
    runtime = build_role_runtime(settings)
    with schema_lock(settings):
        store = ledger_store(runtime)  # creates the site tables
    # Records re-submitted by a fenced peer site go where RADIUS records go: the accounting topic.
    sink = AccountingTopic(settings.kafka_bootstrap, topics.accounting, client_id="wispgate-api-resubmission")
    runtime.__dict__["_accounting_sink"] = sink.append
    try:
        app = create_app(runtime)
        # A standby (or fenced) site refuses API writes, as `serve` does.
        guard_writes(app, RecordedRole(store, settings.site, settings.site_role))
        server = uvicorn.Server(uvicorn.Config(
            app, host=settings.api_host, port=settings.api_port,
            log_level=settings.log_level, lifespan="off", access_log=False))
        print(f"WISPGate api: http://{settings.api_host}:{settings.api_port} "
              f"(database {settings.database_url.split('@')[-1]})", flush=True)
        server.run()
        return 0 if server.started else 1
    finally:
        sink.close()
        runtime.close()
