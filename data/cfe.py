"""The Cboe Futures Exchange calendar of VX (VIX futures) contracts: expiries and front months.

A monthly VX contract settles on the Wednesday 30 days before the third Friday of the following
month (the standard SPX options expiry whose prices make the settlement VIX). Cboe's exceptions:
if that Friday is an exchange holiday, count the 30 days back from the business day before it;
if the Wednesday is a holiday, settlement moves to the business day before it. Holidays are the
US exchange rules of `mia.engine.holidays`.

Symbols follow the short futures form ``VX`` + month code + last digit of the year ("VXZ6");
`vx_symbols(day, n)` gives the front `n` contracts still trading on `day`.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Final

from mia.engine.holidays import is_exchange_business_day, nth_weekday, us_exchange_holidays

MONTH_CODES: Final = "FGHJKMNQUVXZ"  # January .. December
VX_ROOT: Final = "VX"


def exchange_holidays(year: int) -> frozenset[dt.date]:
    """US equity exchange (Cboe) full-day holidays of `year`, by rule."""
    return us_exchange_holidays(year)


def is_business_day(day: dt.date) -> bool:
    return is_exchange_business_day(day)


def _business_day_before(day: dt.date) -> dt.date:
    day -= dt.timedelta(days=1)
    while not is_business_day(day):
        day -= dt.timedelta(days=1)
    return day


@functools.lru_cache(maxsize=512)
def vx_expiry(year: int, month: int) -> dt.date:
    """The final settlement date of the monthly VX contract of (year, month)."""
    ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
    friday = nth_weekday(ny, nm, 4, 3)
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
