"""The distributed mode as processes (`wispgate radius | rater | relay | projector | api`) on
the real broker and database, and the faults it survives. Seeded: the seed is printed, and
WISPGATE_FAULT_SEED=<seed> replays the same schedule.

After each load: every acknowledged record is rated exactly once (balances through the API
equal an independent computation from what the NAS side saw acknowledged, and the ledger
holds one RecordApplied per record), and every read model equals a rebuild from position 0.

The tests share one cluster (see conftest.cluster) and run in this order; each opens its own
accounts and sessions."""

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

from bench.loadgen import LoadResult
from bench.workload import Session, build_sessions
from tests.e2e.product import wait_until

from .checks import applied_records, assert_read_models_equal_rebuild, expected_balances
from .cluster import Cluster
from .conftest import PRICE, SECRET
from .faults import AckLog, drive, kill_and_restart

pytestmark = pytest.mark.kafka

SERVICES = Path(__file__).resolve().parents[1] / "services"


def seed() -> int:
    value = int(os.environ.get("WISPGATE_FAULT_SEED") or random.SystemRandom().randrange(10**6))
    print(f"fault seed: {value} (replay with WISPGATE_FAULT_SEED={value})", flush=True)
    return value


def phase(what: str) -> None:
    print(f"{time.strftime('%X')} {what}", flush=True)


def subscribers(cluster: Cluster, count: int, first: int, tag: str,
                chosen: int) -> tuple[list[Session], dict[str, str]]:
    """Sessions (Start, 6 Interims, Stop) of ``count`` new subscribers, with their accounts."""
    sessions = build_sessions(count, 6, seed=chosen, tag=f"{tag}{chosen}", first=first)
    accounts = cluster.open_accounts([s.username for s in sessions])
    phase(f"{count} accounts opened; load starts")
    return sessions, accounts


def verify(cluster: Cluster, sessions: list[Session], accounts: dict[str, str], load: LoadResult,
           rebuild_database: str) -> None:
    phase("load done; waiting until rated and projected")
    cluster.wait_settled(timeout=180)
    phase("settled; checking balances, records, rebuild")
    expected = expected_balances(sessions, load, PRICE)
    with cluster.client() as client:
        for username, account_id in accounts.items():
            got = client.get(f"/v1/accounts/{account_id}/balance").json()
            assert Decimal(got["balance_exact"]) == expected[username], f"{username}: {got}"
    records = sum(len(s.packets) for s in sessions)
    assert load.acknowledged == records
    assert applied_records(cluster.database_url, cluster.nas_id, sessions) == records, \
        "an acknowledged record was lost or rated twice"
    assert_read_models_equal_rebuild(cluster.database_url, rebuild_database)
    cluster.assert_running()
    phase("verified")


def test_records_flow_from_radius_to_the_balance_api(cluster: Cluster, rebuild_database: str) -> None:
    sessions, accounts = subscribers(cluster, 20, 0, "flow", 7)
    load = drive(cluster, SECRET, sessions, rate=1000)
    verify(cluster, sessions, accounts, load, rebuild_database)


