"""Running a billing cycle and the dunning step against a runtime: the read models find the
accounts and the display figures, the ledger decides and records everything else."""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import Engine, event

from adapters.billing_drafts import drafted_ahead
from domain.plans import version_in_force
from ledger import cores
from ledger.billing import DraftedBatch, RunResult
from ledger.bulk import SQLITE_MMAP
from projections import finance

if TYPE_CHECKING:
    from api.bootstrap import Runtime

Progress = Callable[[int, int], None]


def catch_up(runtime: Runtime) -> None:
    """Make the read models include everything recorded so far."""
    ledger, projector = runtime.ledger, runtime.projector
    if runtime.stages:
        projector.wait_for(ledger.recorder.max_notification_id() or 0, timeout=60)
    else:
        # In process: project up to what is recorded now, however long a large run takes
        # (a fixed deadline made 100k-account runs fail on a busy machine).
        # Windows of many events per transaction (the rebuild path) rather than the live
        # stage's batches of 1,000: same read models, far fewer transactions for a large run.
        projector.rebuild(ledger.recorder, upto=ledger.recorder.max_notification_id() or 0)


# From this many accounts a run drafts its batches in a second process (adapters/billing_drafts.py):
# starting it costs about a second, which a smaller run would not win back.
DRAFT_PROCESS_FROM = 5000


class _Mapping:
    """Whether an engine's SQLite connections are mapped into memory as they are checked out:
    while at least one run is in progress. The listener is installed once per engine and
    never removed: adding or removing SQLAlchemy listeners while another thread checks a
    connection out breaks that checkout ("deque mutated during iteration"), and runs may
    overlap while the API reads."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if self.runs:
            dbapi_connection.execute(SQLITE_MMAP)


_mappings: weakref.WeakKeyDictionary[Engine, _Mapping] = weakref.WeakKeyDictionary()
_mappings_lock = threading.Lock()


@contextmanager
def _read_models_mapped(engine: Engine) -> Iterator[None]:
    """While a run projects its invoices: SQLite read-model connections read through a memory
    map (``ledger.bulk.SQLITE_MMAP``), set as each is checked out."""
    if engine.dialect.name != "sqlite":
        yield
        return
    with _mappings_lock:
        mapping = _mappings.get(engine)
        if mapping is None:
            mapping = _mappings[engine] = _Mapping()
            event.listen(engine, "checkout", mapping)
        mapping.runs += 1
    try:
        yield
    finally:
        with _mappings_lock:
            mapping.runs -= 1


class _ProjectingThread:
    """Projects each committed batch (``project_recorded``) in a thread of its own, in the
    order committed, while the run records the next batch: the two commits (read models,
    ledger), and SQLite's own work, which runs without the interpreter lock, overlap
    instead of following each other. An error is raised in the run at its next batch or
    at ``close``.

    Consecutive batches are projected together, up to ``MERGED_EVENTS`` events in one
    transaction: on a large store each batch's new rows land on as many pages of the read
    models' indexes as it has rows, so fewer, larger transactions write fewer pages."""

    MERGED_EVENTS = 10_000  # about 5 batches of 1,000 invoices

    def __init__(self, project: Callable[[Sequence[tuple[int, Any]]], bool]) -> None:
        self.project = project
        self.batches: queue.Queue[list[tuple[int, Any]] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="billing-projection", daemon=True)
        self.thread.start()

    def __call__(self, recorded: list[tuple[int, Any]]) -> None:
        self._raise()
        self.batches.put(recorded)

    def _run(self) -> None:
        pending: list[tuple[int, Any]] = []
        while (recorded := self.batches.get()) is not None:
            if pending and recorded and recorded[0][0] != pending[-1][0] + 1:
                self._project(pending)  # something else was recorded in between: not one transaction
                pending = []
            pending += recorded
            if len(pending) >= self.MERGED_EVENTS:
                self._project(pending)
                pending = []
        self._project(pending)

    def _project(self, recorded: list[tuple[int, Any]]) -> None:
        if recorded and self.error is None:  # after an error the rest is left to the final catch-up
            try:
                self.project(recorded)
            except BaseException as error:  # noqa: BLE001 - raised in the run's thread
                self.error = error

    def close(self, *, raise_error: bool = True) -> None:
        """Wait until every batch given is projected; raise the error one met."""
        self.batches.put(None)
        self.thread.join()
        if raise_error:
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def run_billing(runtime: Runtime, period: str, *, at: int, batch_size: int = 1000,
                progress: Progress | None = None, draft_process: bool | None = None) -> RunResult:
    """Bill every account for ``period`` (YYYY-MM) as of ``at``; safe to re-run.
    ``draft_process``: draft the batches in a second process (None: from
    ``DRAFT_PROCESS_FROM`` accounts not known to be invoiced yet, when a second core is free)."""
    with _read_models_mapped(runtime.engine):
        return _run_billing(runtime, period, at=at, batch_size=batch_size, progress=progress,
                            draft_process=draft_process)


