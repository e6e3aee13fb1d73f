"""The fast paths of the projector give exactly what following the log live gives: a rebuild
in large windows (one transaction each) reproduces, row by row, every read-model table
projected live in small batches, on seeded random traffic (sessions, billing, payments before
and after invoices, partial and excess payments, credit notes); and the projector's event
decoder reads every handled event exactly as eventsourcing's mapper does."""

from __future__ import annotations

import contextlib
import io
from datetime import datetime
from decimal import Context, Decimal, localcontext
from typing import Any
from uuid import UUID

import orjson

from api.bootstrap import Runtime
from api.cli import main
from ledger import cores
from projections.base import fmt
from projections.decoding import event_decoder
from projections.fold import _CANONICAL, Fold
from projections.rebuild import FastRebuild, fold_covers_models

from .rebuild_support import assert_tables_equal, rebuild_while_another_projector_moves, seeded, seeded_traffic, tables


def test_rebuild_in_large_windows_equals_live_projection(runtime: Runtime) -> None:
    seed, rng, live, head = seeded_traffic(runtime)
    assert live["invoices"] and live["invoice_allocations"] and live["usage_buckets"] and live["credit_notes"]
    assert any(row[-1] for row in live["api_tokens"]) and any(row[-1] for row in live["nas"])  # revoked, retired
    assert any(row[-1] == "NAS-Reboot" for row in live["sessions"])  # closed by Accounting-On/Off
    for window in (1_000_000, rng.randint(2, 50)):
        runtime.projector.reset()
        assert runtime.projector._fast_rebuild_applies(runtime.ledger.recorder)  # the path under test
        assert runtime.projector.rebuild(runtime.ledger.recorder, window=window) == head
        assert runtime.projector.position() == head
        assert_tables_equal(runtime, live, f"seed {seed}, window {window}")
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
    seeded_traffic(runtime)
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
    seed, rng = seeded()
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
    a SQLite store, and the rated usages of a share of the accounts whole) gives the live
    tables, in any window, read size and share; next to PostgreSQL's pool threads nothing is
    forked and the one-process fold gives them. A second process that
    dies fails the rebuild before its window commits, and the rebuild resumed afterwards gives
    the live tables again."""
    import os
    import signal

    from projections import rebuild

    seed, rng, live, head = seeded_traffic(runtime)
    started: list[Any] = []

    class Recorded(rebuild.SessionFoldProcess):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
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
    digits = _rated_account_digits(runtime)
    kept: list[int] = []  # rated usages the rebuild's own process folded
    elsewhere = Fold.usage_rated_elsewhere

    def counted(self: Fold, *args: Any) -> None:
        kept.append(args[0])
        elsewhere(self, *args)

    monkeypatch.setattr(Fold, "usage_rated_elsewhere", counted)
    for window in (1_000_000, rng.randint(2, 50)):
        monkeypatch.setattr(rebuild, "READ_CHUNK", rng.randint(1, 30))
        monkeypatch.setattr(rebuild, "SQLITE_PARAMETERS", rng.randint(1, 80))  # multi-row inserts of any size
        share = frozenset(rng.sample(sorted(set(digits)), k=rng.randint(1, len(set(digits)))))
        monkeypatch.setattr(rebuild, "SECOND_SHARE", share)
        runtime.projector.reset()
        started.clear()
        kept.clear()
        assert runtime.projector.rebuild(runtime.ledger.recorder, window=window) == head
        assert len(started) == forks  # the path under test
        assert not started or not started[-1].process.is_alive()  # and it ended
        if forks:  # and the share's rated usages were left to the second process
            assert len(kept) == sum(digit not in share for digit in digits), f"seed {seed}, share {sorted(share)}"
        assert_tables_equal(runtime, live, f"seed {seed}, window {window}, share {sorted(share)}")
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


def _rated_account_digits(runtime: Runtime) -> list[str]:
    """The last hex digit of the account of every rated usage in the log (what the second
    process's share is by)."""
    notifications = runtime.ledger.recorder.select_notifications(start=1, limit=1_000_000)
    return [orjson.loads(n.state)["account_id"]["_data_"][-1] for n in notifications
            if n.topic.endswith(":BillingPeriod.UsageRated")]


def test_a_share_split_that_does_not_follow_the_accounts_is_folded_the_windowed_way(
        monkeypatch: Any, runtime: Runtime) -> None:
    """When the log's query splits the rated usages otherwise than by their parsed accounts
    (here: by position), a process given a rated usage outside its share says so
    (``fold.ShareMismatch``): nothing of that window is written by the fold, the rebuild goes
    on the windowed way, and the tables equal live projection's."""
    from projections import rebuild

    if runtime.settings.database_url:
        return  # nothing is forked next to PostgreSQL's pool threads
    seed, rng, live, head = seeded_traffic(runtime)
    monkeypatch.setattr(rebuild, "share_condition", lambda topic, share: ("topic = ? AND rowid % 2 = 0", [topic]))
    fell_back = folded_in_two_processes(runtime, monkeypatch)
    assert runtime.projector.rebuild(runtime.ledger.recorder, window=rng.randint(2, head)) == head
    assert fell_back, f"seed {seed}: the mismatched window was not folded the windowed way"
    assert_tables_equal(runtime, live, f"seed {seed}")


def test_postings_read_without_parsing_a_rated_usage_equal_the_full_parse() -> None:
    """``fold.rated_postings`` (what the money part reads of a UsageRated when the sessions
    part is folded elsewhere) gives the postings and end the full parse gives, on random
    stored JSON made to trip it: brackets, quotes and the key names inside strings, the keys
    nested or twice, postings empty, an end that is not an integer."""
    from projections.fold import rated_postings

    seed, rng = seeded()
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

    seed, rng = seeded()
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
    from projections.fold import Fold

    if runtime.settings.database_url:
        return  # nothing is forked next to PostgreSQL's pool threads
    seed, rng, live, head = seeded_traffic(runtime)
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
    fell_back = folded_in_two_processes(runtime, monkeypatch)
    assert runtime.projector.rebuild(runtime.ledger.recorder, window=window) == head
    assert fell_back, f"seed {seed}: the refused window was not folded the windowed way"
    assert runtime.projector.position() == head
    assert_tables_equal(runtime, live, f"seed {seed}, refused window {refuse_at}")


def folded_in_two_processes(runtime: Runtime, monkeypatch: Any) -> list[int]:
    """Make the next rebuild fold in a forked second process whatever the machine and the log's
    size; returns the sizes of the windows it then projects the windowed way instead (filled
    as it goes). The projector is reset."""
    from projections import rebuild

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
    return fell_back
