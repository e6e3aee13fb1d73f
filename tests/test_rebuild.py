"""The fast paths of the projector give exactly what following the log live gives: a rebuild
in large windows (one transaction each) reproduces, row by row, every read-model table
projected live in small batches, on seeded random traffic (sessions, billing, payments before
and after invoices, partial and excess payments, credit notes); and the projector's event
decoder reads every handled event exactly as eventsourcing's mapper does."""

from __future__ import annotations

import contextlib
import io
import random
import time
from datetime import datetime
from decimal import Context, Decimal, localcontext
from typing import Any
from uuid import UUID

from adapters.billing_runs import run_billing
from adapters.followers import drain, rate_step
from api.bootstrap import Runtime
from api.cli import main
from domain.plans import PlanTerms
from ledger import cores
from projections import finance
from projections.base import fmt
from projections.decoding import event_decoder
from projections.fold import _CANONICAL
from projections.rebuild import FastRebuild, fold_covers_models

from .support import record

T0 = 1_793_491_200  # 2026-11-01T00:00:00Z
MONTH_END = 1_796_083_200  # 2026-12-01T00:00:00Z
GB = 10**9


def project_live(runtime: Runtime, rng: random.Random) -> None:
    """Rate what was ingested, then project it the way a follower does, in small batches."""
    drain(rate_step(runtime.intake, runtime.ledger))
    projector, recorder = runtime.projector, runtime.ledger.recorder
    while batch := recorder.select_notifications(start=projector.position() + 1, limit=rng.randint(1, 40)):
        projector.process(batch)


def traffic(runtime: Runtime, rng: random.Random) -> None:
    ledger = runtime.ledger
    night = {"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_hour": 0,
             "end_hour": 6, "price_per_gb": "0.10"}
    plans = [ledger.create_plan(name="Home", terms=PlanTerms.parse("USD", "25", "0.45", bands=[night]),
                                effective_from=0),
             ledger.create_plan(name="Lite", terms=PlanTerms.parse("USD", "9.99", "1.10"), effective_from=0)]
    accounts = [ledger.open_account(name=f"Subscriber {n}", plan_id=rng.choice(plans).id, usernames=[f"u{n}"],
                                    opened_at=T0 - 86_400) for n in range(rng.randint(6, 10))]
    payments = 0

    def pay(at: int) -> None:
        nonlocal payments
        payments += 1
        amount = Decimal(rng.randint(100, 6000)) / 100
        ledger.record_payment(idempotency_key=f"p{payments}", account_id=rng.choice(accounts).id, amount=amount,
                              currency="USD", method="bank", reference=f"r{payments}", received_at=at)

    for _ in range(rng.randint(1, 3)):  # credit waiting for the first invoice
        pay(T0 + rng.randrange(86_400))
    catalog_changes(runtime, rng, plans, accounts)
    records = []
    for sessions in range(1, rng.randint(11, 21)):
        start = T0 + rng.randrange(25 * 86_400)
        user, up, down, at = f"u{rng.randrange(len(accounts))}", 0, 0, start
        records.append(record("start", f"s{sessions}", at=start, user=user))
        for _ in range(rng.randint(0, 4)):
            at += rng.randint(60, 7200)
            up, down = up + rng.randrange(2 * GB), down + rng.randrange(9 * GB)
            records.append(record("interim", f"s{sessions}", at=at, start=start, up=up, down=down, user=user))
        if sessions > 1 and rng.random() < 0.7:  # the first stays open until the NAS restarts
            records.append(record("stop", f"s{sessions}", at=at + rng.randint(1, 600), start=start, up=up,
                                  down=down + rng.randrange(GB), user=user))
    for day in (rng.randrange(25), 26):  # the NAS restarts: its open sessions are closed
        records.append(record(rng.choice(["accounting-on", "accounting-off"]), at=T0 + day * 86_400 + 3600))
    rng.shuffle(records)  # late and out of order, as BNGs send them
    for offset in range(0, len(records), 7):
        runtime.intake.append(records[offset:offset + 7])
        if rng.random() < 0.3:
            project_live(runtime, rng)
    project_live(runtime, rng)
    run_billing(runtime, "2026-11", at=MONTH_END)
    late = T0 + rng.randrange(20 * 86_400)  # usage of the billed month arriving after its invoice
    runtime.intake.append([record("start", "late", at=late, user="u0"),
                           record("stop", "late", at=late + 5400, start=late, up=GB, down=3 * GB, user="u0")])
    project_live(runtime, rng)
    for _ in range(rng.randint(3, 8)):
        pay(MONTH_END + rng.randrange(86_400))
        project_live(runtime, rng)
    issued = [i for i in finance.invoices(runtime.engine, limit=1000) if i["number"]]
    for n, invoice in enumerate(rng.sample(issued, k=min(3, len(issued)))):
        total = Decimal(invoice["total"])
        amount = None if rng.random() < 0.3 or total <= 0 else min(total, Decimal(rng.randint(1, 1500)) / 100)
        ledger.issue_credit_note(UUID(invoice["id"]), amount=amount, reason="goodwill", at=MONTH_END + 90_000 + n,
                                 site=runtime.settings.site, key=f"c{n}")
        pay(MONTH_END + 100_000 + n)
        project_live(runtime, rng)


