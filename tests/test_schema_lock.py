"""Processes that start together on an empty PostgreSQL database create the same tables at
once (the distributed roles, an operator's `wispgate token create` while they start). CREATE
TABLE IF NOT EXISTS is not safe against a concurrent create, so every runtime is built under
one advisory lock (`adapters.persistence.schema_lock`); the benchmark's two-rater column failed
with "tuple concurrently updated" from a `token create` before `build_runtime` took it."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from adapters.persistence import schema_lock
from tests.e2e.product import WISPGATE


def test_commands_started_together_on_an_empty_database_all_succeed(pg_database: str, tmp_path: Path) -> None:
    env = os.environ | {"WISPGATE_DATABASE_URL": pg_database, "WISPGATE_DATA_DIR": str(tmp_path)}
    commands = [subprocess.Popen([WISPGATE, "token", "create", "--role", "admin"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(6)]
    outcomes = [(c.wait(timeout=120), c.stdout.read() if c.stdout else "", c.stderr.read() if c.stderr else "")
                for c in commands]
    failed = [(code, err[-400:]) for code, _out, err in outcomes if code != 0]
    assert not failed, failed
    tokens = {out.strip().splitlines()[-1] for _code, out, _err in outcomes}
    assert len(tokens) == 6 and all(t.startswith("wg_") for t in tokens)


def test_the_lock_is_reentrant_within_a_thread_and_exclusive_between_threads(pg_database: str) -> None:
    order: list[str] = []

    def other_thread() -> None:
        with schema_lock(pg_database):
            order.append("other")

    with schema_lock(pg_database), schema_lock(pg_database):  # nested: no deadlock
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive()  # waits while this holds the lock
        order.append("first")
    thread.join(timeout=30)
    assert order == ["first", "other"]
