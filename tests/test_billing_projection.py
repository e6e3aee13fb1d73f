"""A billing run projects the invoices it has just issued from memory (the projector's
``project_recorded``), batch by batch; the read models must then hold exactly what projecting
the same log through ``process`` gives, on SQLite and PostgreSQL, on seeded random histories:
accounts billed over several months in small batches, payments waiting as credit before their
invoice, payments and credit notes between runs, late usage. When something else is recorded
between two batches the run falls back to catching up, with the same result. Set
WISPGATE_TEST_SEED to replay one history."""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.billing_drafts import drafted_ahead
from adapters.billing_runs import run_billing
from api.bootstrap import Runtime
from ledger.invoice import Invoice, invoice_id

from .test_billing_bulk import MONTHS, _History


class _ProjectedHistory(_History):
    """``_History`` whose usage the read models can project: a session's incarnation is its
    start time, as the rater names it (the projections read it as one)."""

    def incarnation(self, when: int) -> str:
        return str(when)


def _processed_rows(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """The read models as ``process`` builds them from the whole log (then left that way)."""
    projector = runtime.projector
    projector.reset()
    projector.rebuild(runtime.ledger.recorder, fast=False)
    return projector.table_rows()


def _pay(runtime: Runtime, rng: random.Random, history: _ProjectedHistory, at: int) -> None:
    account_id = rng.choice(list(history.accounts))
    amount = Decimal(rng.randrange(100, 6_000)) / 100
    runtime.ledger.record_payment(idempotency_key=f"p{rng.random()}", account_id=account_id, amount=amount,
                                  currency="USD", method="cash", reference="r", received_at=at)


def _credit(runtime: Runtime, rng: random.Random, history: _ProjectedHistory, label: str, at: int) -> None:
    account_id = rng.choice(list(history.accounts))
    invoice = runtime.ledger._maybe_get(Invoice, invoice_id(account_id, label))
    if invoice is None or invoice.status != "issued" or invoice.creditable() < Decimal("0.02"):
        return
    amount = None if rng.random() < 0.3 else Decimal("0.01")
    runtime.ledger.issue_credit_note(invoice.id, amount=amount, reason="goodwill", at=at, site="t",
                                     key=f"c{rng.random()}")


def _history_billed(runtime: Runtime, seed: int, interleave: bool, draft_process: bool = False) -> list[bool]:
    """Bill a random history month by month; after each run, the read models must equal the
    ``process`` path's. Returns what each ``project_recorded`` call answered. ``interleave``:
    a payment is recorded between batches (so the next batch does not follow the projected
    position)."""
    rng = random.Random(seed)
    history = _ProjectedHistory(runtime, rng, accounts=15)
    ids = list(history.accounts)
    for account_id in ids:
        for label in rng.sample(MONTHS[:4], rng.randrange(0, 4)):
            history.use(account_id, label)
    projector, answers = runtime.projector, []
    project = projector.project_recorded

    def spy(recorded: list[tuple[int, Any]]) -> bool:
        answers.append(project(recorded))
        return answers[-1]

    projector.project_recorded = spy  # type: ignore[method-assign]
    if interleave:  # a payment recorded as each batch is committed, before the next one is
        bill = runtime.ledger.bill_accounts

        def paying(*args: Any, **kwargs: Any) -> Any:
            billed = bill(*args, **kwargs)
            _pay(runtime, rng, history, at)
            return billed

        runtime.ledger.bill_accounts = paying  # type: ignore[method-assign]
    for label in MONTHS[2:5]:
        at = history.billable_at(label)
        for _ in range(rng.randrange(0, 4)):  # credit waiting before the invoice, or paying older ones
            _pay(runtime, rng, history, at - 3_600)
        result = run_billing(runtime, label, at=at, batch_size=rng.randrange(2, 7), draft_process=draft_process)
        assert result.issued, f"seed {seed}: nothing billed for {label}"
        live = projector.table_rows()
        assert live == _processed_rows(runtime), f"seed {seed}, {label}: projected from memory != process"
        for _ in range(rng.randrange(1, 4)):
            _credit(runtime, rng, history, label, at + 3_600)
        for account_id in rng.sample(ids, 3):  # late usage for the next run
            history.use(account_id, rng.choice(MONTHS[1:5]))
    return answers


@pytest.mark.parametrize("draft_process", [False, True], ids=["drafted here", "drafted by a second process"])
def test_a_run_projects_its_invoices_as_process_does(runtime: Runtime, draft_process: bool) -> None:
    seed = int(os.environ.get("WISPGATE_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed}")
    answers = _history_billed(runtime, seed, interleave=False, draft_process=draft_process)
    assert answers and all(answers), f"seed {seed}: a batch was not projected from memory: {answers}"


def test_a_run_with_writes_between_batches_catches_up_to_the_same_rows(runtime: Runtime) -> None:
    seed = int(os.environ.get("WISPGATE_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed}")
    answers = _history_billed(runtime, seed, interleave=True)
    assert not all(answers), f"seed {seed}: no batch fell back"


def test_project_recorded_refuses_events_that_do_not_follow_the_position(runtime: Runtime) -> None:
    projector = runtime.projector
    before = projector.position()
    assert projector.project_recorded([(before + 2, object())]) is False  # a gap after the position
    assert projector.project_recorded([(before + 1, object()), (before + 3, object())]) is False
    assert projector.position() == before


def test_a_second_process_drafts_what_this_one_drafts(runtime: Runtime) -> None:
    """The drafting process's batches (adapters/billing_drafts.py) equal ``draft_batch`` here:
    the same accounts counted the same way and the same drafts (lines, totals, late usage,
    recorded versions), with some accounts already invoiced and some known to be."""
    seed = int(os.environ.get("WISPGATE_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed}")
    rng = random.Random(seed)
    history = _ProjectedHistory(runtime, rng, accounts=12)
    ids = list(history.accounts)
    for account_id in ids:
        for label in rng.sample(MONTHS[:4], rng.randrange(0, 4)):
            history.use(account_id, label)
    label = MONTHS[2]
    at = history.billable_at(label)
    runtime.ledger.bill_accounts(label, rng.sample(ids, 4), at=at - 86_400 * rng.randrange(0, 2), site="t")
    for account_id in rng.sample(ids, 3):
        history.use(account_id, MONTHS[1])
    label = MONTHS[3]
    at = history.billable_at(label)
    runtime.ledger.bill_accounts(label, rng.sample(ids, 3), at=at, site="t")
    carried = {str(a): {"previous_balance": str(rng.randrange(100)), "payments": "1.5"} for a in ids[::2]}
    known = frozenset(str(a) for a in rng.sample(ids, 2))
    batches = [ids[n:n + 5] for n in range(0, len(ids), 5)]
    here = [runtime.ledger.draft_batch(label, batch, at=at, carried=carried, known_invoiced=frozenset(
        str(a) for a in batch) & known) for batch in batches]
    there = list(drafted_ahead(runtime.settings, label, batches, at=at, carried=carried, known=known))
    assert there == here, f"seed {seed}"
    assert sum(len(b.drafts) for b in here) > 0, f"seed {seed}: nothing drafted"
    # Each draft carries its invoice's id (the recording process does not derive it again).
    assert all(d.invoice == invoice_id(d.drafted["account_id"], label) for b in here for d in b.drafts), \
        f"seed {seed}"


def test_batches_drafted_here_while_the_drafting_process_is_busy_are_the_same_drafts(runtime: Runtime) -> None:
    """With ``draft_here``, a batch whose draft is not back yet is drafted in this process
    (out of order): every batch still comes out exactly once, as ``draft_batch`` drafts it."""
    seed = int(os.environ.get("WISPGATE_TEST_SEED") or random.randrange(2**32))
    print(f"seed {seed}")
    rng = random.Random(seed)
    history = _ProjectedHistory(runtime, rng, accounts=12)
    ids = list(history.accounts)
    for account_id in ids:
        history.use(account_id, rng.choice(MONTHS[2:4]))
    label = MONTHS[3]
    at = history.billable_at(label)
    known = frozenset(str(a) for a in rng.sample(ids, 2))
    batches = [ids[n:n + 2] for n in range(0, len(ids), 2)]
    here: list[list[uuid.UUID]] = []

    def draft_here(batch: list[uuid.UUID], known_here: frozenset[str]) -> Any:
        here.append(batch)
        return runtime.ledger.draft_batch(label, batch, at=at, carried={}, known_invoiced=known_here)

    came = list(drafted_ahead(runtime.settings, label, batches, at=at, carried={}, known=known, draft_here=draft_here))
    assert here, f"seed {seed}: nothing drafted here (the drafting process starts in far more than a poll)"
    expected = {tuple(b): runtime.ledger.draft_batch(label, b, at=at, carried={}, known_invoiced=frozenset(
        str(a) for a in b) & known) for b in batches}
    assert sorted(map(tuple, (c.account_ids for c in came))) == sorted(expected), f"seed {seed}"
    assert all(c == expected[tuple(c.account_ids)] for c in came), f"seed {seed}"


def test_drafted_batches_wait_in_files_while_this_process_reads_none(
        runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The drafting process hands each batch over in a file of a scratch directory, not through
    the socket (whose buffer a large batch fills, blocking it until this process reads): the
    batches in flight are drafted while this process takes none; each file is removed once
    taken, the directory when the run ends; the batches are ``draft_batch``'s."""
    scratches = tmp_path / "scratch"
    scratches.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratches))
    rng = random.Random(11)
    history = _ProjectedHistory(runtime, rng, accounts=10)
    ids = list(history.accounts)
    for account_id in ids:
        history.use(account_id, MONTHS[2])
    label = MONTHS[2]
    at = history.billable_at(label)
    batches = [ids[n:n + 2] for n in range(0, len(ids), 2)]
    drafted = drafted_ahead(runtime.settings, label, batches, at=at, carried={}, known=frozenset(), ahead=3)
    came = [next(drafted)]
    [scratch] = scratches.iterdir()
    waiting: list[Path] = []
    for _ in range(1200):  # the two other batches in flight, drafted while none is read
        waiting = sorted(scratch.iterdir())
        if len(waiting) == 2:
            break
        time.sleep(0.1)
    assert len(waiting) == 2, waiting
    came += list(drafted)
    assert not scratch.exists()
    assert came == [runtime.ledger.draft_batch(label, b, at=at, carried={}) for b in batches]
    assert sum(len(c.drafts) for c in came) == len(ids)


def test_the_batch_files_go_to_a_memory_file_system_unless_a_temporary_directory_is_chosen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the hand-off's scratch directory is made: MEMORY_SCRATCH (/dev/shm) when it is
    there with room and no temporary directory is chosen; else the temporary directory."""
    from adapters import billing_drafts

    memory = tmp_path / "shm"
    memory.mkdir()
    monkeypatch.setattr(billing_drafts, "MEMORY_SCRATCH", str(memory))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.delenv("TMPDIR", raising=False)
    assert billing_drafts._scratch_root() == str(memory)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert billing_drafts._scratch_root() is None
    monkeypatch.delenv("TMPDIR")
    monkeypatch.setattr(billing_drafts, "MEMORY_SCRATCH_FREE", 2**62)  # no room
    assert billing_drafts._scratch_root() is None
    monkeypatch.setattr(billing_drafts, "MEMORY_SCRATCH", str(tmp_path / "absent"))
    monkeypatch.setattr(billing_drafts, "MEMORY_SCRATCH_FREE", 0)
    assert billing_drafts._scratch_root() is None


def test_a_drafted_batch_another_run_issued_meanwhile_is_not_issued_twice(runtime: Runtime) -> None:
    """A batch drafted (by the drafting process) before a concurrent run issued some of its
    invoices: issuing it conflicts, it is billed again the usual way, and every account ends
    with one invoice, numbered without gaps."""
    rng = random.Random(7)
    history = _ProjectedHistory(runtime, rng, accounts=6)
    ids = list(history.accounts)
    for account_id in ids:
        history.use(account_id, MONTHS[2])
    label = MONTHS[2]
    at = history.billable_at(label)
    drafted = runtime.ledger.draft_batch(label, ids, at=at, carried={})
    concurrent = runtime.ledger.bill_accounts(label, ids[:2], at=at, site="t")
    result = runtime.ledger.issue_drafted(drafted, at=at, site="t")
    assert result.retries == 1 and result.existing == 2
    numbers = sorted(concurrent.issued + result.issued)
    assert numbers == [f"INV-t-{numbers[0][6:10]}-{n:06d}" for n in range(1, len(ids) + 1)]
    assert all(runtime.ledger._maybe_get(Invoice, invoice_id(a, label)) is not None for a in ids)
