"""Shared fixtures. Every ledger/projection test runs on SQLite and on PostgreSQL (the real
server that `make test` starts); a missing service is a failure, never a skip."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from api.bootstrap import Runtime, build_runtime
from api.settings import Settings


def service(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run the suite with `make test`, which starts the services")
    return value


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped afterwards."""
    dsn = service("WISPGATE_TEST_PG_DSN")
    name = f"wg_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(dsn)
    yield urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for the embedded applications on each backing store."""
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "var")
    database_url = request.getfixturevalue("pg_database")
    return Settings(data_dir=tmp_path / "var", database_url=database_url)


@pytest.fixture
def runtime(store_settings: Settings) -> Iterator[Runtime]:
    """Applications without background stages: tests drive the stages with `drain`."""
    rt = build_runtime(store_settings)
    yield rt
    rt.close()
