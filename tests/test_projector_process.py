"""`serve`'s live projector in a child process (adapters/projector_worker.py), on SQLite and
PostgreSQL: it projects exactly what a rebuild in this process gives, a child killed at random
moments (seeded, printed) is restarted with nothing lost or projected twice, and while the
site's gate is held (fencing) it does not project, even a child restarted meanwhile."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.followers import drain, rate_step
from adapters.projector_worker import ProjectorWorker
from api.bootstrap import Runtime
from api.logs import configure
from domain.plans import PlanTerms

from .support import record

T0 = 1_793_491_200  # 2026-11-01T00:00:00Z
GB = 10**9


@pytest.fixture
def worker(runtime: Runtime) -> Iterator[ProjectorWorker]:
    failures: list[str] = []
    child = ProjectorWorker(runtime.settings, on_position=runtime.projector._advanced,
                            on_fatal=failures.append, on_failed=failures.append, configure_logging=configure,
                            max_restarts=100)  # the tests kill it more often than serve tolerates
    runtime.gate.remote_followers.append(child)
    runtime.ledger.listeners.append(child.wake)
    assert child.start(timeout=90), "the projector process did not start"
    yield child
    child.close()
    assert failures == []


def head(runtime: Runtime) -> int:
    return runtime.ledger.recorder.max_notification_id() or 0


def projected(runtime: Runtime, timeout: float = 60.0) -> bool:
    """Whether the read models reach the ledger's head in time."""
    return runtime.projector.wait_for(head(runtime), timeout=timeout)


def kill(worker: ProjectorWorker) -> int:
    """SIGKILL the child; wait until its successor runs. Returns the dead child's pid."""
    assert worker.process is not None
    pid = worker.process.pid
    os.kill(pid, 9)
    deadline = time.monotonic() + 60
    while worker.process is None or worker.process.pid == pid or worker._conn is None:
        assert time.monotonic() < deadline, "the projector process was not restarted"
        time.sleep(0.05)
    return pid


def provision(runtime: Runtime, rng: random.Random, accounts: int) -> list[str]:
    ledger = runtime.ledger
    plan = ledger.create_plan(name="Home", terms=PlanTerms.parse("USD", "25", "0.45"), effective_from=0)
    users = [f"u{n}" for n in range(accounts)]
    for user in users:
        ledger.open_account(name=user, plan_id=plan.id, usernames=[user], opened_at=T0 - 86_400)
    return users


def sessions(rng: random.Random, users: list[str], count: int, tag: str) -> list:  # type: ignore[type-arg]
    records = []
    for n in range(count):
        start, user, up, down = T0 + rng.randrange(20 * 86_400), rng.choice(users), 0, 0
        at = start
        records.append(record("start", f"{tag}{n}", at=start, user=user))
        for _ in range(rng.randint(1, 4)):
            at += rng.randint(60, 3600)
            up, down = up + rng.randrange(GB), down + rng.randrange(4 * GB)
            records.append(record("interim", f"{tag}{n}", at=at, start=start, up=up, down=down, user=user))
        if rng.random() < 0.7:
            records.append(record("stop", f"{tag}{n}", at=at + 60, start=start, up=up, down=down, user=user))
    return records


def test_the_child_projects_what_a_rebuild_gives_though_killed_at_random(runtime: Runtime,
                                                                       worker: ProjectorWorker) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    users = provision(runtime, rng, 12)
    rate = rate_step(runtime.intake, runtime.ledger)
    kills = 0
    for round_ in range(6):
        records = sessions(rng, users, rng.randint(20, 60), f"r{round_}-")
        for offset in range(0, len(records), 25):
            runtime.intake.append(records[offset:offset + 25])
            drain(rate)  # wakes the child through the ledger's listeners
            if rng.random() < 0.25:
                time.sleep(rng.random() * 0.3)  # somewhere in the child's step, or between steps
                kill(worker)
                kills += 1
        if round_ == 2 and kills == 0:  # every seed kills at least once
            kill(worker)
            kills += 1
    assert projected(runtime), f"the read models did not catch up (seed {seed})"
    with runtime.gate.exclusive():  # the child paused: nothing moves while rows are read and rebuilt
        live = runtime.projector.table_rows()
        runtime.projector.reset()
        runtime.projector.rebuild(runtime.ledger.recorder)
        rebuilt = runtime.projector.table_rows()
    assert live == rebuilt, f"seed {seed}"
    assert runtime.projector.position() == head(runtime)


def test_the_gate_pauses_the_child_and_a_restarted_child_stays_paused(runtime: Runtime,
                                                                      worker: ProjectorWorker) -> None:
    rng = random.Random(7)
    users = provision(runtime, rng, 3)
    rate = rate_step(runtime.intake, runtime.ledger)
    runtime.intake.append(sessions(rng, users, 5, "a"))
    drain(rate)
    assert projected(runtime)
    with runtime.gate.exclusive():
        before = runtime.projector.position()
        runtime.intake.append(sessions(rng, users, 5, "b"))
        drain(rate)
        assert head(runtime) > before
        worker.wake()
        assert not runtime.projector.wait_for(head(runtime), timeout=1.5), "projected while paused"
        kill(worker)
        worker.wake()
        assert not runtime.projector.wait_for(head(runtime), timeout=1.5), "a restarted child projected while paused"
        assert runtime.projector.position() == before
    assert projected(runtime)
    assert worker.restarts and len(worker.restarts) == 1


def test_the_child_s_supervisor_thread_carries_its_name_in_the_kernel(worker: ProjectorWorker) -> None:
    """Its CPU (the child's messages) is told apart from the API's in `top -H` and the benches."""
    names = {Path(task, "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()}
    assert "wg-sv-projector" in names
