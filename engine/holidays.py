"""US exchange holidays by rule: the one calendar the CME trade date (analytics) and the Cboe VX
expiries (data) both stand on.

Full-day holidays: New Year's Day, Martin Luther King Jr. Day, Presidents' Day, Good Friday,
Memorial Day, Juneteenth (from 2022), Independence Day, Labor Day, Thanksgiving and Christmas.
A holiday on a Sunday is observed on the Monday after, one on a Saturday on the Friday before,
except New Year's Day (a Saturday New Year's Day is not observed on the Friday before: NYSE's
rule). Unscheduled closures (national days of mourning) are not rules: callers take them as
extra holidays.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache


def nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The n-th (1-based; -1: the last) `weekday` (Monday 0) of a month."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def easter(year: int) -> dt.date:
    """Gregorian Easter Sunday (the anonymous Gregorian computus)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    wd = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * wd) // 451
    month, day = divmod(h + wd - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


def _observed(day: dt.date, *, saturday_to_friday: bool = True) -> dt.date | None:
    if day.weekday() == 6:
        return day + dt.timedelta(days=1)
    if day.weekday() == 5:
        return day - dt.timedelta(days=1) if saturday_to_friday else None
    return day


@lru_cache(maxsize=256)
def us_exchange_holidays(year: int) -> frozenset[dt.date]:
    """The full-day US exchange holidays of `year`, by rule (see the module docstring)."""
    days = [
        _observed(dt.date(year, 1, 1), saturday_to_friday=False),
        nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        nth_weekday(year, 2, 0, 3),  # Presidents' Day
        easter(year) - dt.timedelta(days=2),  # Good Friday
        nth_weekday(year, 5, 0, -1),  # Memorial Day
        _observed(dt.date(year, 7, 4)),
        nth_weekday(year, 9, 0, 1),  # Labor Day
        nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(dt.date(year, 12, 25)),
    ]
    if year >= 2022:
        days.append(_observed(dt.date(year, 6, 19)))
    return frozenset(d for d in days if d is not None)


def is_exchange_business_day(day: dt.date, extra_holidays=()) -> bool:
    """A weekday that is no US exchange holiday (nor one of `extra_holidays`)."""
    return day.weekday() < 5 and day not in us_exchange_holidays(day.year) \
        and day not in extra_holidays
