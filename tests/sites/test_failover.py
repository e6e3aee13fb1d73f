"""Failover and split: SIGKILL of the active site and promotion of the standby lose no
acknowledged record and charge none twice; a split (both sites accept records) ends with the
old site fenced, its divergent events set aside and its raw records re-submitted, and the
balances of a single-site run."""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path

import pytest

from bench.loadgen import run_load
from bench.workload import build_sessions
from tests.e2e.product import wait_until

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
    start_pair,
)

pytestmark = pytest.mark.e2e


def merged(*charges: dict[str, object]) -> dict[str, object]:
    total: dict[str, object] = {}
    for charge in charges:
        for user, amount in charge.items():
            total[user] = total.get(user, 0) + amount  # type: ignore[operator]
    return total


def test_sigkill_active_then_promote_standby_loses_nothing_and_charges_once(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(8)]
    pair = start_pair(tmp_path, users)
    try:
        shipped = sessions(users[:4], "S", rng)
        send(pair.a, flatten(shipped))
        converged(pair)
        # The link is cut, so what A acknowledges now never reaches B before A dies.
        pair.to_a.cut()
        unshipped = sessions(users[4:], "U", rng)
        send(pair.a, flatten(unshipped))
        pair.a.kill()

        promoted = pair.b.cli("site", "promote")
        assert promoted.returncode == 0 and "active at epoch 2" in promoted.stdout, promoted.stdout
        wait_until(lambda: site(pair.b)["serving_as"] == "active")
        # The BNG fails over to its secondary server: site B answers now.
        after = sessions(users, "B", rng, start=1_795_100_000)
        send(pair.b, flatten(after))

        pair.to_a.heal()
        pair.a.start()  # comes back at epoch 1, learns of epoch 2: fenced
        wait_until(lambda: site(pair.a)["serving_as"] == "standby", timeout=30)
        expected = merged(expected_charge(shipped), expected_charge(unshipped), expected_charge(after))
        wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=60)
        converged(pair)
        assert balances(pair.a, pair.accounts) == expected
        status = site(pair.a)
        assert status["epoch"] == 2 and status["replication"]["resubmission_pending_from"] is None
        # B's chain is A's chain now; both verify.
        for product in (pair.a, pair.b):
            verified = product.get("/v1/audit/verify").json()
            assert verified["ok"] and verified["head_hash"] == status["head_hash"]

        # Failback by the same mechanism: A caught up, promoted at epoch 3; B fences itself.
        assert pair.a.post("/v1/site/promote", {}).json()["epoch"] == 3
        wait_until(lambda: (site(pair.a)["serving_as"], site(pair.b)["serving_as"]) == ("active", "standby"),
                   timeout=30)
        back = sessions(users[:2], "F", rng, start=1_795_200_000)
        send(pair.a, flatten(back))
        expected = merged(expected, expected_charge(back))
        wait_until(lambda: balances(pair.a, pair.accounts) == expected, timeout=30)
        converged(pair)
        assert site(pair.b)["epoch"] == 3 and site(pair.b)["divergent_events_set_aside"] == 0

        # Invoices and their series live in the replicated log: after a switchover the other
        # site neither re-issues a billed period nor reuses a number.
        first_run = pair.a.post("/v1/billing-runs", {"period": "2026-11", "at": "2026-12-01T00:00:10Z"})
        assert first_run.status_code == 200 and first_run.json()["issued"] == len(users), first_run.text
        converged(pair)
        assert pair.b.post("/v1/site/promote", {}).json()["epoch"] == 4
        wait_until(lambda: (site(pair.a)["serving_as"], site(pair.b)["serving_as"]) == ("standby", "active"),
                   timeout=30)
        repeat = pair.b.post("/v1/billing-runs", {"period": "2026-11", "at": "2026-12-01T00:00:10Z"}).json()
        assert (repeat["issued"], repeat["existing"]) == (0, len(users))
        second_run = pair.b.post("/v1/billing-runs", {"period": "2026-12", "at": "2027-01-01T00:00:10Z"})
        assert second_run.status_code == 200 and second_run.json()["issued"] == len(users), second_run.text
        assert number(second_run.json()["first_number"]) == 1  # B's own series, gapless
        assert series(second_run.json()["first_number"]) != series(first_run.json()["last_number"])
        converged(pair)
        listed = pair.a.get("/v1/invoices", params={"limit": 100}).json()["items"]
        numbers = [item["number"] for item in listed]
        assert len(numbers) == 2 * len(users) and len(set(numbers)) == len(numbers)
    finally:
        pair.stop()


