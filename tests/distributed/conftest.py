"""Fixtures of the distributed-mode tests: a fresh database, topics of their own, the roles
as processes, and a second database for rebuilding the read models from zero."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from kafka import KafkaAdminClient

from tests.conftest import service

from .cluster import Cluster

SECRET = "distributed-secret"
PRICE = Decimal("0.29")


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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The five roles on a fresh database and topics, shared by the tests of a module (starting
    them is most of a test's time on a small machine); each test opens its own accounts and
    sessions and checks those, and the read models as a whole."""
    dsn = service("WISPGATE_TEST_PG_DSN")
    bootstrap = service("WISPGATE_TEST_KAFKA")
    database = f"wg_dist_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    prefix = f"wgtest-{uuid.uuid4().hex[:10]}"
    running = Cluster(database_url=urlunsplit(urlsplit(dsn)._replace(path=f"/{database}")), bootstrap=bootstrap,
                      prefix=prefix, log_dir=tmp_path_factory.mktemp("distributed"))
    try:
        running.start_all()
        running.provision_site(SECRET, str(PRICE))
        yield running
    finally:
        running.stop_all()
        with contextlib.suppress(Exception):  # cleanup only; the broker may be restarting
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
            admin.delete_topics([f"{prefix}.accounting", f"{prefix}.ledger"], timeout_ms=10000)
            admin.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
