"""The billing calendar: monthly periods from an account's anchor day, and local hours for
time-of-day bands. Pure functions of their arguments (time is passed in, never read)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_ANCHOR_DAY = 28  # every month has it: no "31st of February" periods


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _month_start(year: int, month: int, day: int, tz: ZoneInfo) -> int:
    return int(datetime(year, month, day, tzinfo=tz).timestamp())


def billing_period(at: int, anchor_day: int = 1, timezone: str = "UTC") -> tuple[int, int]:
    """The [start, end) epoch seconds of the monthly period containing ``at``: from local
    midnight of ``anchor_day`` to the same day next month."""
    if not 1 <= anchor_day <= MAX_ANCHOR_DAY:
        raise ValueError(f"anchor day is 1..{MAX_ANCHOR_DAY}")
    tz = zone(timezone)
    local = datetime.fromtimestamp(at, tz)
    year, month = local.year, local.month
    if local.day < anchor_day:
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    start = _month_start(year, month, anchor_day, tz)
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    return start, _month_start(next_year, next_month, anchor_day, tz)


def period_label(start: int, timezone: str = "UTC") -> str:
    """YYYY-MM of the local date a period starts on."""
    return datetime.fromtimestamp(start, zone(timezone)).strftime("%Y-%m")


def period_for_label(label: str, anchor_day: int = 1, timezone: str = "UTC") -> tuple[int, int]:
    """The period that starts in month ``label`` (YYYY-MM)."""
    try:
        year, month = (int(part) for part in label.split("-"))
        start = _month_start(year, month, anchor_day, zone(timezone))
    except ValueError:
        raise ValueError(f"a period is YYYY-MM, got {label!r}") from None
    return billing_period(start, anchor_day, timezone)


def previous_label(label: str, months: int = 1) -> str:
    """The period label ``months`` before ``label`` (YYYY-MM)."""
    try:
        year, month = (int(part) for part in label.split("-"))
    except ValueError:
        raise ValueError(f"a period is YYYY-MM, got {label!r}") from None
    index = year * 12 + (month - 1) - months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def hour_boundaries(start: int, end: int, timezone: str = "UTC") -> list[tuple[int, int, int, int]]:
    """Split [start, end) at local hour boundaries: (from, to, weekday, local hour) pieces."""
    tz = zone(timezone)
    pieces = []
    cursor = start
    while cursor < end:
        local = datetime.fromtimestamp(cursor, tz)
        top = local.replace(minute=0, second=0, microsecond=0)
        next_hour = int((top.astimezone(UTC) + timedelta(hours=1)).timestamp())
        stop = min(end, next_hour)
        pieces.append((cursor, stop, local.weekday(), local.hour))
        cursor = stop
    return pieces


def days_in(start: int, end: int, timezone: str = "UTC") -> int:
    """Whole local days in [start, end) (periods begin and end at local midnight)."""
    tz = zone(timezone)
    first = datetime.fromtimestamp(start, tz).date()
    last = datetime.fromtimestamp(end, tz).date()
    return (last - first).days
