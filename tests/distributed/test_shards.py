"""Accounting-On/Off in the distributed mode: the sessions of one NAS are spread over the
accounting topic's partitions, each applied by its own rater with its own open-session
registry (shard); the radius adapter copies Accounting-On/Off to every partition."""

from __future__ import annotations

from eventsourcing.persistence import Tracking

from api.bootstrap import Runtime
from domain.accounting import AccountingRecord
from ledger.session import Session
from tests.support import NAS, record

T0 = 1_795_000_000


def apply(runtime: Runtime, shard: int, offset: int, *records: AccountingRecord) -> None:
    """As the rater does for one partition batch (tracked offset = next offset)."""
    runtime.ledger.apply_records(list(records), Tracking(f"acct:{shard}", offset + 1), shard=str(shard))


def open_sessions(runtime: Runtime, *ids: str) -> set[str]:
    found = set()
    for acct_session_id in ids:
        session = runtime.ledger.repository.get(Session.create_id(NAS, acct_session_id))
        if session.open_incarnations():
            found.add(acct_session_id)
    return found


def test_accounting_on_copied_to_every_partition_closes_each_partitions_sessions(runtime: Runtime) -> None:
    apply(runtime, 0, 0, record("start", "a", at=T0), record("start", "b", at=T0 + 1))
    apply(runtime, 1, 0, record("start", "c", at=T0 + 2))
    assert open_sessions(runtime, "a", "b", "c") == {"a", "b", "c"}

    reboot = record("accounting-on", at=T0 + 100)
    apply(runtime, 0, 1, reboot)
    apply(runtime, 1, 1, reboot)
    assert open_sessions(runtime, "a", "b", "c") == set()


def test_redelivered_accounting_on_does_not_close_sessions_started_after_it(runtime: Runtime) -> None:
    reboot = record("accounting-on", at=T0 + 100)
    apply(runtime, 0, 0, record("start", "a", at=T0))
    apply(runtime, 0, 1, reboot)
    apply(runtime, 0, 2, record("start", "d", at=T0 + 200))
    apply(runtime, 0, 3, reboot)  # at-least-once: the same record again, later in the partition
    assert open_sessions(runtime, "a", "d") == {"d"}
