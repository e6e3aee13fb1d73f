"""The live projector in its own process (`wispgate serve`, ``projector_process = "separate"``).

Rating and projecting each take a few hundred microseconds of CPU per record; as threads of
one interpreter they share one core, so the pipeline ran at 1 / (rating + projection). In a
child process the projector has a core of its own. The child opens the same stores (SQLite
in WAL mode lets each process read while the other writes; PostgreSQL needs nothing) and
follows the ledger's notification log exactly as the in-process stage does: its position is
stored with the read models in one transaction, so a child killed at any moment resumes
where its last commit left off, and nothing is projected twice.

Parent and child talk over a socket pair (pickled tuples):
- parent -> child: the Settings and the logging setup function (first), then ("pause", n) or
  ("resume",) as the current state, ("wake",) when the ledger has new events, ("pause", n),
  ("resume",).
- child -> parent: ("ready",) once, ("position", p) after each committed batch (the parent
  wakes its read-your-writes waiters and the projector's listeners with it), ("paused", n)
  once the step in progress has finished and no other will start until ("resume",),
  ("fatal", text) when a read-model invariant failed (the child then exits: never continue).

Site maintenance (fencing rewrites the log's tail and empties the read models) holds the
site's WriteGate exclusively; the gate pauses the child through ``pause``/``resume`` so no
projector step runs meanwhile. A child that does not acknowledge in time is killed (its
uncommitted batch is rolled back) and restarted paused.

A child that dies on its own is restarted (``max_restarts`` a minute, beyond that the parent is
told to stop); each death is logged and counted in ``wispgate_projector_process_restarts_total``.
The child dies with the parent (PR_SET_PDEATHSIG) and exits on end-of-file of the socket.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import Counter, Gauge

from adapters.child_process import (
    MAX_RESTARTS,
    PausableChild,
    SleepFlag,
    child_main,
    exit_on_fatal,
    follow_parent,
    messenger,
)

log = logging.getLogger(__name__)


# The cyclic collector's youngest generation is collected once this many more containers were
# made than freed (CPython's default is 700). A batch's decoded events, log entries and rows
# die with the batch, so at 700 the collector ran a few times a batch, traversing them and
# promoting them to the next generation while still alive: ~6 % of the child's CPU
# (gc.callbacks around bench.projector_cpu). At this threshold it runs when long-lived
# objects (kept rows) or cyclic garbage have grown by this many, a few MB at most.
COLLECT_AFTER = 50_000


def settle_collector() -> None:
    """What the child does to the cyclic collector once started: collect, freeze what exists
    (start-up objects live as long as the child: keep full collections short) and collect the
    youngest generation every ``COLLECT_AFTER`` containers, not every 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(COLLECT_AFTER, *gc.get_threshold()[1:])


RESTARTS = Counter("wispgate_projector_process_restarts_total",
                   "Times serve restarted its projector process after it died")
UP = Gauge("wispgate_projector_process_up", "1 while serve's projector process runs")


class ProjectorWorker(PausableChild):
    """Parent side: starts, supervises, wakes, pauses and resumes the projector child.

    ``on_position(p)`` is called (on the supervisor's thread) for each position the child
    committed; ``on_fatal(text)`` when the child stopped on a violated invariant;
    ``on_failed(text)`` when it died too often to be worth restarting."""

    module = "adapters.projector_worker"
    title = "the projector process"
    restart_counter = RESTARTS
    up_gauge = UP

    def __init__(self, settings: Any, *, on_position: Callable[[int], None], on_fatal: Callable[[str], None],
                 on_failed: Callable[[str], None], configure_logging: Callable[[str, str], None],
                 max_restarts: int = MAX_RESTARTS) -> None:
        super().__init__(settings, on_fatal=on_fatal, on_failed=on_failed, configure_logging=configure_logging,
                         max_restarts=max_restarts)
        self.on_position = on_position

    def _message(self, message: tuple[Any, ...]) -> None:
        if message[0] == "position":
            self.on_position(int(message[1]))



# ---- the child ------------------------------------------------------------------------


def _child_main(conn: Connection, sleeping: SleepFlag | None = None) -> int:
    from adapters.followers import Stage, project_step
    from adapters.persistence import eventstore_env, read_model_engine
    from adapters.site_gate import WriteGate
    from ledger import Ledger
    from projections import ReadModelProjector

    settings, configure_logging = conn.recv()
    configure_logging(settings.log_level, settings.log_format)
    common = {"data_dir": settings.data_dir, "database_url": settings.database_url}
    ledger = Ledger(env=eventstore_env("ledger", **common))
    engine = read_model_engine(**common)
    projector = ReadModelProjector(engine, ledger.mapper)
    send = messenger(conn)

    projector.listeners.append(lambda position: send(("position", position)))
    gate = WriteGate()
    stage = Stage("projector", gate.follower(project_step(ledger, projector)), poll_interval=0.25,
                  nice=settings.stage_nice, gather=settings.stage_gather_ms / 1000, sleeping=sleeping)
    stage.on_fatal = exit_on_fatal(send)
    settle_collector()
    try:
        follow_parent(conn, stage, gate, send)
    finally:
        stage.stop()
        stage.join(10)
        projector.close()
        ledger.close()
        engine.dispose()
    return 0


def main(argv: list[str]) -> int:
    """Child entry point: ``python -m adapters.projector_worker FD PARENT_PID [SLEEP_FLAG_FD]``."""
    return child_main(argv, lambda conn: _child_main(conn, SleepFlag.inherited(argv)))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
