"""The rater in its own process (`wispgate serve`, ``rater_process = "separate"``, the default).

As a thread of the serve process the rater shared one interpreter lock with the API, the
enforcer and the chainer: that process could use at most one core, and every portal read
took the lock from rating (threads of one interpreter are not separated by niceness). In a
child process the rater has an interpreter of its own. The child opens the same stores
(SQLite in WAL mode lets each process read while the other writes; PostgreSQL needs nothing)
and follows the accounting log exactly as the thread did: each batch of ledger events is
recorded with the accounting-log position it consumed in one transaction, so a child killed
at any moment resumes where its last commit left off and no record is rated twice. It is the
only writer of the aggregates it keeps in memory (sessions, open-session registries, billing
periods), as the thread was.

Parent and child talk over a socket pair (pickled tuples):
- parent -> child: the Settings and the logging setup function (first); then the state:
  ("writes", open) and ("resume",), or ("pause", n); ("wake",) when the accounting log has new
  records; ("pause", n), ("writes", open), ("resume",) around the site's maintenance.
- child -> parent: ("ready",) once; ("rated",) after each committed batch (the parent wakes
  the ledger's followers: projector, chainer); ("forgot",) when a failed batch made the child
  forget what it kept in memory (the parent's enforcer forgets too, as with the thread);
  ("paused", n); ("fatal", text) when a ledger invariant failed (the child then exits).

The site's WriteGate pauses the child while it holds the gate exclusively (a role change,
fencing: the log's tail may be set aside and the rater's position moved); the child forgets
every cached aggregate when it resumes, and writes only while the gate's writes are open (a
standby's rater writes nothing). A child that dies on its own is restarted (``max_restarts`` a
minute; beyond that the parent is told to stop), each death logged and counted in
``wispgate_rater_process_restarts_total``; it dies with the parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
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


RESTARTS = Counter("wispgate_rater_process_restarts_total", "Times serve restarted its rater process after it died")
UP = Gauge("wispgate_rater_process_up", "1 while serve's rater process runs")


class RaterWorker(PausableChild):
    """Parent side: starts, supervises, wakes, pauses and resumes the rater child.

    ``on_rated()`` is called (on the supervisor's thread) after each batch the child
    committed, ``on_forgot()`` when it forgot its cached aggregates after a failed batch;
    ``writes_open()`` says whether the site's WriteGate lets writes through (the child follows
    it)."""

    module = "adapters.rater_worker"
    title = "the rater process"
    restart_counter = RESTARTS
    up_gauge = UP

    def __init__(self, settings: Any, *, writes_open: Callable[[], bool], on_rated: Callable[[], None],
                 on_forgot: Callable[[], None], on_fatal: Callable[[str], None], on_failed: Callable[[str], None],
                 configure_logging: Callable[[str, str], None], max_restarts: int = MAX_RESTARTS) -> None:
        super().__init__(settings, on_fatal=on_fatal, on_failed=on_failed, configure_logging=configure_logging,
                         max_restarts=max_restarts)
        self.writes_open = writes_open
        self.on_rated = on_rated
        self.on_forgot = on_forgot

    def _resume_messages(self) -> list[tuple[Any, ...]]:
        return [("writes", bool(self.writes_open())), ("resume",)]

    def _message(self, message: tuple[Any, ...]) -> None:
        if message[0] == "rated":
            self.on_rated()
        elif message[0] == "forgot":
            self.on_forgot()


# ---- the child ------------------------------------------------------------------------


def _child_main(conn: Connection, sleeping: SleepFlag | None = None) -> int:
    from adapters.followers import Stage, rate_step
    from adapters.persistence import LEDGER_CACHE, eventstore_env
    from adapters.shipping import forget_cached_aggregates
    from adapters.site_gate import WriteGate
    from ledger import AccountingLog, Ledger

    settings, configure_logging = conn.recv()
    configure_logging(settings.log_level, settings.log_format)
    common = {"data_dir": settings.data_dir, "database_url": settings.database_url}
    ledger = Ledger(env=eventstore_env("ledger", **common) | LEDGER_CACHE)
    intake = AccountingLog(env=eventstore_env("accountinglog", **common))
    send = messenger(conn)
    forgetting = threading.local()

    def forgot() -> None:
        if not getattr(forgetting, "asked", False):  # the parent's own request needs no answer
            send(("forgot",))

    def resume() -> None:
        # The site's maintenance may have set the log's tail aside or replicated events in:
        # nothing cached survives a pause.
        forgetting.asked = True
        try:
            forget_cached_aggregates(ledger)
        finally:
            forgetting.asked = False

    ledger.listeners.append(lambda: send(("rated",)))
    ledger.forget_listeners.append(forgot)
    gate = WriteGate()
    stage = Stage("rater", gate.writer(rate_step(intake, ledger)), nice=settings.stage_nice,
                  gather=settings.stage_gather_ms / 1000, sleeping=sleeping)

    def on_message(message: tuple[Any, ...]) -> None:
        if message[0] == "writes":
            gate.writes_open = bool(message[1])

    stage.on_fatal = exit_on_fatal(send)
    gc.collect()
    gc.freeze()  # start-up objects live as long as the child: keep full collections short
    try:
        follow_parent(conn, stage, gate, send, on_resume=resume, on_message=on_message)
    finally:
        stage.stop()
        stage.join(10)
        ledger.close()
        intake.close()
    return 0


def main(argv: list[str]) -> int:
    """Child entry point: ``python -m adapters.rater_worker FD PARENT_PID [SLEEP_FLAG_FD]``."""
    return child_main(argv, lambda conn: _child_main(conn, SleepFlag.inherited(argv)))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
