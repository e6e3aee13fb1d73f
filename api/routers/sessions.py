"""Who had an IP address at a moment (abuse reports, lawful requests), from the sessions model."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from projections import queries

from ..deps import RuntimeDep, require
from ..finance_schemas import IpHolderOut

router = APIRouter(prefix="/v1/sessions", tags=["audit"], dependencies=[require("admin", "auditor")])


def _time(epoch: int | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


@router.get("/by-ip", response_model=list[IpHolderOut])
def by_ip(runtime: RuntimeDep, ip: Annotated[str, Query(max_length=64)],
          at: Annotated[datetime, Query(description="ISO 8601 moment")]) -> list[IpHolderOut]:
    """Sessions that held Framed-IP-Address ``ip`` at ``at`` (started at or before, not stopped before)."""
    try:
        address = str(ipaddress.ip_address(ip))
    except ValueError:
        raise HTTPException(422, f"not an IP address: {ip!r}") from None
    moment = int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())
    return [IpHolderOut(session_id=r["id"], account_id=r["account_id"], username=r["username"], nas_id=r["nas_id"],
                        nas_ip=r["nas_ip"], framed_ip=r["framed_ip"], calling_station_id=r["calling_station_id"],
                        started_at=_time(r["started_at"]), stopped_at=_time(r["stopped_at"]))
            for r in queries.who_had_ip(runtime.engine, address, moment)]
