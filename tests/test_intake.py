"""The accounting log's batch append: what it stores and how it deduplicates by content."""

from __future__ import annotations

import json

from api.bootstrap import Runtime
from domain.accounting import AccountingRecord
from ledger.intake import ReceivedRecord

from .support import record


def test_a_batch_is_stored_exactly_as_received_record_aggregates_would_be(runtime: Runtime) -> None:
    records = [record("interim", f"s{i}", at=1_700_000_000 + i, up=i, down=2 * i) for i in range(3)]
    assert runtime.intake.append(records) == [True, True, True]
    stored = runtime.intake.recorder.select_notifications(start=1, limit=10)
    assert len(stored) == 3
    for notification, original in zip(stored, records, strict=True):
        # The shape saving a ReceivedRecord aggregate produces: the rater, the site
        # shipping and old logs all read this one format.
        aggregate = ReceivedRecord(key=original.idempotency_key(), record=original.to_dict())
        reference = runtime.intake.mapper.to_stored_event(aggregate.collect_events()[0])
        assert (notification.originator_id, notification.originator_version, notification.topic) == (
            reference.originator_id, reference.originator_version, reference.topic)
        ours, theirs = json.loads(notification.state), json.loads(reference.state)
        assert list(ours) == list(theirs)  # the same keys in the same order
        assert {k: v for k, v in ours.items() if k != "timestamp"} == \
            {k: v for k, v in theirs.items() if k != "timestamp"}
        # Byte for byte, once the reference has the stored event's timestamp.
        received = runtime.intake.mapper.to_domain_event(notification)
        same_time = ReceivedRecord.Received(  # type: ignore[attr-defined]
            originator_id=reference.originator_id, originator_version=1, timestamp=received.timestamp,
            originator_topic=theirs["originator_topic"], key=original.idempotency_key(), record=original.to_dict())
        assert runtime.intake.mapper.to_stored_event(same_time).state == bytes(notification.state)
        event = runtime.intake.mapper.to_domain_event(notification)
        assert AccountingRecord.from_dict(event.record) == original
        assert runtime.intake.repository.get(notification.originator_id).record == original.to_dict()


def test_duplicates_in_the_batch_and_in_the_log_are_acknowledged_and_stored_once(runtime: Runtime) -> None:
    a, b, c = (record("interim", f"s{i}", at=1_700_000_000, up=i) for i in range(3))
    assert runtime.intake.append([a, b, a]) == [True, True, False]
    # b is already stored: the rest of the batch still goes in, in one append call.
    assert runtime.intake.append([b, c, c]) == [False, True, False]
    assert runtime.intake.append([a, b, c]) == [False, False, False]
    assert runtime.intake.position() >= 3
    stored = runtime.intake.recorder.select_notifications(start=1, limit=10)
    assert len(stored) == 3
    assert runtime.intake.append([]) == []


def test_the_rater_is_woken_after_each_commit_that_stored_something(runtime: Runtime) -> None:
    woken: list[int] = []
    runtime.intake.listeners.append(lambda: woken.append(1))
    runtime.intake.append([record("start", "s1", at=1_700_000_000)])
    assert woken == [1]
