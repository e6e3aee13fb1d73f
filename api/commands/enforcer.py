"""`wispgate enforcer`: the distributed mode's enforcer (CoA / Disconnect-Request when a
prepaid balance or a credit limit runs out, a fair-use cap is crossed or an account is
suspended, and lifting it again), the same `adapters.enforcer.Enforcer` that `serve` runs.

It follows the ledger in PostgreSQL up to what the projectors have applied (it reads
balances and open sessions from the read models). Several may run for availability: one
acts (PostgreSQL advisory lock), the others wait. It acts only while its site is active,
under the site's write lock, like the raters: a standby or fenced site sends no CoA."""

from __future__ import annotations

import threading
from typing import Any

from adapters.enforcer import Enforcer
from adapters.event_log import LedgerStore
from adapters.followers import Stage
from adapters.site_gate import Leadership, SiteWriteLock

from ..settings import Settings
from .common import add_store_options
from .distributed import (
    add_role_options,
    build_role_runtime,
    on_termination,
    role_settings,
    run_role,
    schema_lock,
    serve_metrics,
)

ENFORCER_LOCK = 0x7767656E  # advisory lock key ("wgen"): one acting enforcer per site


def register(commands: Any) -> None:
    parser = commands.add_parser("enforcer", help="distributed: CoA / Disconnect when balances, caps or status say so")
    add_store_options(parser)
    add_role_options(parser)
    parser.set_defaults(handler=lambda settings, args: run_role("enforcer", enforce, role_settings(settings, args)))


def enforce(settings: Settings, _topics: Any) -> int:
    runtime = build_role_runtime(settings)
    with schema_lock(settings):
        LedgerStore.open(data_dir=settings.data_dir, database_url=settings.database_url).close()  # site_state
    enforcer = Enforcer(runtime.ledger, runtime.engine, runtime.projector)
    leadership = Leadership(settings.database_url, ENFORCER_LOCK)
    site_lock = SiteWriteLock(settings.database_url)

    def step() -> int:
        if not leadership.held():
            return 0  # another enforcer acts; this one takes over if it goes away
        with site_lock.shared() as site:
            if not site.active:
                enforcer.forget()  # a standby's log may be fenced: what it cached may be set aside
                return 0
            return enforcer.step()

    stage = Stage("enforcer", step, poll_interval=0.5)
    stopped = threading.Event()

    def stop() -> None:
        stage.stop()
        stopped.set()

    on_termination(stop)
    serve_metrics(settings)
    print(f"WISPGate enforcer: ledger -> CoA/Disconnect (site {settings.site})", flush=True)
    stage.start()
    try:
        while not stopped.wait(1.0):
            if not stage.is_alive():
                break  # a ledger invariant failed in the step: exit non-zero, never continue
    finally:
        stage.stop()
        stage.join(timeout=10)
        leadership.release()
        site_lock.close()
        runtime.close()
    return 70 if stage.fatal is not None else 0
