"""Replication between sites: the chained log after a position (gzip batches), the hash at a
position (to find where two logs diverge), and re-submission of raw accounting records by a
fenced site (charged once here, by content)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel

from adapters.kafka.accounting_topic import LogUnavailable
from adapters.shipping import encode_batch
from domain.accounting import AccountingRecord
from ledger.chain import GENESIS

from ..deps import RuntimeDep, require
from ..stores import ledger_store

router = APIRouter(prefix="/v1/replication", tags=["replication"], dependencies=[require("replication", "admin")])


@router.get("/log", response_class=Response)
def log_after(runtime: RuntimeDep, after: Annotated[int, Query(ge=0, le=2**62)] = 0,
              limit: Annotated[int, Query(ge=1, le=20_000)] = 2000) -> Response:
    """Chained events after ``after`` (gzip JSON). ``anchor_hash`` is this site's hash at
    ``after`` (null if it holds no such position), so the caller can check it holds a prefix."""
    store = ledger_store(runtime)
    site = store.site(default_name=runtime.settings.site, default_role=runtime.settings.site_role)
    anchor = GENESIS if after == 0 else store.hash_at(after)
    events = store.chained_events(after, limit) if anchor is not None else []
    head, head_hash = store.chain_head()
    body = encode_batch(events, site=site.name, role=site.role, epoch=site.epoch, anchor_hash=anchor,
                        head_position=head, head_hash=head_hash)
    return Response(body, media_type="application/json", headers={"Content-Encoding": "gzip"})


@router.get("/hash")
def hash_at(runtime: RuntimeDep, position: Annotated[int, Query(ge=0, le=2**62)]) -> dict[str, Any]:
    return {"position": position, "hash": ledger_store(runtime).hash_at(position)}


class Resubmission(BaseModel):
    records: list[dict[str, Any]]


@router.post("/records")
def resubmit(body: Resubmission, runtime: RuntimeDep) -> dict[str, int]:
    """Raw records a fenced site accepted after the last shipped position, appended to this
    site's accounting log: a record already here (same content) is stored and charged once."""
    store = ledger_store(runtime)
    site = store.site(default_name=runtime.settings.site, default_role=runtime.settings.site_role)
    if not site.active:
        raise HTTPException(409, f"site {site.name} is not active; re-submit to the active site")
    try:
        records = [AccountingRecord.from_dict(item) for item in body.records]
    except (KeyError, TypeError, ValueError) as error:
        raise HTTPException(422, f"not an accounting record: {error}") from None
    # A distributed site appends to its accounting topic; its raters recognise records they
    # already rated by content, so ``new`` counts what was queued there, not what is charged.
    sink = runtime.__dict__.get("_accounting_sink") or runtime.intake.append
    try:
        fresh = sink(records) if records else []
    except LogUnavailable as error:
        raise HTTPException(503, f"the accounting log is unavailable: {error}") from None
    return {"received": len(records), "new": sum(fresh), "duplicates": len(records) - sum(fresh)}
