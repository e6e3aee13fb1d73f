"""The distributed pipeline as processes: radius -> Kafka -> rater -> PostgreSQL ledger ->
relay -> ledger topic -> projector -> read models -> api."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from bench.loadgen import run_load
from bench.workload import build_sessions

from .checks import applied_records, assert_read_models_equal_rebuild, expected_balances
from .cluster import Cluster

pytestmark = pytest.mark.kafka

SECRET = "distributed-secret"
PRICE = Decimal("0.37")


def test_records_flow_from_radius_to_the_balance_api(cluster: Cluster, rebuild_database: str) -> None:
    cluster.start_all()
    sessions = build_sessions(40, 3, seed=11, tag="flow")
    accounts = cluster.provision(SECRET, str(PRICE), [s.username for s in sessions])
    load = asyncio.run(run_load("127.0.0.1", cluster.radius_port, SECRET, sessions, inflight=16,
                                timeout=1.0, retries=30))
    cluster.wait_settled()
    expected = expected_balances(sessions, load, PRICE)
    for username, balance in expected.items():
        got = cluster.get(f"/v1/accounts/{accounts[username]}/balance").json()
        assert Decimal(got["balance_exact"]) == balance, username
    assert applied_records(cluster.database_url) == load.acknowledged == 40 * 5
    assert_read_models_equal_rebuild(cluster.database_url, rebuild_database)
