"""Two sites on one machine, driven through their RADIUS ports and APIs: the standby converges
under load, a cut link heals by itself, and the standby refuses to rate, answer or write."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from bench.loadgen import run_load
from bench.workload import build_sessions
from tests.conftest import service
from tests.e2e.product import radclient, wait_until

from .pair import SECRET, balances, converged, expected_charge, flatten, send, sessions, site, start_pair

pytestmark = pytest.mark.e2e


def test_standby_converges_under_load_and_holds_the_same_chain(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(30)]
    pair = start_pair(tmp_path, users)
    try:
        load = sessions(users, "L", rng, interims=4)
        # Background load: 1,500 more records from subscribers without an account (recorded
        # and replicated, not priced), paced by the benchmark's BNG simulator while radclient runs.
        results = []
        background = threading.Thread(target=lambda: results.append(asyncio.run(run_load(
            "127.0.0.1", pair.a.radius_port, SECRET, build_sessions(300, 3, seed=seed, tag="BG"), inflight=8,
            rate=300, timeout=3.0))))
        background.start()
        send(pair.a, flatten(load))
        background.join()
        assert results[0].acknowledged == results[0].sent == 1500
        head = converged(pair, timeout=60)
        expected = expected_charge(load)
        wait_until(lambda: balances(pair.a, pair.accounts) == expected, timeout=30)
        wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=30)
        a, b = site(pair.a), site(pair.b)
        assert (a["role"], b["role"]) == ("active", "standby")
        assert b["replication"]["lag_positions"] == 0 and head == b["head_position"]
        assert head > 1500
        # The standby's own `audit verify` reproduces the active's head hash independently.
        verified = pair.b.cli("audit", "verify")
        assert verified.returncode == 0 and f"head hash {a['head_hash']}" in verified.stdout
        # A standby does not answer RADIUS (the BNG keeps its records for the active site) ...
        late = radclient(pair.b.radius_port, SECRET, sessions(["user0"], "X", rng)[0][:1], retries=1)
        assert late.returncode != 0
        # ... and refuses API writes that would diverge from the active's log.
        refused = pair.b.post("/v1/plans", {"name": "x", "currency": "USD", "monthly_fee": "1",
                                            "price_per_gb": "1"})
        assert refused.status_code == 503
        metrics = pair.b.get("/metrics").text
        assert "wispgate_replication_lag_positions 0.0" in metrics
    finally:
        pair.stop()


def test_cut_link_heals_by_itself(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(10)]
    pair = start_pair(tmp_path, users)
    try:
        pair.to_a.cut()  # the standby's shipping connection is refused
        load = sessions(users, "C", rng)
        sender = threading.Thread(target=send, args=(pair.a, flatten(load)))
        sender.start()
        sender.join()
        # Acknowledged is durable, not yet rated: the active's ledger moves ahead once its rater
        # has gathered and rated them (the standby's cannot, its link is cut).
        wait_until(lambda: site(pair.a)["head_position"] > site(pair.b)["head_position"], timeout=20)
        # The standby knows how long it has not held the active's head.
        wait_until(lambda: site(pair.b)["replication"]["lag_seconds"] >= 3, timeout=20)
        assert site(pair.b)["serving_as"] == "standby"  # no automatic promotion unless configured
        pair.to_a.heal()
        converged(pair)
        expected = expected_charge(load)
        wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=30)
    finally:
        pair.stop()


@pytest.fixture
def second_pg_database() -> Iterator[str]:
    """Another fresh PostgreSQL database: the second site's."""
    dsn = service("WISPGATE_TEST_PG_DSN")
    name = f"wg_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_sites_converge_and_promote(tmp_path: Path, pg_database: str, second_pg_database: str) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(10)]
    pair = start_pair(tmp_path, users, urls=(pg_database, second_pg_database))
    try:
        load = sessions(users, "PG", rng)
        send(pair.a, flatten(load))
        converged(pair)
        expected = expected_charge(load)
        wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=30)
        # Same ids and bytes in both databases.
        with psycopg.connect(pg_database) as a, psycopg.connect(second_pg_database) as b:
            query = "SELECT notification_id, originator_id, originator_version, topic, state FROM ledger_events " \
                    "ORDER BY notification_id"
            assert a.execute(query).fetchall() == b.execute(query).fetchall()
        # Promotion on PostgreSQL: B's sequence continues after the replicated ids.
        pair.a.kill()
        assert pair.b.post("/v1/site/promote", {}).json()["epoch"] == 2
        wait_until(lambda: site(pair.b)["serving_as"] == "active")
        more = sessions(users, "PG2", rng, start=1_795_100_000)
        send(pair.b, flatten(more))
        expected = {u: expected[u] + expected_charge(more)[u] for u in users}
        wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=30)
        assert pair.b.get("/v1/audit/verify").json()["ok"]
    finally:
        pair.stop()
