"""Shared fixtures. Every ledger/projection test runs on SQLite and on PostgreSQL (the real
server that `make test` starts); a missing service is a failure, never a skip."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
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


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    """The HTTP API of ``runtime`` with its stages running, as an admin."""
    runtime.start_stages()
    token = "wg_" + secrets.token_urlsafe(16)
    runtime.ledger.issue_token(token=token, role="admin", account_id=None, label="test", issued_at=0)
    with TestClient(create_app(runtime)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {token}"
        yield test_client
