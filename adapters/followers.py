"""In-process stages of the embedded mode: each follows the notification log of the stage
before it and records its position atomically with its writes, so a crash anywhere resumes
exactly. Stages wake each other up, and poll as well (another process may write too, e.g.
`wispgate token create`)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from eventsourcing.persistence import Notification, Tracking

from adapters.child_process import SleepFlag, name_os_thread
from domain.accounting import AccountingRecord
from ledger import AccountingLog, Ledger
from projections import ReadModelProjector

log = logging.getLogger(__name__)

BATCH = 1000


class Stage(threading.Thread):
    """Runs ``step`` (returns how many items it handled) until stopped."""

    def __init__(self, name: str, step: Callable[[], int], poll_interval: float = 0.5, nice: int = 0,
                 gather: float = 0.0, full: int = BATCH, sleeping: SleepFlag | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.step = step
        self.poll_interval = poll_interval
        self.nice = nice
        # After a step that found less than a full batch (``full`` items), the next one starts
        # no sooner than ``gather`` seconds after it: woken by every upstream commit, a stage
        # would otherwise handle a few items per transaction, and a batch's fixed cost (its
        # queries and commit) would dominate under a steady load. It costs each item at most
        # that much delay; a backlog (full batches) is worked off without pause.
        self.gather = gather
        self.full = full
        # Up while this stage may sleep, so whoever wakes it need not otherwise (a stage child's
        # parent: adapters/child_process.SleepFlag). Raised before the last look that precedes
        # a sleep, lowered once a step finds work.
        self.sleeping = sleeping
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.failures = 0
        self.fatal: BaseException | None = None
        self.on_fatal: Callable[[Stage], None] | None = None

    def run(self) -> None:
        name_os_thread(f"wg-{self.name}")
        if self.nice:
            # Linux schedules threads: PRIO_PROCESS with the thread's id lowers this thread
            # only (never the API's or the process's other threads). Raising niceness needs
            # no privilege.
            thread = threading.get_native_id()
            try:
                os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + self.nice))
            except OSError as refused:
                log.warning("stage %s keeps its priority: %s", self.name, refused)
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                handled = self.step()
                self.failures = 0
            except AssertionError as broken:
                # A ledger invariant failed (e.g. postings that do not sum to zero): a bug,
                # not a passing fault. Stop rather than continue, and say so loudly.
                log.critical("stage %s stopped: invariant violated: %s", self.name, broken, exc_info=True)
                self.fatal = broken
                self.stopping.set()
                if self.on_fatal is not None:
                    self.on_fatal(self)
                return
            except Exception:
                # The store may be briefly unavailable; nothing was committed, so retrying
                # the same batch is safe. Back off so a persistent fault does not spin.
                self.failures += 1
                log.exception("stage %s failed (attempt %d); retrying", self.name, self.failures)
                self.stopping.wait(min(5.0, 0.1 * 2**self.failures))
                continue
            sleeping = self.sleeping
            if handled == 0:
                if sleeping is not None and not sleeping.is_set():
                    sleeping.set()
                    continue  # one more look: what came before the flag was up is seen by it
                woken = self.wakeup.wait(self.poll_interval)
                self.wakeup.clear()
                if woken and sleeping is not None:
                    sleeping.clear()  # work is waiting: no wake-up is needed before the next look
                continue
            if sleeping is not None and sleeping.is_set():
                sleeping.clear()
            if self.gather and handled < self.full:
                self.stopping.wait(self.gather - (time.monotonic() - started))

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()


def rate_step(intake: AccountingLog, ledger: Ledger, upstream: str = "AccountingLog") -> Callable[[], int]:
    """Apply the next batch of the accounting log to the ledger."""

    def step() -> int:
        position = ledger.tracked_position(upstream)
        notifications = intake.recorder.select_notifications(start=position + 1, limit=BATCH)
        if not notifications:
            return 0
        records = accounting_records(intake, notifications)
        ledger.apply_records(records, Tracking(upstream, notifications[-1].id))
        return len(records)

    return step


def accounting_records(intake: AccountingLog, notifications: Sequence[Notification]) -> list[AccountingRecord]:
    """The records of the accounting log's notifications. Each stored event's ``record`` is
    read straight from its JSON with orjson: it holds only JSON-native values, so this gives
    what decoding the whole event through the mapper gives, at a third of the cost (that was
    ~10 % of rating). A state it cannot read that way (an encoded or compressed log, a value
    the mapper would transcode, an integer orjson refuses) goes through the mapper."""
    mapper = intake.mapper
    if mapper.compressor is not None or mapper.cipher is not None:
        return [AccountingRecord.from_dict(_mapped_record(mapper, n)) for n in notifications]
    records = []
    for notification in notifications:
        data = _plain_record(notification.state)
        if data is None:
            data = _mapped_record(mapper, notification)
        records.append(AccountingRecord.from_dict(data))
    return records


def _mapped_record(mapper: Any, notification: Notification) -> dict[str, Any]:
    """A record decoded through the mapper (every AccountingLog event carries ``record``)."""
    record: dict[str, Any] = mapper.to_domain_event(notification).record
    return record


def _plain_record(state: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(state)["record"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if type(data) is not dict or "_type_" in data:
        return None
    extra = data.get("extra")
    if extra is not None and (type(extra) is not dict or "_type_" in extra
                              or any(type(v) in (dict, list) for v in extra.values())):
        return None  # only flat, plain attributes are certain to decode the same
    return data


def project_step(ledger: Ledger, projector: ReadModelProjector) -> Callable[[], int]:
    """Apply the next batch of the ledger's notification log to the read models."""

    def step() -> int:
        return projector.follow(ledger.recorder, BATCH)

    return step


def drain(*steps: Callable[[], int], timeout: float = 30.0) -> None:
    """Run steps until none has work left (tests, CLI commands, audit replay)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(step() for step in steps) == 0:
            return
    raise TimeoutError("stages did not drain in time")
