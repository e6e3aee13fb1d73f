"""A distributed site (the five roles of tests/distributed/cluster.py on a database and topic
prefix of its own) with the interface of tests/e2e/product.Product, so the two-site helpers of
pair.py drive it like a `wispgate serve` site."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from kafka import KafkaAdminClient

from tests.conftest import service
from tests.distributed.cluster import Cluster
from tests.e2e.product import WISPGATE, ApiCalls


class ClusterSite(ApiCalls):
    """Product-like: start/stop/kill the whole site, its RADIUS port, API and CLI."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.token = ""

    @property
    def data_dir(self) -> Path:
        return self.cluster.log_dir

    @property
    def database_url(self) -> str:
        return self.cluster.database_url

    @property
    def radius_port(self) -> int:
        return self.cluster.radius_port

    @property
    def api_port(self) -> int:
        return self.cluster.api_port

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def extra_env(self) -> dict[str, str]:
        return self.cluster.extra_env

    @extra_env.setter
    def extra_env(self, values: dict[str, str]) -> None:
        self.cluster.extra_env = values

    def start(self) -> None:
        self.cluster.start_all()

    def stop(self) -> None:
        self.cluster.stop_all()

    def kill(self) -> None:
        """SIGKILL of every role: the whole site is gone at once."""
        for name in list(self.cluster.processes):
            self.cluster.kill(name)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WISPGATE, *args], env=self.cluster.env, capture_output=True, text=True,
                              timeout=60, check=False)

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token or self.token}"},
                            timeout=15)



@contextlib.contextmanager
def distributed_site(log_dir: Path, partitions: int = 2) -> Iterator[ClusterSite]:
    """A not yet started distributed site on a fresh database and topic prefix; both are
    removed afterwards."""
    dsn = service("WISPGATE_TEST_PG_DSN")
    bootstrap = service("WISPGATE_TEST_KAFKA")
    database = f"wg_site_{uuid.uuid4().hex[:10]}"
    prefix = f"wgsite-{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(database_url=urlunsplit(urlsplit(dsn)._replace(path=f"/{database}")), bootstrap=bootstrap,
                      prefix=prefix, log_dir=log_dir, partitions=partitions)
    try:
        yield ClusterSite(cluster)
    finally:
        cluster.stop_all()
        with contextlib.suppress(Exception):  # cleanup only
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
            admin.delete_topics([f"{prefix}.accounting", f"{prefix}.ledger"], timeout_ms=10000)
            admin.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