def test_enforcer_role_disconnects_once_when_prepaid_credit_runs_out(cluster: Cluster) -> None:
    """`wispgate enforcer` x2 (one acts, the other waits): a prepaid subscriber whose usage,
    rated from the accounting topic, passes the top-up gets one Disconnect-Request at its NAS;
    a second top-up lifts it."""
    from adapters.kafka.accounting_topic import AccountingTopic
    from domain.accounting import AccountingRecord, StatusType
    from tests.test_enforcement import DISCONNECT_REQUEST, NasStandIn

    nas = NasStandIn(host="127.0.0.2")  # a NAS of its own: the CoA goes to its address
    producer = AccountingTopic(cluster.bootstrap, f"{cluster.prefix}.accounting")
    try:
        cluster.start("enforcer")
        cluster.start("enforcer", name="enforcer2")
        registered = cluster.post("/v1/nas", {"name": "bng-coa", "address": "127.0.0.2", "secret": "coa-secret",
                                              "vendor": "mikrotik", "coa_port": nas.port})
        assert registered.status_code == 201, registered.text
        plan = cluster.post("/v1/plans", {"name": "Prepaid", "currency": "USD", "monthly_fee": "0.00",
                                          "price_per_gb": "1.00", "payment_model": "prepaid"}).json()["id"]
        account = cluster.post("/v1/accounts", {"name": "pp", "plan_id": plan, "usernames": ["prepaid1"],
                                              "opened_at": "2023-01-01T00:00:00Z"}).json()["id"]
        with cluster.client() as client:
            paid = client.post(f"/v1/accounts/{account}/payments", json={"amount": "5.00", "currency": "USD"},
                               headers={"Idempotency-Key": "dist-topup-0001"})
            assert paid.status_code == 201, paid.text
            now = int(time.time())
            producer.append([AccountingRecord(
                nas_id=registered.json()["id"], status=StatusType.INTERIM, event_time=now, received_at=now,
                event_timestamp_sent=True, acct_session_id="PP1", username="prepaid1", session_time=600,
                output_octets=6 * 10**9, framed_ip="100.64.7.7")])

            def enforcement() -> object:
                return client.get(f"/v1/accounts/{account}").json()["enforcement"]

            deadline = time.monotonic() + 60
            while not (nas.received and enforcement()):
                assert time.monotonic() < deadline, "no Disconnect-Request within 60 s"
                time.sleep(0.2)
            assert enforcement()["action"] == "block"
            time.sleep(2)  # the waiting enforcer must not act too
            assert [code for code, _ in nas.received] == [DISCONNECT_REQUEST]
            assert b"PP1" in nas.received[0][1]
            client.post(f"/v1/accounts/{account}/payments", json={"amount": "10.00", "currency": "USD"},
                        headers={"Idempotency-Key": "dist-topup-0002"})
            deadline = time.monotonic() + 60
            while enforcement() is not None:
                assert time.monotonic() < deadline, "the block was not lifted within 60 s"
                time.sleep(0.2)
    finally:
        cluster.stop("enforcer")
        cluster.stop("enforcer2")
        producer.close()
        nas.close()


def test_sigkill_of_any_role_under_load_loses_and_doubles_nothing(cluster: Cluster, rebuild_database: str) -> None:
    chosen = seed()
    sessions, accounts = subscribers(cluster, 60, 1000, "kill", chosen)
    chaos = kill_and_restart(cluster, chosen, ["radius", "rater", "relay", "projector"], kills=6)
    load = drive(cluster, SECRET, sessions, rate=50, chaos=chaos)
    verify(cluster, sessions, accounts, load, rebuild_database)


def test_second_rater_joins_and_first_leaves_mid_load(cluster: Cluster, rebuild_database: str) -> None:
    """Rebalance twice while records flow: a second rater takes half of the partitions over
    from the first, then the first is SIGKILLed and the second takes everything."""
    chosen = seed()
    sessions, accounts = subscribers(cluster, 60, 2000, "rebalance", chosen)
    rng = random.Random(chosen)
    # First part (Start and an Interim of every session) with one rater; the second part
    # starts once the second rater's process is up, so both rebalances fall inside it.
    first = drive(cluster, SECRET, [replace(s, packets=s.packets[:2]) for s in sessions], rate=200)
    cluster.start("rater", name="rater-2")
    cluster.wait_for_log("rater-2", "WISPGate rater")
    rebalances: list[str] = []

    def rebalance(done: threading.Event) -> None:
        cluster.wait_for_log("rater-2", r"partitions assigned: \[\d, \d\]")  # half, by the range assignor
        rebalances.append("split" if not done.is_set() else "split after the load")
        done.wait(rng.uniform(0.5, 2.0))
        cluster.kill("rater")
        cluster.wait_for_log("rater-2", r"partitions assigned: \[0, 1, 2, 3\]")
        rebalances.append("taken over" if not done.is_set() else "taken over after the load")

    second = drive(cluster, SECRET, [replace(s, packets=s.packets[2:]) for s in sessions], rate=40,
                   chaos=rebalance)
    phase(f"rebalances: {rebalances}")
    assert rebalances[0] == "split", "the load ended before the second rater took its partitions"
    assert first.failed == 0
    second.acknowledged += first.acknowledged
    verify(cluster, sessions, accounts, second, rebuild_database)
    # The roles the later tests expect: one rater named "rater".
    cluster.stop("rater-2")
    cluster.start("rater")


