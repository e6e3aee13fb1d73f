"""Faults the distributed mode survives, against the real broker and database. Seeded: the
seed is printed, and WISPGATE_FAULT_SEED=<seed> replays the same schedule.

After each run: every acknowledged record is rated exactly once (balances equal an
independent computation from what the NAS side saw acknowledged, and the ledger holds one
RecordApplied per record), and every read model equals a rebuild from position 0."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from bench.workload import build_sessions

from .checks import applied_records, assert_read_models_equal_rebuild, expected_balances
from .cluster import Cluster
from .faults import AckLog, drive, kill_and_restart

pytestmark = pytest.mark.kafka

SECRET = "distributed-secret"
PRICE = Decimal("0.29")
SERVICES = Path(__file__).resolve().parents[1] / "services"


def seed() -> int:
    value = int(os.environ.get("WISPGATE_FAULT_SEED") or random.SystemRandom().randrange(10**6))
    print(f"fault seed: {value} (replay with WISPGATE_FAULT_SEED={value})", flush=True)
    return value


def verify(cluster: Cluster, sessions: list, load: object, rebuild_database: str) -> None:
    cluster.wait_settled(timeout=180)
    expected = expected_balances(sessions, load, PRICE)  # type: ignore[arg-type]
    with cluster.client() as client:
        for username, account_id in cluster.accounts.items():
            got = client.get(f"/v1/accounts/{account_id}/balance").json()
            assert Decimal(got["balance_exact"]) == expected[username], f"{username}: {got}"
    records = sum(len(s.packets) for s in sessions)
    assert load.acknowledged == records  # type: ignore[attr-defined]
    assert applied_records(cluster.database_url) == records, "a record was lost or rated twice"
    assert_read_models_equal_rebuild(cluster.database_url, rebuild_database)


def test_sigkill_of_any_role_under_load_loses_and_doubles_nothing(cluster: Cluster, rebuild_database: str) -> None:
    chosen = seed()
    cluster.start_all()
    sessions = build_sessions(240, 4, seed=chosen, tag=f"kill{chosen}")
    cluster.accounts = cluster.provision(SECRET, str(PRICE), [s.username for s in sessions])
    chaos = kill_and_restart(cluster, chosen, ["radius", "rater", "relay", "projector"], kills=8)
    load = drive(cluster, SECRET, sessions, rate=120, chaos=chaos)
    cluster.assert_running()
    verify(cluster, sessions, load, rebuild_database)


def test_second_rater_joins_and_first_leaves_mid_load(cluster: Cluster, rebuild_database: str) -> None:
    """Rebalance twice while records flow: a second rater takes half of the partitions over
    from the first, then the first is SIGKILLed and the second takes everything."""
    chosen = seed()
    cluster.start_all()
    sessions = build_sessions(200, 4, seed=chosen, tag=f"rebalance{chosen}")
    cluster.accounts = cluster.provision(SECRET, str(PRICE), [s.username for s in sessions])
    rng = random.Random(chosen)
    # First part: Start and two Interims of every session with one rater. The second part
    # starts once the second rater's process is up, so both rebalances fall inside it.
    first = drive(cluster, SECRET, [replace(s, packets=s.packets[:3]) for s in sessions], rate=200)
    cluster.start("rater", name="rater-2")
    cluster.wait_for_log("rater-2", "WISPGate rater")
    rebalances: list[str] = []

    def rebalance(done: threading.Event) -> None:
        cluster.wait_for_log("rater-2", "partitions assigned: [2, 3]")  # the range assignor's half
        rebalances.append("split" if not done.is_set() else "split after the load")
        done.wait(rng.uniform(0.5, 2.0))
        cluster.kill("rater")
        cluster.wait_for_log("rater-2", "partitions assigned: [0, 1, 2, 3]")
        rebalances.append("taken over" if not done.is_set() else "taken over after the load")

    second = drive(cluster, SECRET, [replace(s, packets=s.packets[3:]) for s in sessions], rate=80,
                   chaos=rebalance)
    print(f"rebalances: {rebalances}", flush=True)
    assert rebalances[0] == "split", "the load ended before the second rater took its partitions"
    assert first.failed == 0
    second.acknowledged += first.acknowledged
    verify(cluster, sessions, second, rebuild_database)


@pytest.mark.disruptive
def test_kafka_broker_restart_under_load(cluster: Cluster, rebuild_database: str) -> None:
    """Restarts the shared test broker: other Kafka tests running meanwhile may fail."""
    chosen = seed()
    cluster.start_all()
    sessions = build_sessions(160, 4, seed=chosen, tag=f"broker{chosen}")
    cluster.accounts = cluster.provision(SECRET, str(PRICE), [s.username for s in sessions])
    acks = AckLog()
    outage: list[float] = []

    def restart_broker(done: threading.Event) -> None:
        done.wait(random.Random(chosen).uniform(1.0, 3.0))
        subprocess.run([str(SERVICES / "stop.sh")], check=True, timeout=60)
        outage.append(time.monotonic())
        time.sleep(3)
        outage.append(time.monotonic())
        subprocess.run([str(SERVICES / "ensure.sh")], check=True, timeout=180, capture_output=True)

    load = drive(cluster, SECRET, sessions, rate=100, chaos=restart_broker, acks=acks)
    # While the log was unavailable the adapter answered nothing (1 s grace for in-flight acks).
    assert acks.between(outage[0] + 1.0, outage[1]) == 0
    assert acks.between(outage[1], time.monotonic()) > 0, "the adapter never recovered"
    cluster.assert_running()
    verify(cluster, sessions, load, rebuild_database)


@pytest.mark.disruptive
def test_postgres_restart_under_load(cluster: Cluster, rebuild_database: str) -> None:
    """Restarts the machine's PostgreSQL cluster (a few seconds): other tests running at that
    moment may fail."""
    chosen = seed()
    cluster.start_all()
    sessions = build_sessions(160, 4, seed=chosen, tag=f"pg{chosen}")
    cluster.accounts = cluster.provision(SECRET, str(PRICE), [s.username for s in sessions])

    def restart_postgres(done: threading.Event) -> None:
        done.wait(random.Random(chosen).uniform(1.0, 3.0))
        print("restarting PostgreSQL", flush=True)
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"],
                       check=True, timeout=120)

    load = drive(cluster, SECRET, sessions, rate=100, chaos=restart_postgres)
    cluster.assert_running()
    verify(cluster, sessions, load, rebuild_database)
