"""Running a billing cycle and the dunning step against a runtime: the read models find the
accounts and the display figures, the ledger decides and records everything else."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import Engine, event

from adapters.billing_drafts import drafted_ahead
from domain.plans import version_in_force
from ledger import cores
from ledger.billing import RunResult
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


@contextmanager
def _read_models_mapped(engine: Engine) -> Iterator[None]:
    """While a run projects its invoices: SQLite read-model connections read through a memory
    map (``ledger.bulk.SQLITE_MMAP``), set as each is checked out."""
    if engine.dialect.name != "sqlite":
        yield
        return

    def mapped(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.execute(SQLITE_MMAP)

    event.listen(engine, "checkout", mapped)
    try:
        yield
    finally:
        event.remove(engine, "checkout", mapped)


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
    settings, ledger, engine = runtime.settings, runtime.ledger, runtime.engine
    catch_up(runtime)
    accounts = finance.account_ids(engine)
    known = frozenset(finance.invoiced_accounts(engine, period))
    carried = finance.carried_forward(engine, period, at)
    result = RunResult(period)
    # In process, each batch's invoices are projected from memory as it is committed (the
    # read models' same handlers, no read-back nor decoding); a batch that does not follow
    # the projected position (something else was recorded meanwhile) is left to the final
    # catch-up, as is everything when the projector runs elsewhere.
    recorded = None if runtime.stages else runtime.projector.project_recorded
    batches = [[UUID(a) for a in accounts[offset:offset + batch_size]]
               for offset in range(0, len(accounts), batch_size)]
    if draft_process is None:  # a re-run finds most accounts invoiced: nothing to draft
        draft_process = (sum(1 for a in accounts if a not in known) >= DRAFT_PROCESS_FROM
                         and cores.second_core_free())
    if draft_process:
        billed = 0
        for drafted in drafted_ahead(settings, period, batches, at=at, carried=carried, known=known):
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
    catch_up(runtime)
    return result


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
