"""Fixtures of the distributed-mode tests: a fresh database, topics of their own, the roles
as processes, and a second database for rebuilding the read models from zero."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from kafka import KafkaAdminClient

from tests.conftest import service

from .cluster import Cluster


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "disruptive: restarts a shared service (Kafka broker or PostgreSQL); other tests "
                   "running at the same moment may fail")


@pytest.fixture
def rebuild_database() -> Iterator[str]:
    """A second fresh database, for a rebuild of the read models from position 0."""
    dsn = service("WISPGATE_TEST_PG_DSN")
    name = f"wg_rebuild_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def cluster(pg_database: str, tmp_path: Path) -> Iterator[Cluster]:
    bootstrap = service("WISPGATE_TEST_KAFKA")
    prefix = f"wgtest-{uuid.uuid4().hex[:10]}"
    running = Cluster(database_url=pg_database, bootstrap=bootstrap, prefix=prefix, log_dir=tmp_path)
    yield running
    running.stop_all()
    if os.environ.get("WISPGATE_KEEP_TOPICS") != "1":
        with contextlib.suppress(Exception):  # cleanup only; the broker may be restarting
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
            admin.delete_topics([f"{prefix}.accounting", f"{prefix}.ledger"], timeout_ms=10000)
            admin.close()
