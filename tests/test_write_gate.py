"""The site's write gate: maintenance held exclusively waits for the steps in progress, runs
alone, and pauses stages of other processes (serve's projector child) for its duration, even
when the maintenance fails."""

from __future__ import annotations

import threading

import pytest

from adapters.site_gate import WriteGate


class RemoteStage:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def pause(self) -> None:
        self.log.append(f"pause {self.name}")

    def resume(self) -> None:
        self.log.append(f"resume {self.name}")


def test_exclusive_pauses_remote_stages_around_the_maintenance_even_when_it_fails() -> None:
    log: list[str] = []
    gate = WriteGate()
    gate.remote_followers += [RemoteStage(log, "a"), RemoteStage(log, "b")]
    with gate.exclusive():
        log.append("maintenance")
    assert log == ["pause a", "pause b", "maintenance", "resume a", "resume b"]
    log.clear()
    with pytest.raises(RuntimeError), gate.exclusive():
        log.append("maintenance")
        raise RuntimeError("set aside failed")
    assert log == ["pause a", "pause b", "maintenance", "resume a", "resume b"]
    assert gate.follower(lambda: 3)() == 3  # the gate is free again


def test_exclusive_waits_for_a_local_step_before_pausing_remote_ones() -> None:
    log: list[str] = []
    gate = WriteGate()
    gate.remote_followers.append(RemoteStage(log, "child"))
    in_step, release = threading.Event(), threading.Event()

    def step() -> int:
        in_step.set()
        release.wait(5)
        log.append("step done")
        return 1

    runner = threading.Thread(target=gate.follower(step))
    runner.start()
    assert in_step.wait(5)
    held = gate.exclusive()
    maintenance = threading.Thread(target=held.__enter__)
    maintenance.start()
    maintenance.join(0.3)
    assert log == []  # still waiting for the step
    release.set()
    runner.join(5)
    maintenance.join(5)
    assert log == ["step done", "pause child"]
    held.__exit__(None, None, None)
    assert log == ["step done", "pause child", "resume child"]