def catalog_changes(runtime: Runtime, rng: random.Random, plans: list[Any], accounts: list[Any]) -> None:
    """What operators change besides usage: plan revisions and changes, add-on packs, API
    tokens issued and revoked, a NAS registered and retired, an account terminated."""
    ledger = runtime.ledger
    ledger.revise_plan(plans[0].id, terms=PlanTerms.parse("USD", "27", "0.40"), effective_from=T0 + 10 * 86_400)
    ledger.change_plan(accounts[0].id, plan_id=plans[1].id, effective_from=T0 + rng.randrange(20 * 86_400))
    ledger.purchase_addon(accounts[1].id, name="Extra 10 GB", gb=Decimal(10), price=Decimal("4.99"),
                          valid_from=T0 + rng.randrange(86_400), valid_until=T0 + 20 * 86_400)
    tokens = [ledger.issue_token(token=f"token-{n}-{rng.random()}", role="portal", account_id=accounts[n].id,
                                 label=f"t{n}", issued_at=T0) for n in range(2)]
    revoked = ledger.repository.get(tokens[rng.randrange(2)].id)
    revoked.revoke()
    ledger.save(revoked)
    nas = ledger.register_nas(address=f"10.9.{rng.randrange(255)}.1", name="old bng", secret="s")
    nas.retire()
    ledger.save(nas)
    ledger.set_account_status(accounts[-1].id, status="terminated", at=T0 + 27 * 86_400, reason="moved away")
    project_live(runtime, rng)


