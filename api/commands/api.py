"""`wispgate api`: the HTTP API of the distributed mode, over the PostgreSQL read models and
ledger. Stateless: run several behind a load balancer. Admin writes go to the ledger; they
answer once the projector (another process) has applied them."""

from __future__ import annotations

from typing import Any

import uvicorn

from ..app import create_app
from ..settings import Settings
from .common import add_listen_options, add_store_options
from .distributed import build_role_runtime, run_role


def register(commands: Any) -> None:
    parser = commands.add_parser("api", help="distributed: the HTTP API over PostgreSQL")
    add_store_options(parser)
    add_listen_options(parser)
    parser.set_defaults(handler=lambda settings, _args: run_role("api", serve_api, settings))


def serve_api(settings: Settings, _topics: Any) -> int:
    runtime = build_role_runtime(settings)
    try:
        server = uvicorn.Server(uvicorn.Config(
            create_app(runtime), host=settings.api_host, port=settings.api_port,
            log_level=settings.log_level, lifespan="off", access_log=False))
        print(f"WISPGate api: http://{settings.api_host}:{settings.api_port} "
              f"(database {settings.database_url.split('@')[-1]})", flush=True)
        server.run()
        return 0 if server.started else 1
    finally:
        runtime.close()
