"""A stage child is woken by its parent only while its stage may be asleep (SleepFlag): no
work committed upstream is left waiting for the poll, and no wake-up is sent while the stage
is gathering or busy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from adapters.child_process import PausableChild, SleepFlag
from adapters.followers import Stage


def _memfd() -> bool:
    made = SleepFlag.new()
    if made is not None:
        os.close(made[1])
    return made is not None


pytestmark = pytest.mark.skipif(not _memfd(), reason="no memfd on this platform")

NEVER = 60.0  # a poll interval no test waits for: only a wake-up gets the stage going


class _Upstream:
    """Work committed by another process: each commit then wakes the stage the way serve's
    parent does, only while the stage's flag is up."""

    def __init__(self, stage_flag: SleepFlag, wakeup: threading.Event) -> None:
        self.items = 0
        self.flag = stage_flag
        self.wakeup = wakeup
        self.woken = 0

    def commit(self) -> None:
        self.items += 1
        if self.flag.is_set():
            self.woken += 1
            self.wakeup.set()


def _flag() -> SleepFlag:
    made = SleepFlag.new()
    assert made is not None
    os.close(made[1])  # no child to hand it to: the mapping stays
    return made[0]


def test_work_committed_just_after_a_step_found_none_is_not_left_for_the_poll() -> None:
    """The worst moment: the stage has just looked and found nothing, its flag still down, and
    a commit lands that the parent does not wake it for. The look it takes after raising the
    flag finds that commit; the stage does not sleep until the poll."""
    flag = _flag()
    flag.clear()  # busy: it has just worked
    consumed: list[int] = []
    done = threading.Event()
    stage: Stage

    def step() -> int:
        new = upstream.items - len(consumed)
        if new == 0 and not flag.is_set() and upstream.items < 20:
            upstream.commit()  # lands right after this look; the flag is down: no wake-up
            return 0
        consumed.extend(range(new))
        if upstream.items == 20 and len(consumed) == 20:
            done.set()
        return new

    stage = Stage("sleepy", step, poll_interval=NEVER, sleeping=flag)
    upstream = _Upstream(flag, stage.wakeup)
    stage.start()
    try:
        assert done.wait(10), f"{len(consumed)} of {upstream.items} items consumed: the stage slept on work"
    finally:
        stage.stop()
        stage.join(5)
    assert upstream.woken == 0  # each was found by the stage's own look, none needed a wake-up


def test_a_sleeping_stage_is_woken_and_a_busy_one_is_not() -> None:
    """Commits while the stage sleeps wake it (each is then handled); commits while it works
    send nothing; once it has caught up its flag is up again."""
    flag = _flag()
    handled: list[int] = []
    stepping = threading.Event()
    release = threading.Event()
    asleep = threading.Event()

    def step() -> int:
        new = upstream.items - sum(handled)
        if new:
            handled.append(new)
            stepping.set()
            release.wait(10)  # a long batch: commits arrive meanwhile
            release.clear()
            return new
        if flag.is_set():
            asleep.set()
        return 0

    stage = Stage("sleepy", step, poll_interval=NEVER, sleeping=flag)
    upstream = _Upstream(flag, stage.wakeup)
    stage.start()
    try:
        assert asleep.wait(10) and flag.is_set()
        upstream.commit()  # asleep: woken
        assert stepping.wait(10)
        assert not flag.is_set()  # working: the next commits send nothing
        upstream.commit()
        upstream.commit()
        assert upstream.woken == 1
        asleep.clear()
        stepping.clear()
        release.set()
        assert stepping.wait(10)  # the two found by its next look, unwoken
        release.set()
        assert asleep.wait(10) and flag.is_set()
    finally:
        stage.stop()
        release.set()
        stage.join(5)
    assert handled == [1, 2] and upstream.woken == 1


class _Child(PausableChild):
    module = "adapters.rater_worker"
    title = "a test child"

    def __init__(self) -> None:
        super().__init__(None, on_fatal=print, on_failed=print, configure_logging=lambda *_: None)
        self.sent: list[tuple[Any, ...]] = []

    def _send(self, message: tuple[Any, ...]) -> bool:
        self.sent.append(message)
        return True


def test_the_parent_sends_a_wake_up_only_while_the_child_may_sleep() -> None:
    child = _Child()
    child.wake()  # no flag (no child yet, or no memfd): always sent, as before
    child._sleeping = flag = _flag()
    child.wake()  # up
    flag.clear()
    child.wake()  # down: the child looks again by itself
    child.wake()
    flag.set()
    child.wake()
    assert child.sent == [("wake",)] * 3


def test_the_child_sees_the_flag_the_parent_maps() -> None:
    """Another process maps the descriptor it inherits (as a stage child does from argv) and
    both see each other's changes."""
    made = SleepFlag.new()
    assert made is not None
    flag, fd = made
    flag.clear()
    code = ("import sys; from adapters.child_process import SleepFlag; "
            "f = SleepFlag.inherited(['0', '0', sys.argv[1]]); assert not f.is_set(); f.set()")
    subprocess.run([sys.executable, "-c", code, str(fd)], pass_fds=(fd,), check=True, timeout=60)
    assert flag.is_set()


def test_without_a_memfd_the_child_is_woken_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform or sandbox that refuses memfd_create: no flag (the parent then sends every
    wake-up, as before the flag), and a descriptor the child cannot map gives no flag either."""

    def refused(*_: Any) -> int:
        raise OSError(38, "Function not implemented")

    made = SleepFlag.new()
    assert made is not None
    os.close(made[1])
    monkeypatch.setattr(os, "memfd_create", refused)
    assert SleepFlag.new() is None
    read, write = os.pipe()  # a descriptor mmap refuses
    os.close(write)
    assert SleepFlag.inherited(["0", "0", str(read)]) is None
    child = _Child()
    child.wake()
    child.wake()
    assert child.sent == [("wake",)] * 2
