"""Audit: the events of an aggregate, an account as of a moment, the chain's verdict."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query

from adapters.audit import account_as_of, verify_store

from ..deps import RuntimeDep, require
from ..stores import ledger_store

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[require("auditor", "admin")])


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@router.get("/aggregates/{aggregate_id}/events")
def aggregate_events(
    aggregate_id: UUID, runtime: RuntimeDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="cursor: the last version seen")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The stored events of one aggregate, as recorded (topic and JSON state), oldest first."""
    stored = runtime.ledger.recorder.select_events(aggregate_id, gt=after, limit=limit)
    items = []
    for event in stored:
        try:
            state: Any = json.loads(event.state)
        except ValueError:
            state = None
        items.append({"version": event.originator_version, "topic": event.topic, "state": state})
    if not items and after == 0:
        raise HTTPException(404, f"no aggregate {aggregate_id}")
    next_cursor = items[-1]["version"] if len(items) == limit else None
    return {"aggregate_id": str(aggregate_id), "items": items, "next_after": next_cursor}


@router.get("/accounts/{account_id}/as-of")
def account_at(account_id: UUID, runtime: RuntimeDep,
               at: Annotated[datetime, Query(description="ISO 8601 moment")]) -> dict[str, Any]:
    """Balance, usage and open sessions as of ``at``, folded from the ledger log itself."""
    moment = int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())
    figures = account_as_of(runtime.ledger, str(account_id), moment)
    if not figures.currency:
        raise HTTPException(404, f"no account {account_id}")
    return {
        "account_id": str(account_id), "as_of": _iso(moment),
        "balance": format(figures.balance.normalize(), "f") if figures.balance else "0",
        "currency": figures.currency,
        "usage": {"upload_bytes": figures.upload_bytes, "download_bytes": figures.download_bytes},
        "open_sessions": [{"session": s["session"], "username": s["username"], "started_at": _iso(s["started_at"])}
                          for s in figures.open_sessions()],
    }


@router.get("/verify")
def verify(runtime: RuntimeDep) -> dict[str, Any]:
    """The hash chain's verdict on the live store, with the head to anchor elsewhere."""
    result = verify_store(ledger_store(runtime))
    verdict = result.verdict
    return {"ok": verdict.ok, "checked": verdict.checked, "head_position": verdict.head_position,
            "head_hash": verdict.head_hash, "broken_at": verdict.broken_at, "reason": verdict.reason,
            "unchained": result.unchained}
