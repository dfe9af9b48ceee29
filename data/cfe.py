"""The Cboe Futures Exchange calendar of VX (VIX futures) contracts: expiries and front months.

A monthly VX contract settles on the Wednesday 30 days before the third Friday of the following
month (the standard SPX options expiry whose prices make the settlement VIX). Cboe's exceptions:
if that Friday is an exchange holiday, count the 30 days back from the business day before it;
if the Wednesday is a holiday, settlement moves to the business day before it. Holidays are the
US equity exchange rules (New Year's Day, Martin Luther King Jr. Day, Presidents' Day, Good
Friday, Memorial Day, Juneteenth from 2022, Independence Day, Labor Day, Thanksgiving,
Christmas), observed on Monday when on a Sunday and on Friday when on a Saturday (except New
Year's Day: a Saturday New Year's Day is not observed on the Friday before). Unscheduled
closures are not in the rules.

Symbols follow the short futures form ``VX`` + month code + last digit of the year ("VXZ6");
`vx_symbols(day, n)` gives the front `n` contracts still trading on `day`.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Final

MONTH_CODES: Final = "FGHJKMNQUVXZ"  # January .. December
VX_ROOT: Final = "VX"


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The n-th (1-based; -1: last) `weekday` (Monday 0) of a month."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _easter(year: int) -> dt.date:
    """Gregorian Easter Sunday (the anonymous Gregorian computus)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    j = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 19 * j) // 433
    month = (h + j - 7 * m + 90) // 25
    day = (h + j - 7 * m + 33 * month + 19) % 32
    return dt.date(year, month, day)


def _observed(day: dt.date) -> dt.date:
    if day.weekday() == 6:
        return day + dt.timedelta(days=1)
    if day.weekday() == 5:
        return day - dt.timedelta(days=1)
    return day


@functools.lru_cache(maxsize=64)
def exchange_holidays(year: int) -> frozenset[dt.date]:
    """US equity exchange (Cboe) full-day holidays of `year`, by rule."""
    days = {
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Presidents' Day
        _easter(year) - dt.timedelta(days=2),  # Good Friday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _observed(dt.date(year, 7, 4)),
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(dt.date(year, 12, 25)),
    }
    new_year = dt.date(year, 1, 1)
    if new_year.weekday() != 5:
        days.add(_observed(new_year))
    if year >= 2022:
        days.add(_observed(dt.date(year, 6, 19)))
    return frozenset(days)


def is_business_day(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in exchange_holidays(day.year)


def _business_day_before(day: dt.date) -> dt.date:
    day -= dt.timedelta(days=1)
    while not is_business_day(day):
        day -= dt.timedelta(days=1)
    return day


@functools.lru_cache(maxsize=512)
def vx_expiry(year: int, month: int) -> dt.date:
    """The final settlement date of the monthly VX contract of (year, month)."""
    ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
    friday = _nth_weekday(ny, nm, 4, 3)
    if not is_business_day(friday):
        friday = _business_day_before(friday)
    wednesday = friday - dt.timedelta(days=30)
    if not is_business_day(wednesday):
        wednesday = _business_day_before(wednesday)
    return wednesday


def vx_symbol(year: int, month: int, root: str = VX_ROOT) -> str:
    """ "VX" + month code + last digit of the year: (2026, 12) -> "VXZ6"."""
    return f"{root}{MONTH_CODES[month - 1]}{year % 10}"


def vx_front_months(day: dt.date, n: int) -> list[tuple[int, int, dt.date]]:
    """(year, month, expiry) of the front `n` monthly contracts trading on `day`.

    A contract counts until its expiry date: on the expiry date itself (trading ends that
    morning) the front month is the next one.
    """
    out: list[tuple[int, int, dt.date]] = []
    year, month = day.year, day.month
    if vx_expiry(year, month) <= day:  # this month's contract has gone
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    # a month's contract can expire in the month itself or (rarely) be gone already: walk on
    while len(out) < max(0, n):
        expiry = vx_expiry(year, month)
        if expiry > day:
            out.append((year, month, expiry))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def vx_symbols(day: dt.date, n: int, root: str = VX_ROOT) -> list[str]:
    """The symbols of the front `n` VX contracts trading on `day`: ["VXZ6", "VXF7", ...]."""
    return [vx_symbol(y, m, root) for y, m, _ in vx_front_months(day, n)]
