"""Test helpers: building accounting records and running the stages to completion."""

from __future__ import annotations

from typing import Any

from adapters.followers import drain, project_step, rate_step
from api.bootstrap import Runtime
from domain.accounting import AccountingRecord, StatusType

NAS = "nas-test"


def record(status: str, session: str = "s1", *, at: int, start: int | None = None, up: int = 0,
           down: int = 0, user: str = "alice", nas: str = NAS, **extra: Any) -> AccountingRecord:
    """A record with Event-Timestamp ``at``; ``start`` gives Acct-Session-Time = at - start."""
    status_type = StatusType(status)
    begin = at if start is None else start
    return AccountingRecord(
        nas_id=nas, status=status_type, event_time=at, received_at=at, event_timestamp_sent=True,
        acct_session_id="" if status_type.closes_nas else session, username=user,
        session_time=0 if status_type.closes_nas else at - begin,
        input_octets=up, output_octets=down, **extra,
    )


def ingest(runtime: Runtime, *records: AccountingRecord) -> list[bool]:
    """Through the accounting log, then rate and project everything."""
    fresh = runtime.intake.append(list(records))
    settle(runtime)
    return fresh


def settle(runtime: Runtime) -> None:
    drain(rate_step(runtime.intake, runtime.ledger), project_step(runtime.ledger, runtime.projector))