def test_two_relays_one_leads_and_the_other_takes_over_when_it_dies(cluster: Cluster,
                                                                   rebuild_database: str) -> None:
    """Several relays may run: exactly one publishes the ledger log and runs the site
    controller (which chains it), each under a PostgreSQL advisory lock; the others wait. The
    leader is SIGKILLed under load: the other takes both over, and nothing is lost, doubled,
    unpublished or unchained."""
    chosen = seed()
    sessions, accounts = subscribers(cluster, 100, 5000, "relays", chosen)  # 800 records, ~4 s
    cluster.start("relay", name="relay-2")
    cluster.wait_for_log("relay-2", r"WISPGate relay: ledger")
    killed: list[str] = []

    def kill_leader(done: threading.Event) -> None:
        done.wait(random.Random(chosen).uniform(1.0, 2.5))
        cluster.wait_for_log("relay", r"is the active relay")  # the first relay started leads
        assert "is the active relay" not in (cluster.log_dir / "relay-2.log").read_text()
        cluster.kill("relay")
        killed.append("during the load" if not done.is_set() else "after the load")
        phase(f"leading relay killed {killed[0]}")

    load = drive(cluster, SECRET, sessions, rate=200, chaos=kill_leader)
    assert killed == ["during the load"], killed
    cluster.wait_for_log("relay-2", r"is the active relay")
    cluster.wait_for_log("relay-2", r"site \S+ is active")  # its site controller leads too
    verify(cluster, sessions, accounts, load, rebuild_database)

    def chained() -> dict[str, object] | None:
        with cluster.client() as client:
            verdict: dict[str, object] = client.get("/v1/audit/verify").json()
        return verdict if verdict.get("ok") and verdict.get("unchained") == 0 else None

    verdict = wait_until(chained, timeout=60, interval=0.5)
    assert int(str(verdict["head_position"])) >= sum(len(s.packets) for s in sessions)
    # The roles the later tests expect: one relay named "relay".
    cluster.stop("relay-2")
    cluster.start("relay")


@pytest.mark.disruptive
def test_kafka_broker_restart_under_load(cluster: Cluster, rebuild_database: str) -> None:
    """Restarts the shared test broker: other Kafka tests running meanwhile may fail."""
    chosen = seed()
    sessions, accounts = subscribers(cluster, 60, 3000, "broker", chosen)
    acks = AckLog()
    outage: list[float] = []
    ensure: list[subprocess.Popen[bytes]] = []

    def restart_broker(done: threading.Event) -> None:
        done.wait(random.Random(chosen).uniform(1.0, 3.0))
        phase("stopping the broker")
        # --require: fail (not pass vacuously) when this checkout did not start the broker.
        subprocess.run([str(SERVICES / "stop.sh"), "--require"], check=True, timeout=60)
        outage.append(time.monotonic())
        time.sleep(3)
        outage.append(time.monotonic())
        phase("starting the broker")
        # ensure.sh also checks everything else and may wait for another run's lock: the
        # load itself shows when the broker is back; ensure.sh is awaited after it.
        # Output to a file, not a pipe: the broker's launcher shell keeps stderr open.
        with open(cluster.log_dir / "ensure.log", "ab") as log:
            ensure.append(subprocess.Popen([str(SERVICES / "ensure.sh")], stdout=log, stderr=log))

    load = drive(cluster, SECRET, sessions, rate=50, chaos=restart_broker, acks=acks)
    assert ensure[0].wait(timeout=300) == 0, (cluster.log_dir / "ensure.log").read_text()
    phase("load done and ensure.sh finished")
    # While the log was unavailable the adapter answered nothing (1 s grace for in-flight acks).
    assert acks.between(outage[0] + 1.0, outage[1]) == 0
    assert acks.between(outage[1], time.monotonic()) > 0, "the adapter never recovered"
    verify(cluster, sessions, accounts, load, rebuild_database)


@pytest.mark.disruptive
def test_postgres_restart_under_load(cluster: Cluster, rebuild_database: str) -> None:
    """Restarts the machine's PostgreSQL cluster (a few seconds): other tests running at that
    moment may fail."""
    chosen = seed()
    sessions, accounts = subscribers(cluster, 60, 4000, "pg", chosen)

    def restart_postgres(done: threading.Event) -> None:
        done.wait(random.Random(chosen).uniform(1.0, 3.0))
        phase("restarting PostgreSQL")
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"],
                       check=True, timeout=120)

    load = drive(cluster, SECRET, sessions, rate=50, chaos=restart_postgres)
    verify(cluster, sessions, accounts, load, rebuild_database)
