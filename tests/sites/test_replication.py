"""Two sites on one machine, driven through their RADIUS ports and APIs: the standby converges
under load, a cut link heals by itself, and the standby refuses to rate, answer or write."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

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
        send(pair.a, flatten(load))
        head = converged(pair)
        expected = expected_charge(load)
        wait_until(lambda: balances(pair.a, pair.accounts) == expected, timeout=30)
        wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=30)
        a, b = site(pair.a), site(pair.b)
        assert (a["role"], b["role"]) == ("active", "standby")
        assert b["replication"]["lag_positions"] == 0 and head == b["head_position"]
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
        assert site(pair.a)["head_position"] > site(pair.b)["head_position"]
        # The standby knows how long it has not held the active's head.
        wait_until(lambda: site(pair.b)["replication"]["lag_seconds"] >= 3, timeout=20)
        assert site(pair.b)["role"] == "standby"  # no automatic promotion unless configured
        pair.to_a.heal()
        converged(pair)
        expected = expected_charge(load)
        wait_until(lambda: balances(pair.b, pair.accounts) == expected, timeout=30)
    finally:
        pair.stop()