def tables(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    return runtime.projector.table_rows()


def rebuild_while_another_projector_moves(runtime: Runtime, rng: random.Random, head: int,
                                          live: dict[str, list[tuple[Any, ...]]], seed: int) -> None:
    """From position 0, a rebuild during which another projector moves the position (between
    two of the fold's windows): the fold's next window sees it and writes nothing, the rebuild
    goes on from the stored position the windowed way, and the tables are the live ones."""
    runtime.projector.reset()
    recorder = runtime.ledger.recorder
    interfered: list[int] = []

    def interfere(done: int) -> None:
        if not interfered:
            interfered.append(done)
            runtime.projector.process(recorder.select_notifications(start=runtime.projector.position() + 1,
                                                                    limit=rng.randint(1, 20)))

    runtime.projector.rebuild(recorder, window=rng.randint(5, 50), progress=interfere)
    assert interfered and runtime.projector.position() == head
    assert tables(runtime) == live, f"seed {seed}: a rebuild interrupted by another projector differs"


def test_rebuild_in_large_windows_equals_live_projection(runtime: Runtime) -> None:
    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    traffic(runtime, rng)
    live = tables(runtime)
    assert live["invoices"] and live["invoice_allocations"] and live["usage_buckets"] and live["credit_notes"]
    assert any(row[-1] for row in live["api_tokens"]) and any(row[-1] for row in live["nas"])  # revoked, retired
    assert any(row[-1] == "NAS-Reboot" for row in live["sessions"])  # closed by Accounting-On/Off
    head = runtime.ledger.recorder.max_notification_id()
    for window in (1_000_000, rng.randint(2, 50)):
        runtime.projector.reset()
        assert runtime.projector._fast_rebuild_applies(runtime.ledger.recorder)  # the path under test
        assert runtime.projector.rebuild(runtime.ledger.recorder, window=window) == head
        assert runtime.projector.position() == head
        rebuilt = tables(runtime)
        for name, rows in live.items():
            assert rebuilt[name] == rows, f"seed {seed}, window {window}: table {name} differs"
    # Interrupted half way (the fold from 0), then resumed from the stored position (the
    # windowed live path): the same tables again.
    runtime.projector.reset()
    runtime.projector.rebuild(runtime.ledger.recorder, upto=head // 2, window=rng.randint(5, 500))
    assert runtime.projector.position() == head // 2
    assert not runtime.projector._fast_rebuild_applies(runtime.ledger.recorder)
    runtime.projector.rebuild(runtime.ledger.recorder)
    assert tables(runtime) == live, f"seed {seed}: a rebuild resumed half way differs from the live tables"
    # Another projector moves the position while the fold runs (here: between two of its
    # windows): the fold's next window sees it, writes nothing, and the rebuild goes on from
    # the stored position the windowed way.
    rebuild_while_another_projector_moves(runtime, rng, head, live, seed)
    # The operator's command does the same.
    argv = ["projections", "rebuild", "--data-dir", str(runtime.settings.data_dir)]
    if runtime.settings.database_url:
        argv += ["--database-url", runtime.settings.database_url]
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    assert tables(runtime) == live, f"seed {seed}: wispgate projections rebuild differs from the live tables"


def _plain(value: Any) -> Any:
    """What a handler makes of a value: ids as text, timestamps as ISO text."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def test_fast_decoder_reads_events_as_the_mapper_does(runtime: Runtime) -> None:
    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    traffic(runtime, random.Random(seed))
    decode, mapper = event_decoder(runtime.ledger.mapper), runtime.ledger.mapper
    rebuild = FastRebuild(runtime.engine, "check", runtime.ledger.recorder, decode)
    kinds, lean = set(), 0
    for notification in runtime.ledger.recorder.select_notifications(start=1, limit=100_000):
        fast, slow = decode(notification), mapper.to_domain_event(notification)
        assert type(fast) is type(slow)
        assert {k: _plain(v) for k, v in vars(fast).items()} == {k: _plain(v) for k, v in vars(slow).items()}
        kinds.add(type(fast).__qualname__)
        # The rebuild's orjson decoding of events with top-level typed values only.
        event = rebuild._lean_event(notification.topic, str(notification.originator_id),
                                    notification.originator_version, notification.state)
        if event is not None:
            lean += 1
            assert type(event) is type(fast) and vars(event) == {k: _plain(v) for k, v in vars(fast).items()}
    assert lean > len(kinds)
    assert {"Session.RecordApplied", "BillingPeriod.UsageRated", "Invoice.Issued", "Payment.Received",
            "CreditNote.Issued", "Session.ClosedByNas", "Plan.Revised", "Account.PlanChanged",
            "Account.AddonPurchased", "ApiToken.Revoked", "Nas.Retired"} <= kinds


def test_journal_amounts_taken_as_stored_only_when_fmt_gives_them_back() -> None:
    """The rebuild writes a posting's amount text as stored when it matches ``_CANONICAL``;
    that must be exactly when ``fmt`` (what live projection writes) would give it back."""
    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    texts = ["0", "-0", "0.0", "20", "-20.00", "0.10", "1E+2", "-0.5", "00.5", "1.", ".5", "-0.000", "1" * 70]
    for _ in range(20_000):
        digits = rng.randint(1, 30)
        texts.append(str(Decimal(rng.randint(-10**digits, 10**digits)).scaleb(-rng.randint(0, 20))))
    with localcontext(Context(prec=80)):
        for text in texts:
            if _CANONICAL.fullmatch(text) and text != "-0":
                assert fmt(Decimal(text)) == text, f"seed {seed}: {text}"
    assert sum(1 for text in texts if _CANONICAL.fullmatch(text)) > len(texts) // 2


def test_a_model_handler_without_its_fold_rule_sends_rebuilds_the_windowed_way(
        monkeypatch: Any, runtime: Runtime) -> None:
    """A handler added to a read model but not to ``projections/fold.py`` must not be skipped
    by rebuilds: the fold then does not apply."""
    from projections.sessions import _SessionBatch

    runtime.projector.reset()
    assert fold_covers_models() and runtime.projector._fast_rebuild_applies(runtime.ledger.recorder)
    monkeypatch.setattr(_SessionBatch, "on_Account_Suspended", lambda self, position, e: None, raising=False)
    assert not fold_covers_models()
    assert not runtime.projector._fast_rebuild_applies(runtime.ledger.recorder)


def test_rebuild_with_the_sessions_part_in_a_second_process_equals_live_projection(
        monkeypatch: Any, runtime: Runtime) -> None:
    """The two-process fold (``fold_worker.py``: forked, reading the sessions part itself, on
    a SQLite store) gives the live tables, in any window and read size; next to PostgreSQL's
    pool threads nothing is forked and the one-process fold gives them. A second process that
    dies fails the rebuild before its window commits, and the rebuild resumed afterwards gives
    the live tables again."""
    import os
    import signal

    from projections import rebuild

    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    traffic(runtime, rng)
    live = tables(runtime)
    started: list[Any] = []

    class Recorded(rebuild.SessionFoldProcess):
        def __init__(self, reading: Any) -> None:
            super().__init__(reading)
            started.append(self)

    monkeypatch.setattr(rebuild, "SessionFoldProcess", Recorded)
    monkeypatch.setattr(rebuild, "PARALLEL_MIN_EVENTS", 0)
    monkeypatch.setattr(cores, "second_core_free", lambda: True)
    forks = not runtime.settings.database_url
    if forks:
        # Forking asks for a single-threaded caller; earlier tests in this interpreter may have
        # left idle threads behind (the product's own check is tested on PostgreSQL below,
        # whose pool threads must keep it from forking).
        monkeypatch.setattr(rebuild, "can_fork", lambda: True)
    head = runtime.ledger.recorder.max_notification_id()
    for window in (1_000_000, rng.randint(2, 50)):
        monkeypatch.setattr(rebuild, "READ_CHUNK", rng.randint(1, 30))
        monkeypatch.setattr(rebuild, "SQLITE_PARAMETERS", rng.randint(1, 80))  # multi-row inserts of any size
        runtime.projector.reset()
        started.clear()
        assert runtime.projector.rebuild(runtime.ledger.recorder, window=window) == head
        assert len(started) == forks  # the path under test
        assert not started or not started[-1].process.is_alive()  # and it ended
        rebuilt = tables(runtime)
        for name, rows in live.items():
            assert rebuilt[name] == rows, f"seed {seed}, window {window}: table {name} differs"
    if not forks:
        return
    window = rng.randint(5, head // 3)
    runtime.projector.reset()

    def kill(done: int) -> None:  # after the first window has committed
        os.kill(started[-1].process.pid, signal.SIGKILL)

    started.clear()
    try:
        runtime.projector.rebuild(runtime.ledger.recorder, window=window, progress=kill)
    except RuntimeError as error:
        assert "died" in str(error)
    else:
        raise AssertionError(f"seed {seed}: a rebuild whose second process died did not fail")
    assert runtime.projector.position() == window
    runtime.projector.rebuild(runtime.ledger.recorder)
    assert tables(runtime) == live, f"seed {seed}: a rebuild resumed after the second process died differs"


def test_postings_read_without_parsing_a_rated_usage_equal_the_full_parse() -> None:
    """``fold.rated_postings`` (what the money part reads of a UsageRated when the sessions
    part is folded elsewhere) gives the postings and end the full parse gives, on random
    stored JSON made to trip it: brackets, quotes and the key names inside strings, the keys
    nested or twice, postings empty, an end that is not an integer."""
    import orjson

    from projections.fold import rated_postings

    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    tricky = ['"end":', '"postings":[', "]", "],", "[", ",", "}", '\\"', "\\", "é", "receivable:x", ""]

    def text() -> str:
        return "".join(rng.choice(tricky) if rng.random() < 0.3 else chr(rng.randint(32, 126))
                       for _ in range(rng.randint(0, 12)))

    fast = 0
    for _ in range(20_000):
        postings = [{"ledger_account": text(), "amount": str(Decimal(rng.randint(-10**9, 10**9)).scaleb(-9)),
                     "currency": "USD"} for _ in range(rng.choice([0, 1, 2, 2, 3]))]
        state: dict[str, Any] = {
            "timestamp": {"_type_": "datetime_iso", "_data_": text()}, "incarnation": text(),
            "end": rng.choice([rng.randint(-10**10, 10**10), rng.randint(0, 10**10), 1.5, text(), None]),
            "band": text(), "lines": [{"band": text(), "amount": text()} for _ in range(rng.randint(0, 3))],
            "postings": postings, "meter": {"packs_used": {text(): rng.randint(0, 9)}}}
        if rng.random() < 0.1:
            state["meter"]["end"] = 1  # the key nested as well
        if rng.random() < 0.1:
            state["lines"].append({"postings": []})
        items = list(state.items())
        rng.shuffle(items)
        stored = orjson.dumps(dict(items))
        reference, read = orjson.loads(stored), rated_postings(stored)
        assert read["postings"] == reference["postings"] and read["end"] == reference["end"], \
            f"seed {seed}: {stored!r}"
        fast += len(read) == 2
    assert fast > 2_000, f"seed {seed}: the short way was taken {fast} times only"


def test_the_second_process_only_where_a_second_core_is_idle(monkeypatch: Any) -> None:
    """The rebuild forks only when another core is idle: not on one core, not while every
    core has a running task besides the rebuild (at the least of three looks), and yes as soon
    as one look finds a core free."""
    import os

    looks: list[int] = []
    monkeypatch.setattr(cores, "running_tasks", lambda: looks.pop(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    looks[:] = [1, 1, 1]
    assert not cores.second_core_free()  # one core
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    looks[:] = [2, 3, 2]
    assert not cores.second_core_free()  # the rebuild and another task on the two cores
    looks[:] = [3, 1, 4]
    assert cores.second_core_free()  # one look found only the rebuild running
    assert not looks  # every look was taken
    monkeypatch.undo()
    assert isinstance(cores.running_tasks(), int) and cores.running_tasks() >= 1  # the real count


def test_bulk_inserts_on_sqlite_write_every_row_once_in_multi_row_statements(monkeypatch: Any, tmp_path: Any) -> None:
    """``rebuild.bulk_insert`` on SQLite (statements of many rows, the rest one by one) stores
    exactly the rows given, whatever the statement size and the number of rows."""
    from sqlalchemy import create_engine, select

    from projections import rebuild
    from projections import tables as t

    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    engine = create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    t.journal.create(engine)
    position = 0
    for _ in range(30):
        monkeypatch.setattr(rebuild, "SQLITE_PARAMETERS", rng.choice([1, 6, 7, 8, rng.randint(1, 200), 6_000]))
        rows = []
        for _ in range(rng.choice([0, 1, 2, rng.randint(1, 300)])):
            position += 1
            rows.append((position, rng.randint(0, 3), f"usage:{rng.random()}", rng.randint(0, 2**40),
                         rng.choice(["revenue:usage", "receivable:x"]), str(rng.randint(-999, 999)), "USD"))
        with engine.begin() as conn:
            rebuild.bulk_insert(conn, t.journal, rows)
            stored = [tuple(row) for row in conn.execute(select(t.journal).where(t.journal.c.position > position
                                                                                   - len(rows)))]
        assert sorted(stored) == rows, f"seed {seed}: {len(rows)} rows given, {len(stored)} stored"
    engine.dispose()


def test_a_window_the_second_process_cannot_fold_in_its_order_is_folded_the_windowed_way(
        monkeypatch: Any, runtime: Runtime) -> None:
    """When the second process says a window's rated usages cannot be folded after its own
    events (``Fold.apply_rated``: a NAS's close before which usage made the row), nothing of
    that window is written by the fold and the rebuild goes on the windowed way from there:
    the tables equal live projection's all the same."""
    from projections import rebuild
    from projections.fold import Fold

    if runtime.settings.database_url:
        return  # nothing is forked next to PostgreSQL's pool threads
    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    traffic(runtime, rng)
    live = tables(runtime)
    head = runtime.ledger.recorder.max_notification_id()
    windows = rng.randint(2, 4)
    window = head // windows + 1
    refuse_at = rng.randrange(windows)
    applied: list[int] = []
    apply_rated = Fold.apply_rated

    def refusing(self: Fold, rated: Any) -> bool:  # runs in the forked process
        if len(applied) == refuse_at:
            return False
        applied.append(len(rated))
        return apply_rated(self, rated)

    monkeypatch.setattr(Fold, "apply_rated", refusing)
    monkeypatch.setattr(rebuild, "PARALLEL_MIN_EVENTS", 0)
    monkeypatch.setattr(cores, "second_core_free", lambda: True)
    monkeypatch.setattr(rebuild, "can_fork", lambda: True)
    fell_back: list[int] = []
    process = runtime.projector.process

    def windowed(notifications: Any) -> None:
        fell_back.append(len(notifications))
        process(notifications)

    monkeypatch.setattr(runtime.projector, "process", windowed)
    runtime.projector.reset()
    assert runtime.projector.rebuild(runtime.ledger.recorder, window=window) == head
    assert fell_back, f"seed {seed}: the refused window was not folded the windowed way"
    assert runtime.projector.position() == head
    rebuilt = tables(runtime)
    for name, rows in live.items():
        assert rebuilt[name] == rows, f"seed {seed}, refused window {refuse_at}: table {name} differs"