def number(document: str) -> int:
    return int(document.rsplit("-", 1)[-1])


def series(document: str) -> str:
    return document.rsplit("-", 1)[0]


def test_split_ends_with_fencing_resubmission_and_single_site_balances(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(9)]
    pair = start_pair(tmp_path, users, failover_after=2)
    try:
        before = sessions(users, "P", rng)
        send(pair.a, flatten(before))
        converged(pair)
        only_a, only_b, both = split(pair, users, rng)
        divergent_head = site(pair.a)["head_position"]

        pair.to_a.heal()
        pair.to_b.heal()
        wait_until(lambda: site(pair.a)["serving_as"] == "standby", timeout=30)
        expected = merged(expected_charge(before), expected_charge(only_a), expected_charge(only_b),
                          expected_charge(both))
        wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=60)
        converged(pair)
        assert balances(pair.a, pair.accounts) == expected
        status = site(pair.a)
        assert status["epoch"] == site(pair.b)["epoch"] == 2
        assert status["divergent_events_set_aside"] > 0  # kept for audit, never merged
        assert divergent_head > 0
    finally:
        pair.stop()
    # The same records on one site, as if there had been no split.
    alone = single_site_balances(tmp_path, users, flatten(before),
                                 flatten(only_a) + flatten([packets[:3] for packets in both]),
                                 flatten(only_b) + flatten(both))
    assert alone == expected


def test_resubmission_broken_off_and_crashed_resumes_where_it_stopped(tmp_path: Path) -> None:
    """A fenced site re-submits its raw records in batches and notes durably after each one
    where to go on. Here the link breaks in the middle of the re-submission and the site is
    then SIGKILLed: after its restart it goes on from the noted position (not from the start,
    and not skipping anything), and the active site charges every record once."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(4)]
    pair = start_pair(tmp_path, users, failover_after=2)
    log_file = pair.a.data_dir.parent / f"serve-{pair.a.api_port}.log"
    try:
        before = sessions(users, "P", rng)
        send(pair.a, flatten(before))
        converged(pair)
        pair.to_a.cut()
        pair.to_b.cut()
        wait_until(lambda: site(pair.b)["serving_as"] == "active", timeout=30)
        # Cut off, A keeps accepting: 2,000 records of subscribers without an account first,
        # then priced sessions, so the priced ones are in the last batches re-submitted.
        loaded = asyncio.run(run_load("127.0.0.1", pair.a.radius_port, SECRET,
                                      build_sessions(400, 3, seed=seed, tag="RS"), inflight=16, timeout=3.0))
        assert loaded.acknowledged == loaded.sent == 2000
        only_a = sessions(users, "A", rng, start=1_795_050_000)
        send(pair.a, flatten(only_a))
        accepted = pair.a.get("/health").json()["checks"]["accounting_position"]

        # A reaches B again, sees it active at a higher epoch, fences itself and re-submits
        # (batches of 500 records, roughly 150-300 kB each): the link breaks after 400 kB.
        pair.to_b.heal(budget=400_000)
        wait_until(lambda: pair.to_b.listener is None, timeout=60)
        wait_until(lambda: site(pair.a)["replication"]["resubmission_pending_from"] is not None, timeout=30)
        pending = site(pair.a)["replication"]["resubmission_pending_from"]
        started = int(re.findall(r"re-submitting raw records from intake position (\d+)", log_file.read_text())[-1])
        assert started < pending <= accepted, (started, pending, accepted)  # stopped part-way
        assert "re-submitted" not in log_file.read_text().split("re-submitting raw records")[-1]
        pair.a.kill()
        status = pair.a.cli("site", "status", "--json")
        assert json.loads(status.stdout)["resubmission_pending_from"] == pending, status.stdout  # durable

        pair.to_b.heal()
        pair.to_a.heal()
        pair.a.start()
        expected = merged(expected_charge(before), expected_charge(only_a))
        wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=60)
        wait_until(lambda: site(pair.a)["replication"]["resubmission_pending_from"] is None, timeout=30)
        resumed = [int(n) for n in re.findall(r"re-submitted (\d+) raw accounting records", log_file.read_text())]
        assert resumed == [accepted - pending + 1], (resumed, accepted, pending)
        converged(pair, timeout=60)
        assert balances(pair.a, pair.accounts) == expected
    finally:
        pair.stop()
