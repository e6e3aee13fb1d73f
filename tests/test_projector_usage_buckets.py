"""The sessions model's usage buckets: a delta within one hour goes to its hour and day buckets
unsplit (the live projector's fast path), and every delta lands in the buckets the reference
split (rating.split_by_hour, what the rebuild's fold uses) gives, to the byte."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from projections.sessions import DAY, _SessionBatch
from rating import UsageDelta, split_by_hour

HOUR = 3600
BASE = 1_767_225_600  # 2026-01-01T00:00:00Z


def reference(account: str, band: str, delta: UsageDelta) -> dict[tuple[str, str, int, str], list[int]]:
    """Buckets as the model filled them before the fast path: every part of split_by_hour."""
    buckets: dict[tuple[str, str, int, str], list[int]] = {}
    if delta.total_bytes == 0:
        return buckets
    for part in split_by_hour(delta):
        hour = part.start - part.start % HOUR
        for key in ((account, "hour", hour, band), (account, "day", hour - hour % DAY, band)):
            totals = buckets.setdefault(key, [0, 0])
            totals[0] += part.upload_bytes
            totals[1] += part.download_bytes
    return buckets


deltas = st.lists(st.tuples(
    st.integers(0, 3 * DAY),  # start offset
    st.one_of(st.integers(-10, 3 * HOUR), st.sampled_from([0, 1, HOUR - 1, HOUR, HOUR + 1])),  # length
    st.integers(0, 2**64), st.integers(0, 2**64), st.sampled_from(["peak", "offpeak"])), min_size=1, max_size=20)


@settings(max_examples=100, deadline=None)
@given(deltas)
@example([(HOUR - 10, 10, 7, 9, "peak")])  # ends exactly on the hour: one bucket
@example([(HOUR - 10, 11, 7, 9, "peak")])  # one second past it: split in two
@example([(DAY - 1, 2, 2**64, 1, "peak")])  # across midnight: two days
@example([(5, -5, 3, 4, "offpeak")])  # an empty or reversed interval stays in its hour
def test_usage_buckets_equal_the_reference_split(cases: list[tuple[int, int, int, int, str]]) -> None:
    batch = _SessionBatch(conn=None)
    expected: dict[tuple[str, str, int, str], list[int]] = {}
    for offset, length, up, down, band in cases:
        start = BASE + offset
        batch._usage("acct", band, start, start + length, up, down)
        for key, (u, d) in reference("acct", band, UsageDelta(start, start + length, up, down)).items():
            totals = expected.setdefault(key, [0, 0])
            totals[0] += u
            totals[1] += d
    assert batch.usage_delta == expected
