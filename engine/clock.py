"""Time, in one place: injected clocks, nanosecond constants, UTC days and date parsing.

Clocks are injected: sources stamp `ts_recv` from one, reducers never read one. Every timestamp
is integer nanoseconds since the Unix epoch, UTC; the day of a timestamp is computed with integer
arithmetic only (a float `ts / 1e9` loses the nanoseconds and can land on the wrong day).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Protocol

from .errors import UsageError

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
NS_PER_MIN = 60 * NS_PER_S
NS_PER_HOUR = 3_600 * NS_PER_S
NS_PER_DAY = 86_400 * NS_PER_S

UTC = dt.timezone.utc
_EPOCH_DATE = dt.date(1970, 1, 1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Clock(Protocol):
    def now_ns(self) -> int:
        """Nanoseconds since the Unix epoch, UTC."""
        ...


class SystemClock:
    """The wall clock, in integer nanoseconds."""

    def now_ns(self) -> int:
        return time.time_ns()


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, ns: int) -> None:
        self._now += ns

    def set(self, ns: int) -> None:
        self._now = ns


# --- days -------------------------------------------------------------------------------------


def utc_day(ts_ns: int) -> str:
    """The UTC date ("YYYY-MM-DD") of an int-ns timestamp, exactly."""
    return (_EPOCH_DATE + dt.timedelta(days=int(ts_ns) // NS_PER_DAY)).isoformat()


def day_bounds(date: str | dt.date) -> tuple[int, int]:
    """[start, end) of a UTC day in ns."""
    d = dt.date.fromisoformat(parse_date(date))
    lo = (d - _EPOCH_DATE).days * NS_PER_DAY
    return lo, lo + NS_PER_DAY


def utc_datetime(ts_ns: int) -> dt.datetime:
    """An aware UTC datetime of an int-ns timestamp (microseconds: what datetime holds)."""
    return _EPOCH + dt.timedelta(microseconds=int(ts_ns) // NS_PER_US)


def previous_day(date: str) -> str:
    return (dt.date.fromisoformat(date) - dt.timedelta(days=1)).isoformat()


def parse_date(date: str | dt.date) -> str:
    """A date as "YYYY-MM-DD": the one spelling every command and API accepts.

    Accepts a `date`, an aware `datetime` (its UTC date) or the string "YYYY-MM-DD"; anything
    else ("20261120", "2026-02-30") is a UsageError naming the value.
    """
    if isinstance(date, dt.datetime):
        date = date.astimezone(UTC).date() if date.tzinfo else date.date()
    if isinstance(date, dt.date):
        return date.isoformat()
    if not isinstance(date, str) or not _DATE_RE.match(date):
        raise UsageError(f"bad date {date!r}: expected YYYY-MM-DD")
    try:
        dt.date.fromisoformat(date)
    except ValueError:
        raise UsageError(f"bad date {date!r}: not a calendar date") from None
    return date


def to_ns(t: int | dt.datetime | None, what: str = "time") -> int | None:
    """int ns or an aware datetime -> int ns (None stays None); anything else is a UsageError."""
    if t is None:
        return None
    if isinstance(t, dt.datetime):
        if t.tzinfo is None:
            raise UsageError(f"{what} must be an aware datetime (UTC), got naive {t}")
        return (t - _EPOCH) // dt.timedelta(microseconds=1) * NS_PER_US
    if isinstance(t, int) and not isinstance(t, bool):
        return int(t)
    if hasattr(t, "dtype") and getattr(t.dtype, "kind", "") in "iu":  # a numpy integer
        return int(t)
    raise UsageError(f"{what} must be int ns or an aware datetime, got {t!r}")


def time_of_day_ns(date: str, hhmm: str | None) -> int | None:
    """"HH:MM" (or "HH:MM:SS", UTC) on `date` -> int ns; None stays None."""
    if hhmm is None:
        return None
    try:
        t = dt.time.fromisoformat(hhmm)
    except ValueError:
        raise UsageError(f"bad time {hhmm!r}: expected HH:MM (UTC)") from None
    lo, _ = day_bounds(date)
    return lo + (t.hour * 3600 + t.minute * 60 + t.second) * NS_PER_S + t.microsecond * NS_PER_US


def window_ns(date: str, start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """--from/--to as HH:MM (UTC, on `date`) -> ns bounds of [start, end)."""
    lo, hi = time_of_day_ns(date, start), time_of_day_ns(date, end)
    if lo is not None and hi is not None and hi <= lo:
        raise UsageError(f"empty window: --from {start} is not before --to {end}")
    return lo, hi
