"""Stages retry passing faults but stop on a violated ledger invariant (never continue)."""

from __future__ import annotations

import os
import threading
import time

from adapters.followers import Stage
from ledger.journal import Posting, UnbalancedTransaction, balanced


def test_a_passing_fault_is_retried_until_it_clears() -> None:
    calls = {"n": 0}
    done = threading.Event()

    def step() -> int:
        calls["n"] += 1
        if calls["n"] < 3:
            raise OSError("database is locked")
        done.set()
        return 0

    stage = Stage("flaky", step, poll_interval=0.01)
    stage.start()
    try:
        assert done.wait(5)
        assert stage.fatal is None and stage.is_alive()
    finally:
        stage.stop()
        stage.join(5)


def test_an_unbalanced_transaction_stops_the_stage_and_says_so() -> None:
    stopped: list[str] = []
    applied: list[int] = []

    def step() -> int:
        balanced([Posting("receivable:a", 10, "USD"), Posting("revenue:usage", -9, "USD")])  # type: ignore[arg-type]
        applied.append(1)  # never reached: nothing after the broken transaction happens
        return 1

    stage = Stage("rater", step, poll_interval=0.01)
    stage.on_fatal = lambda s: stopped.append(s.name)
    stage.start()
    stage.join(5)
    assert not stage.is_alive()
    assert isinstance(stage.fatal, UnbalancedTransaction)
    assert stopped == ["rater"] and applied == []


def test_a_nice_stage_yields_the_cores_to_the_acks_but_only_its_own_thread() -> None:
    """`serve` lowers its stages' priority (stage_nice) so that acknowledging BNGs comes first
    when the cores are saturated; the process's other threads (the API) keep theirs."""
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def step() -> int:
        seen.append((os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
                     os.getpriority(os.PRIO_PROCESS, main_thread)))
        done.set()
        return 0

    main_thread = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, main_thread)
    stage = Stage("rater", step, poll_interval=0.01, nice=7)
    stage.start()
    try:
        assert done.wait(5)
    finally:
        stage.stop()
        stage.join(5)
    assert seen[0] == (min(before + 7, 19), before)



def _count_steps(step_size: int, *, gather: float, full: int, seconds: float = 0.6) -> int:
    """Steps a stage takes in ``seconds`` while woken every millisecond (an upstream that
    commits that often), each step handling ``step_size`` items."""
    steps: list[int] = []

    def step() -> int:
        steps.append(step_size)
        return step_size

    stage = Stage("rater", step, poll_interval=0.01, gather=gather, full=full)
    stage.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and len(steps) < 10_000:
            stage.wakeup.set()
            time.sleep(0.001)
    finally:
        stage.stop()
        stage.join(5)
    return len(steps)


def test_a_gathering_stage_takes_small_batches_at_most_once_per_interval() -> None:
    """Woken by every upstream commit, a stage with ``gather`` waits that long after a small
    batch before the next (one commit shares its fixed cost with more records), but works off
    full batches back to back."""
    assert 1 <= _count_steps(5, gather=0.2, full=100) <= 4  # 0.6 s / 0.2 s; load only lengthens sleeps
    assert _count_steps(100, gather=0.2, full=100) > 20  # a backlog (full batches): no pause
    assert _count_steps(5, gather=0.0, full=100) > 20  # without gathering every wake is a step