def _run_billing(runtime: Runtime, period: str, *, at: int, batch_size: int, progress: Progress | None,
                 draft_process: bool | None) -> RunResult:
    engine = runtime.engine
    catch_up(runtime)
    accounts = finance.account_ids(engine)
    known = frozenset(finance.invoiced_accounts(engine, period))
    carried = finance.carried_forward(engine, period, at)
    result = RunResult(period)
    # In process, each batch's invoices are projected from memory as it is committed (the
    # read models' same handlers, no read-back nor decoding); a batch that does not follow
    # the projected position (something else was recorded meanwhile) is left to the final
    # catch-up, as is everything when the projector runs elsewhere.
    projecting = None if runtime.stages else _ProjectingThread(runtime.projector.project_recorded)
    try:
        _bill(runtime, period, accounts, known, carried, result, at=at, batch_size=batch_size, progress=progress,
              draft_process=draft_process, recorded=projecting)
    except BaseException:
        if projecting is not None:
            projecting.close(raise_error=False)  # this error is the one to raise
        raise
    if projecting is not None:
        projecting.close()
    catch_up(runtime)
    return result


def _bill(runtime: Runtime, period: str, accounts: list[str], known: frozenset[str],
          carried: Mapping[str, Mapping[str, str]], result: RunResult, *, at: int, batch_size: int,
          progress: Progress | None, draft_process: bool | None, recorded: Any) -> None:
    """Bill ``accounts`` batch by batch into ``result``."""
    settings, ledger = runtime.settings, runtime.ledger
    batches = [[UUID(a) for a in accounts[offset:offset + batch_size]]
               for offset in range(0, len(accounts), batch_size)]
    if draft_process is None:  # a re-run finds most accounts invoiced: nothing to draft
        draft_process = (sum(1 for a in accounts if a not in known) >= DRAFT_PROCESS_FROM
                         and cores.second_core_free())
    if draft_process:
        billed = 0
        def draft_here(batch: list[UUID], known_here: frozenset[str]) -> DraftedBatch:
            return ledger.draft_batch(period, batch, at=at, carried=carried, known_invoiced=known_here)

        for drafted in drafted_ahead(settings, period, batches, at=at, carried=carried, known=known,
                                     draft_here=draft_here):
            result.add(ledger.issue_drafted(drafted, at=at, site=settings.site, net_days=settings.invoice_net_days,
                                            carried=carried, recorded=recorded))
            billed += len(drafted.account_ids)
            if progress is not None:
                progress(billed, len(accounts))
    else:
        for number, batch in enumerate(batches, 1):
            result.add(ledger.bill_accounts(period, batch, at=at, site=settings.site,
                                            net_days=settings.invoice_net_days, carried=carried,
                                            known_invoiced=known, recorded=recorded))
            if progress is not None:
                progress(min(number * batch_size, len(accounts)), len(accounts))


def run_dunning(runtime: Runtime, *, at: int) -> list[dict[str, object]]:
    """Suspend accounts whose plan's ``dunning_days`` an open invoice has exceeded. Returns
    what was suspended. The enforcement stage acts on the recorded suspension."""
    ledger, engine = runtime.ledger, runtime.engine
    catch_up(runtime)
    suspended = []
    seen: set[str] = set()
    for row in finance.overdue_accounts(engine, at):
        account_id = str(row["account_id"])
        if account_id in seen:
            continue
        account = ledger.get_account(UUID(account_id))
        if account.status != "active":
            continue
        terms = version_in_force(ledger.get_plan(account.plan_at(at)).plan_versions(), at).terms
        if terms.dunning_days and row["days_overdue"] >= terms.dunning_days:
            seen.add(account_id)
            ledger.set_account_status(account.id, status="suspended", at=at,
                                      reason=f"invoice {row['number']} overdue {row['days_overdue']} days")
            suspended.append({"account_id": account_id, "invoice": row["number"], "days_overdue": row["days_overdue"]})
    catch_up(runtime)
    return suspended
