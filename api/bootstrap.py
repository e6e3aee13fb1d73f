"""The one place that wires a configuration into running applications."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from adapters.enforcer import BATCH as ENFORCER_BATCH
from adapters.enforcer import Enforcer
from adapters.followers import Stage, project_step, rate_step
from adapters.persistence import LEDGER_CACHE, eventstore_env, read_model_engine, schema_lock
from adapters.projector_worker import ProjectorWorker
from adapters.rater_worker import RaterWorker
from adapters.site_gate import WriteGate
from ledger import AccountingLog, Ledger
from ledger.snapshots import prune_snapshots
from projections import ReadModelProjector

from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """The applications of one process and the stages it runs."""

    settings: Settings
    ledger: Ledger
    intake: AccountingLog
    engine: Engine
    projector: ReadModelProjector
    stages: list[Stage] = field(default_factory=list)
    # Closed while the site is a standby or fenced: the rater must not write ledger events.
    gate: WriteGate = field(default_factory=WriteGate)
    # Called (from the stage's thread) when a stage stops on a violated ledger invariant.
    on_fatal: Callable[[Stage], None] | None = None

    def start_stages(self, projector_process: ProjectorWorker | None = None,
                     rater_process: RaterWorker | None = None) -> None:
        """Start the stages as threads of this process; with ``projector_process`` or
        ``rater_process`` (launched already) the live projector or the rater is that child
        process instead of a thread: it is woken like the thread and paused by the gate like
        the thread; the projector child reports its positions to this process's projector
        (waiters and listeners), the rater child its commits (the ledger's followers wake)."""
        nice, gather = self.settings.stage_nice, self.settings.stage_gather_ms / 1000
        # The enforcer's step returns the positions it advanced; a full batch of its watched
        # rows (ENFORCER_BATCH) spans at least as many, so a backlog runs without pause.
        enforcer = Stage("enforcer", self.gate.writer(Enforcer(self.ledger, self.engine, self.projector).step),
                         nice=nice, gather=gather, full=ENFORCER_BATCH)
        # Superseded snapshots are most of the bytes at rest of long sessions (ledger/snapshots.py).
        housekeeping = Stage("housekeeping", self.gate.follower(lambda: 1 if prune_snapshots(self.ledger) else 0),
                             poll_interval=3600, nice=nice)
        self.stages = [enforcer, housekeeping]
        # Each stage's progress is the next stage's work: wake it rather than wait a poll.
        if rater_process is None:
            rater = Stage("rater", self.gate.writer(rate_step(self.intake, self.ledger)), nice=nice, gather=gather)
            self.stages.insert(0, rater)
            self.intake.listeners.append(rater.wakeup.set)
        else:
            self.intake.listeners.append(rater_process.wake)
            self.gate.remote_followers.append(rater_process)  # paused first: it writes
        if projector_process is None:
            projector = Stage("projector", self.gate.follower(project_step(self.ledger, self.projector)),
                              poll_interval=0.25, nice=nice, gather=gather)
            self.stages.insert(1, projector)
            self.ledger.listeners.append(projector.wakeup.set)
        else:
            self.ledger.listeners.append(projector_process.wake)
            self.gate.remote_followers.append(projector_process)
        self.projector.listeners.append(lambda _position: enforcer.wakeup.set())
        for stage in self.stages:
            stage.on_fatal = self.on_fatal
            stage.start()

    def stop_stages(self) -> None:
        for stage in self.stages:
            stage.stop()
        for stage in self.stages:
            stage.join(timeout=10)
        self.stages = []

    def close(self) -> None:
        self.stop_stages()
        self.projector.close()  # the connection its live batches hold
        self.ledger.close()
        self.intake.close()
        self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    """Applications on the configured store (SQLite under data_dir, or PostgreSQL)."""
    common = {"data_dir": settings.data_dir, "database_url": settings.database_url}
    with schema_lock(settings.database_url):  # each application creates its tables
        ledger_env = eventstore_env("ledger", **common) | LEDGER_CACHE
        ledger = Ledger(env=ledger_env)
        intake = AccountingLog(env=eventstore_env("accountinglog", **common))
        engine = read_model_engine(**common)
        projector = ReadModelProjector(engine, ledger.mapper)
        projector.create_tables()
    runtime = Runtime(settings=settings, ledger=ledger, intake=intake, engine=engine, projector=projector)
    return runtime
