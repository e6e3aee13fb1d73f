"""The portal's usage and sessions views as plain JSON-ready values, and their query
parameters read strictly, for `api.portal_reads`: each value here is what FastAPI's route
(`api/routers/portal.py`, `api/schemas.py`) writes for the same request. A parameter in any
other form than the plain ones below makes the reader return None, and the route answers."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Engine

from projections import queries

from .routers.portal import next_cursor

_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_USAGE_LIMIT = re.compile(r"[1-9]\d{0,4}")
_SESSIONS_LIMIT = re.compile(r"[1-9]\d{0,2}")
_CURSOR = re.compile(r"\d{1,12}:[0-9a-f-]{36}:\d{1,12}")


def iso(epoch: int | None) -> str | None:
    """An epoch second as pydantic writes a UTC datetime ("...T12:00:00Z")."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _params(query: bytes, names: frozenset[str]) -> dict[str, str] | None:
    """The query's parameters (as Starlette splits them), if each is one of ``names`` and given once."""
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    found = dict(pairs)
    return found if len(found) == len(pairs) and found.keys() <= names else None


def _moment(text: str | None) -> int | None | bool:
    """Epoch seconds of a "YYYY-MM-DDTHH:MM:SSZ" moment, None if absent, False if another form."""
    if text is None:
        return None
    if not _MOMENT.fullmatch(text):
        return False
    try:
        return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
    except ValueError:
        return False


def usage_params(query: bytes) -> tuple[str, int | None, int | None, int] | None:
    """granularity, from, to (epoch seconds) and limit of a usage read, or None."""
    found = _params(query, frozenset(("granularity", "from", "to", "limit")))
    if found is None:
        return None
    granularity = found.get("granularity", "day")
    limit = found.get("limit", "1000")
    start, end = _moment(found.get("from")), _moment(found.get("to"))
    if (granularity not in ("hour", "day") or not _USAGE_LIMIT.fullmatch(limit) or int(limit) > 10_000
            or start is False or end is False):
        return None
    return granularity, start, end, int(limit)  # type: ignore[return-value]


def session_params(query: bytes) -> tuple[bool | None, str | None, int] | None:
    """active, cursor and limit of a sessions read, or None."""
    found = _params(query, frozenset(("active", "cursor", "limit")))
    if found is None:
        return None
    active = found.get("active")
    cursor = found.get("cursor")
    limit = found.get("limit", "100")
    if (active not in (None, "true", "false") or (cursor is not None and not _CURSOR.fullmatch(cursor))
            or not _SESSIONS_LIMIT.fullmatch(limit) or int(limit) > 500):
        return None
    return (None if active is None else active == "true"), cursor, int(limit)


def usage(engine: Engine, account_id: str, granularity: str, start: int | None, end: int | None,
          limit: int) -> dict[str, Any]:
    """UsageOut's JSON values."""
    rows = queries.usage(engine, account_id, granularity, start, end, limit)
    return {"account_id": account_id, "granularity": granularity, "buckets": [
        {"start": iso(r["bucket_start"]), "upload_bytes": r["upload_bytes"], "download_bytes": r["download_bytes"],
         "bands": r["bands"]} for r in rows]}


def sessions(engine: Engine, account_id: str, active: bool | None, cursor: str | None, limit: int) -> dict[str, Any]:
    """SessionPage's JSON values."""
    rows = queries.sessions(engine, account_id, active=active, before=cursor, limit=limit)
    return {"items": [
        {"id": r["id"], "nas_id": r["nas_id"], "acct_session_id": r["acct_session_id"], "username": r["username"],
         "started_at": iso(r["started_at"]), "updated_at": iso(r["updated_at"]), "stopped_at": iso(r["stopped_at"]),
         "upload_bytes": r["upload_bytes"], "download_bytes": r["download_bytes"], "charge": r["amount"],
         "currency": r["currency"], "framed_ip": r["framed_ip"], "terminate_cause": r["terminate_cause"]}
        for r in rows], "next_cursor": next_cursor(rows, limit)}
