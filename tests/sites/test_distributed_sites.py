"""Two sites where one is DISTRIBUTED (PostgreSQL + Kafka, the five roles as processes, a
database and topic prefix of its own) and the other a `wispgate serve` site: mixed pairs in
both directions, driven through their real RADIUS ports and APIs.

- a distributed standby converges with the active site under RADIUS load (same chain head,
  same balances), stays silent on RADIUS and refuses API writes; SIGKILL of the active site and
  promotion of the distributed standby: it answers RADIUS, rates and bills (invoice numbers
  unique), and the old site, back, is fenced and re-submits to the distributed site's API:
  nothing acknowledged lost, nothing charged twice;
- a split where the distributed site is the one fenced: its divergent tail set aside, its read
  models rebuilt, its raw records re-submitted from its Kafka accounting topic (its relay,
  which hosts the site controller, SIGKILLed in the middle of that, the link broken), and
  balances equal to a single-site run of the same records.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
from pathlib import Path

import pytest

from adapters.kafka.site import CHECKPOINT_EVERY
from bench.loadgen import run_load
from bench.workload import build_sessions
from tests.e2e.product import Product, radclient, wait_until

from .cluster_site import distributed_site
from .pair import (
    SECRET,
    balances,
    converged,
    expected_charge,
    flatten,
    send,
    sessions,
    single_site_balances,
    site,
    split,
    start_sites,
)
from .test_failover import merged, number, series

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]


def serve_site(tmp_path: Path, name: str) -> Product:
    product = Product(data_dir=tmp_path / name / "var")
    product.data_dir.mkdir(parents=True)
    return product


def test_distributed_standby_converges_then_takes_over(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(8)]
    with distributed_site(tmp_path / "b") as b:
        # B promotes itself after 5 s without the active site's heartbeat (WISPGATE_FAILOVER_AFTER).
        pair = start_sites(serve_site(tmp_path, "a"), b, users, urls=("", b.database_url), failover_after=5)
        try:
            # (1) Under RADIUS load the distributed standby holds the active's log and read models.
            load = sessions(users, "L", rng, interims=4)
            results = []
            background = threading.Thread(target=lambda: results.append(asyncio.run(run_load(
                "127.0.0.1", pair.a.radius_port, SECRET, build_sessions(100, 3, seed=seed, tag="BG"),
                inflight=8, rate=200, timeout=3.0))))
            background.start()
            send(pair.a, flatten(load))
            background.join()
            assert results[0].acknowledged == results[0].sent == 500
            head = converged(pair, timeout=90)
            expected = expected_charge(load)
            wait_until(lambda: balances(pair.a, pair.accounts) == expected, timeout=30)
            wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=60)
            status = site(pair.b)
            assert (status["role"], status["serving_as"]) == ("standby", "standby")
            assert status["replication"]["lag_positions"] == 0 and head > 500
            # Silent on RADIUS (every radius node), and API writes refused, while standby.
            late = radclient(pair.b.radius_port, SECRET, sessions(["user0"], "X", rng)[0][:1], retries=1)
            assert late.returncode != 0
            refused = pair.b.post("/v1/plans", {"name": "x", "currency": "USD", "monthly_fee": "1",
                                                "price_per_gb": "1"})
            assert refused.status_code == 503
            first_run = pair.a.post("/v1/billing-runs", {"period": "2026-11", "at": "2026-12-01T00:00:10Z"})
            assert first_run.status_code == 200 and first_run.json()["issued"] == len(users), first_run.text
            converged(pair)
            expected = balances(pair.a, pair.accounts)  # usage and the invoices' fees
            wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=60)

            # (2) The link is cut, so what A acknowledges now never reaches B before A dies.
            pair.to_a.cut()
            unshipped = sessions(users[4:], "U", rng)
            send(pair.a, flatten(unshipped))
            pair.a.kill()
            # No heartbeat from A: B's site controller (in its relay) promotes the site by itself.
            wait_until(lambda: site(pair.b)["serving_as"] == "active", timeout=60)
            promoted = json.loads(pair.b.cli("site", "status", "--json").stdout)
            assert (promoted["role"], promoted["epoch"]) == ("active", 2), promoted
            assert promoted["reason"].startswith("automatic: no heartbeat"), promoted
            after = sessions(users, "B", rng, start=1_795_100_000)
            send(pair.b, flatten(after))  # the BNG's secondary server answers now, and rates
            wait_until(lambda: balances(pair.b, pair.accounts) == merged(expected, expected_charge(after)),
                       timeout=60)
            expected = merged(expected, expected_charge(after))
            repeat = pair.b.post("/v1/billing-runs", {"period": "2026-11", "at": "2026-12-01T00:00:10Z"}).json()
            assert (repeat["issued"], repeat["existing"]) == (0, len(users))
            second_run = pair.b.post("/v1/billing-runs", {"period": "2026-12", "at": "2027-01-01T00:00:10Z"})
            assert second_run.status_code == 200 and second_run.json()["issued"] == len(users), second_run.text
            assert number(second_run.json()["first_number"]) == 1  # B's own series, gapless
            assert series(second_run.json()["first_number"]) != series(first_run.json()["last_number"])

            # A comes back at epoch 1, is fenced, and re-submits what it had not shipped to B's
            # API, which queues it on B's accounting topic: charged once.
            billed = balances(pair.b, pair.accounts)  # with the 2026-12 invoices
            pair.to_a.heal()
            pair.a.start()
            wait_until(lambda: site(pair.a)["serving_as"] == "standby", timeout=30)
            expected = merged(billed, expected_charge(unshipped))
            wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=90)
            converged(pair, timeout=60)
            wait_until(lambda: balances(pair.a, pair.accounts) == expected, timeout=30)
            status = site(pair.a)
            assert status["epoch"] == 2 and status["replication"]["resubmission_pending_from"] is None
            numbers = [item["number"] for item in pair.b.get("/v1/invoices", params={"limit": 100}).json()["items"]]
            assert len(numbers) == 2 * len(users) and len(set(numbers)) == len(numbers)
            verified = pair.b.get("/v1/audit/verify").json()
            assert verified["ok"] and verified["head_hash"] == status["head_hash"]
            b.cluster.assert_running()
        finally:
            pair.stop()


def test_split_fences_the_distributed_site_and_resubmits_from_kafka(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(9)]
    with distributed_site(tmp_path / "a") as a:
        pair = start_sites(a, serve_site(tmp_path, "b"), users, urls=(a.database_url, ""), failover_after=2)
        try:
            before = sessions(users, "P", rng)
            send(pair.a, flatten(before))
            wait_until(lambda: balances(pair.a, pair.accounts) == expected_charge(before), timeout=60)
            converged(pair, timeout=60)
            time.sleep(2 * CHECKPOINT_EVERY)  # A notes where its raters stand in the shipped log
            # A accepts ~1,500 records alone: re-submitting them takes several requests.
            only_a, only_b, both = split(pair, users, rng, a_interims=500)
            expected = merged(expected_charge(before), expected_charge(only_a), expected_charge(only_b),
                              expected_charge(both))
            # A rates what it acknowledged before it learns of the split.
            wait_until(lambda: balances(pair.a, pair.accounts) == merged(
                expected_charge(before), expected_charge(only_a),
                expected_charge([packets[:3] for packets in both])), timeout=60)

            # A reaches B again, sees it active at a higher epoch and fences itself; its
            # re-submission (pieces of 500 records, 150-300 kB each) breaks the link after 250 kB,
            # and the relay hosting the site controller is SIGKILLed in the middle of it.
            pair.to_a.heal()
            pair.to_b.heal(budget=250_000)
            wait_until(lambda: pair.to_b.listener is None, timeout=90)
            assert site(pair.a)["replication"]["resubmission_pending_from"] is not None
            a.cluster.kill("relay")
            status = json.loads(pair.a.cli("site", "status", "--json").stdout)
            assert status["role"] == "standby" and status["resubmission_pending_from"] is not None, status
            pair.to_b.heal()
            a.cluster.start("relay")  # its controller resumes the re-submission from the noted offsets
            wait_until(lambda: site(pair.a)["serving_as"] == "standby", timeout=30)
            wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=90)
            converged(pair, timeout=60)
            # A's projectors rebuilt its read models from the common prefix and the pulled log.
            wait_until(lambda: balances(pair.a, pair.accounts) == expected, timeout=60)
            status = site(pair.a)
            assert status["epoch"] == site(pair.b)["epoch"] == 2
            assert status["divergent_events_set_aside"] > 0  # kept for audit, never merged
            assert status["replication"]["resubmission_pending_from"] is None
            # Re-submitted from the accounting topic: what A accepted during the split (its own
            # sessions and the first 3 packets of the shared ones), not what both sites already
            # held before it; once, although the first controller died in the middle of it.
            alone_at_a = len(flatten(only_a)) + 3 * len(both)
            resubmitted = re.findall(r"re-submitting (\d+) raw records", (a.data_dir / "relay.log").read_text())
            assert len(resubmitted) == 1, resubmitted  # one fence, whose plan survived the crash
            assert alone_at_a <= int(resubmitted[0]) < alone_at_a + len(flatten(before)), resubmitted
            # Only the restarted controller finished it, from the offsets noted after each piece.
            finished = re.findall(r"re-submitted (\d+) raw accounting", (a.data_dir / "relay.log").read_text())
            assert len(finished) == 1 and 0 < int(finished[0]) <= int(resubmitted[0]), (finished, resubmitted)
            late = radclient(pair.a.radius_port, SECRET, sessions(["user0"], "Y", rng)[0][:1], retries=1)
            assert late.returncode != 0  # fenced: silent on RADIUS
            a.cluster.assert_running()
        finally:
            pair.stop()
    alone = single_site_balances(tmp_path, users, flatten(before),
                                 flatten(only_a) + flatten([packets[:3] for packets in both]),
                                 flatten(only_b) + flatten(both))
    assert alone == expected
