"""The distributed wiring chains the ledger log too: the relay links every event the raters
write, and `GET /v1/audit/verify` on an api node verifies the chain up to the head."""

from __future__ import annotations

import pytest

from bench.workload import build_sessions
from tests.e2e.product import wait_until

from .cluster import Cluster
from .conftest import SECRET
from .faults import drive

pytestmark = pytest.mark.e2e


def test_relay_chains_the_ledger_log_and_the_api_verifies_it(cluster: Cluster) -> None:
    sessions = build_sessions(10, 3, seed=11, tag="chain", first=900_000)
    cluster.open_accounts([s.username for s in sessions])
    drive(cluster, SECRET, sessions, rate=500)
    cluster.wait_settled(timeout=180)

    def verified() -> dict[str, object] | None:
        with cluster.client() as client:
            verdict: dict[str, object] = client.get("/v1/audit/verify").json()
        return verdict if verdict.get("ok") and verdict.get("unchained") == 0 else None

    verdict = wait_until(verified, timeout=30, interval=0.5)
    assert int(str(verdict["head_position"])) > 10 * 5
