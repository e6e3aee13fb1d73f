"""Persistence wiring: the eventsourcing environment for each application and the
SQLAlchemy engine for the read models, on SQLite files or PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import Engine, create_engine, event

# The ledger's aggregate cache in the processes that write it (serve, its rater child): cached
# aggregates are fast-forwarded with newer events on each read, so another writer is seen.
LEDGER_CACHE = {"AGGREGATE_CACHE_MAXSIZE": "20000"}


def eventstore_env(app_name: str, *, data_dir: Path, database_url: str) -> dict[str, str]:
    """Environment for an eventsourcing application named ``app_name``."""
    if database_url.startswith(("postgresql://", "postgres://")):
        url = urlsplit(database_url)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/"),
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or ""),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_CONN_MAX_AGE": "600",
            # No ping per checkout (a round trip per transaction, ~8 % of a rater's time): a
            # connection broken by a server restart fails its statement, is discarded by the
            # pool, and the recorder (or the stage) retries on a new one.
            "POSTGRES_PRE_PING": "n",
            "POSTGRES_LOCK_TIMEOUT": "5",
        }
    data_dir.mkdir(parents=True, exist_ok=True)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(data_dir / f"{app_name.lower()}.db"),
        "SQLITE_LOCK_TIMEOUT": "30",
    }


def read_model_engine(*, data_dir: Path, database_url: str) -> Engine:
    if database_url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
        return create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{data_dir / 'readmodels.db'}", connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # read models are rebuildable from the log
        cursor.close()

    return engine


SCHEMA_LOCK = 0x77697370  # advisory lock key ("wisp") held while a process creates its tables
_schema_guard = threading.RLock()
_schema_depth = 0


@contextmanager
def schema_lock(database_url: str | None) -> Iterator[None]:
    """Serialise table creation on a PostgreSQL store: processes starting together on an empty
    database (the distributed roles, or a `wispgate token create` run while they start) race on
    CREATE TABLE, whose IF NOT EXISTS is not safe against a concurrent create ("tuple
    concurrently updated", duplicate keys in the catalogue). Re-entrant within a process (a
    role holds it around building its runtime, which takes it too); nothing on SQLite."""
    global _schema_depth
    if not database_url or not database_url.startswith(("postgresql:", "postgres:")):
        yield
        return
    import psycopg

    with _schema_guard:
        if _schema_depth:
            _schema_depth += 1
            try:
                yield
            finally:
                _schema_depth -= 1
            return
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
            _schema_depth = 1
            try:
                yield
            finally:
                _schema_depth = 0
                conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))

