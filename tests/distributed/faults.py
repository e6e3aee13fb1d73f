"""Load and faults for the distributed tests: the seeded BNG load (bench.loadgen) running
while a chaos thread kills and restarts roles at seeded random moments."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.loadgen import LoadResult, run_load
from bench.workload import Session

from .cluster import Cluster


@dataclass
class AckLog:
    """Monotonic times of acknowledgements, to check when the adapter answered."""

    times: list[float] = field(default_factory=list)

    def __call__(self, _packet: object, at: float) -> None:
        self.times.append(at)

    def between(self, start: float, end: float) -> int:
        return sum(1 for t in self.times if start <= t <= end)


def drive(cluster: Cluster, secret: str, sessions: list[Session], *, rate: float,
          chaos: Callable[[threading.Event], None] | None = None, acks: AckLog | None = None) -> LoadResult:
    """Send every packet (retransmitting for up to two minutes, as a patient BNG would)
    while ``chaos`` runs in a thread; returns when the load is done and chaos has stopped."""
    done = threading.Event()
    thread = None
    errors: list[BaseException] = []
    if chaos is not None:
        def guarded() -> None:
            try:
                chaos(done)
            except BaseException as error:  # reported after the load
                errors.append(error)
        thread = threading.Thread(target=guarded, name="chaos", daemon=True)
        thread.start()
    try:
        return asyncio.run(run_load("127.0.0.1", cluster.radius_port, secret, sessions, inflight=32,
                                    timeout=0.5, retries=240, rate=rate, on_ack=acks))
    finally:
        done.set()
        if thread is not None:
            thread.join(timeout=120)
        if errors:
            raise errors[0]


def kill_and_restart(cluster: Cluster, seed: int, roles: list[str], kills: int,
                     pause: tuple[float, float] = (0.7, 2.0)) -> Callable[[threading.Event], None]:
    """Chaos: ``kills`` times, after a seeded pause, SIGKILL a role and restart it (every
    role at least once, in a seeded order)."""
    rng = random.Random(seed)
    victims = roles + [rng.choice(roles) for _ in range(kills - len(roles))]
    rng.shuffle(victims)
    plan = [(rng.uniform(*pause), role, rng.uniform(0.1, 1.0)) for role in victims]

    def chaos(done: threading.Event) -> None:
        for wait, role, down in plan:
            if done.wait(wait):
                return
            print(f"{time.strftime('%X')} chaos: SIGKILL {role}, restart after {down:.2f} s", flush=True)
            cluster.kill(role)
            time.sleep(down)
            cluster.start(role)

    return chaos
