"""Following the ledger's log live (``ReadModelProjector.follow``, what `serve`'s projector
runs): the raw log reader gives what eventsourcing's reader gives, and reading after the
position this projector committed last (not the stored one) never skips an event, whatever
another writer does to the tables in between (resets, rebuilds to an earlier position, its
own batches) and whatever batches fail: the tables equal a rebuild from position 0 row by
row (seeded random traffic; the seed is printed)."""

from __future__ import annotations

import contextlib
import random
import time
from typing import Any

import pytest

from api.bootstrap import Runtime
from projections import ReadModelProjector, money
from projections.live_log import LiveLog, LogEntry

from .test_projector_kept_rows import provision_and_rate


class _Failure(Exception):
    pass


def test_live_log_reads_what_the_recorder_selects(runtime: Runtime) -> None:
    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    provision_and_rate(runtime, rng)
    recorder = runtime.ledger.recorder
    head = recorder.max_notification_id()
    log = LiveLog(recorder)
    decode = runtime.projector.decode
    for _ in range(40):
        after, limit = rng.randint(0, head + 2), rng.randint(1, 30)
        raw = log.read(after, limit)
        expected = recorder.select_notifications(start=after + 1, limit=limit)
        assert all(type(entry) is LogEntry for entry in raw), "the raw reader was not used"
        assert [(e.id, e.originator_id, e.originator_version, e.topic, e.state) for e in raw] == [
            (n.id, str(n.originator_id), n.originator_version, n.topic, n.state) for n in expected], f"seed {seed}"
        for entry, notification in zip(raw, expected, strict=True):
            assert entry.notification() == notification
            from_raw, from_notification = decode(entry).__dict__, decode(notification).__dict__
            from_notification["originator_id"] = str(from_notification["originator_id"])
            from_raw["originator_id"] = str(from_raw["originator_id"])
            assert from_raw == from_notification, f"seed {seed}: {notification.topic}"


def test_following_equals_a_rebuild_whatever_other_writers_do(runtime: Runtime,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seed = int(time.time_ns() % 1_000_000)
    print(f"seed {seed}")
    rng = random.Random(seed)
    provision_and_rate(runtime, rng)
    recorder = runtime.ledger.recorder
    head = recorder.max_notification_id()
    live = runtime.projector
    other = ReadModelProjector(runtime.engine, runtime.ledger.mapper)  # another writer of the same tables
    original_flush = money._MoneyBatch.flush
    resets = failures = 0

    def failing_flush(self: Any) -> None:
        original_flush(self)
        raise _Failure

    steps = 0
    while live.position() < head or steps < 3:
        steps += 1
        assert steps < 10_000, f"seed {seed}: following does not get to the head"
        roll = rng.random()
        position = live.position()
        if roll < 0.15:
            other.process(recorder.select_notifications(start=position + 1, limit=rng.randint(1, 12)))
        elif roll < 0.3 and resets < 6:
            # A reset and a rebuild to an earlier position than the live projector's: what it
            # committed last is now ahead of the stored position.
            resets += 1
            other.reset()
            other.rebuild(recorder, upto=rng.randint(0, position), window=rng.randint(3, 50))
        elif roll < 0.38 and failures < 4:
            failures += 1
            monkeypatch.setattr(money._MoneyBatch, "flush", failing_flush)
            # (no batch to fail when the stored position moved: nothing is applied then)
            with contextlib.suppress(_Failure):
                live.follow(recorder, rng.randint(1, 12))
            monkeypatch.setattr(money._MoneyBatch, "flush", original_flush)
            assert live.position() == position
        else:
            live.follow(recorder, rng.randint(1, 12))
    assert live.position() == head
    # At most one step re-reads what another writer projected last; then nothing is left.
    live.follow(recorder, 10)
    assert live.follow(recorder, 10) == 0 and live.position() == head
    projected = live.table_rows()
    assert projected["sessions"] and projected["usage_buckets"] and projected["balances"]
    live.reset()
    live.rebuild(recorder)
    rebuilt = live.table_rows()
    for name, rows in rebuilt.items():
        assert projected[name] == rows, f"seed {seed}: table {name} differs from a rebuild"
    live.close()
