"""What the fault tests check after the load: every acknowledged record rated exactly once
(balances against an independent computation, one RecordApplied event per record), and the
live read models equal to a rebuild from position 0."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text

from adapters.persistence import eventstore_env
from bench.loadgen import LoadResult
from bench.workload import Session
from domain.ids import session_id
from ledger import Ledger
from projections import ReadModelProjector
from projections import tables as t

GB = Decimal(10**9)


def sqlalchemy_url(database_url: str) -> str:
    return "postgresql+psycopg://" + database_url.split("://", 1)[1]


def expected_balances(sessions: list[Session], load: LoadResult, price_per_gb: Decimal) -> dict[str, Decimal]:
    """Username -> balance, from what the NAS side saw acknowledged: every packet of every
    session was acknowledged, so the usage is the last packet's cumulative counters."""
    assert load.failed == 0, f"{load.failed} requests were never acknowledged"
    balances = {}
    for session in sessions:
        last = load.last_acked[session.index]
        assert last == session.packets[-1]
        balances[session.username] = -(Decimal(last.upload + last.download) * price_per_gb / GB)
    return balances


def applied_records(database_url: str, nas_id: str, sessions: list[Session]) -> int:
    """RecordApplied events of these sessions in the ledger: one per distinct record rated."""
    ids = [session_id(nas_id, s.acct_session_id) for s in sessions]
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "select count(*) from ledger_events where topic like '%RecordApplied' "
                "and originator_id = any(:ids)"), {"ids": ids}).scalar() or 0)
    finally:
        engine.dispose()


def _rows(engine: Any) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    with engine.connect() as conn:
        for table in t.metadata.sorted_tables:
            if table is t.positions:
                continue
            out[table.name] = sorted(conn.execute(select(table)).all(), key=repr)
    return out


def assert_read_models_equal_rebuild(database_url: str, rebuild_url: str) -> None:
    """Project the whole ledger log into a fresh database and compare every table."""
    ledger = Ledger(env=eventstore_env("ledger", data_dir=Path("var"), database_url=database_url))
    live = create_engine(sqlalchemy_url(database_url))
    fresh = create_engine(sqlalchemy_url(rebuild_url))
    try:
        projector = ReadModelProjector(fresh, ledger.mapper.to_domain_event)
        projector.create_tables()
        position = 0
        while batch := ledger.recorder.select_notifications(start=position + 1, limit=5000):
            position = projector.process(batch)
        live_rows, rebuilt_rows = _rows(live), _rows(fresh)
        for name in live_rows:
            assert live_rows[name] == rebuilt_rows[name], f"read model {name} differs from a rebuild"
        assert sum(len(rows) for rows in live_rows.values()) > 0
    finally:
        ledger.close()
        live.dispose()
        fresh.dispose()
