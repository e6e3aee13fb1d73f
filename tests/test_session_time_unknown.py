"""Interim-Updates and Stops without Acct-Session-Time (RFC 2866 defines it for Stop only; some
NAS leave it out of Interim-Updates), on the Session aggregate alone: in whatever order a
session's records arrive, and however often, its cumulative counters are counted once."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.accounting import AccountingRecord, StatusType
from ledger.session import Session

T0 = 1_800_000_000


def report(status: StatusType, at: int, up: int, down: int) -> AccountingRecord:
    return AccountingRecord(nas_id="nas-a", status=status, event_time=at, received_at=at, event_timestamp_sent=True,
                            acct_session_id="s1", username="alice", session_time=0,
                            input_octets=up, output_octets=down)


def one_session(start: int, steps: list[tuple[int, int, int]], stop: bool) -> tuple[list[AccountingRecord], int]:
    """Start, then a report per step (seconds later, bytes up, bytes down), the last a Stop
    when ``stop``; none carries Acct-Session-Time. Returns them and the session's bytes."""
    records = [report(StatusType.START, start, 0, 0)]
    at, up, down = start, 0, 0
    for i, (dt, more_up, more_down) in enumerate(steps):
        at, up, down = at + dt, up + more_up, down + more_down
        last = stop and i == len(steps) - 1
        records.append(report(StatusType.STOP if last else StatusType.INTERIM, at, up, down))
    return records, up + down


def counted(session: Session, records: list[AccountingRecord]) -> int:
    total = 0
    for record in records:
        usage = session.apply_record(record, None)
        if usage is not None:
            total += usage.upload_bytes + usage.download_bytes
    return total


step = st.tuples(st.integers(1, 7_200), st.integers(0, 1 << 36), st.integers(0, 1 << 38))


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=6), stop=st.booleans(), seed=st.integers(0, 2**32 - 1),
       again=st.lists(st.integers(0, 10), max_size=4))
def test_one_session_in_any_order_counts_its_counters_once(steps: list[tuple[int, int, int]], stop: bool,
                                                           seed: int, again: list[int]) -> None:
    records, total = one_session(T0, steps, stop)
    arrival = records[:]
    random.Random(seed).shuffle(arrival)
    arrival += [records[i % len(records)] for i in again]  # retransmissions
    session = Session(nas_id="nas-a", acct_session_id="s1")
    assert counted(session, arrival) == total


@settings(max_examples=200, deadline=None)
@given(first=st.lists(step, min_size=1, max_size=4), second=st.lists(step, min_size=1, max_size=4),
       gap=st.integers(300, 86_400), seeds=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
       second_start=st.booleans())
def test_the_id_used_again_after_a_stop_is_another_session(first: list[tuple[int, int, int]],
                                                          second: list[tuple[int, int, int]], gap: int,
                                                          seeds: tuple[int, int], second_start: bool) -> None:
    """The first session's records (any order) end with its Stop; the NAS then uses the id
    again, minutes or hours later (its Start lost or not): the second session is counted from
    zero, once. (Starts closer than START_TOLERANCE are one incarnation, with or without the
    attribute.)"""
    records_1, total_1 = one_session(T0, first, stop=True)
    end_1 = records_1[-1].event_time
    records_2, total_2 = one_session(end_1 + gap, second, stop=False)
    if not second_start:
        records_2 = records_2[1:]
    random.Random(seeds[0]).shuffle(records_1)
    random.Random(seeds[1]).shuffle(records_2)
    session = Session(nas_id="nas-a", acct_session_id="s1")
    assert counted(session, records_1) == total_1
    assert counted(session, records_2) == total_2
