"""Failover and split: SIGKILL of the active site and promotion of the standby lose no
acknowledged record and charge none twice; a split (both sites accept records) ends with the
old site fenced, its divergent events set aside and its raw records re-submitted, and the
balances of a single-site run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.e2e.product import wait_until

from .pair import (
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
